package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/internal/testnet"
)

// How long connecting takes with dial.Dial's default QUIC/TCP race
// (docs/spec/identity.md §2, client side): with UDP reachable QUIC wins
// and should cost what bare quic-go does; with UDP dropped TCP+TLS wins
// after dial.TCPHeadStart, against a bare crypto/tls dial to the same
// port.
var dialRows = []benchmark{
	{
		Name: "dial-to-first-byte", Area: "endpoint", Unit: "ms", Goal: 0.8,
		Description: "sequential: dial (default race, UDP reachable), open a stream, 1-byte echo back",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: "alknet endpoint + dial.Dial race (pinned)", Start: func(ctx context.Context, e *env) (*instance, error) {
			ep, err := startAlknet(e)
			if err != nil {
				return nil, err
			}
			return firstByte(e, 20, alknetOpener(ep.UDPAddr().String(), e.fingerprint, false), ep.Shutdown), nil
		}},
		Anchor: variant{Label: "bare quic-go Listen + DialAddr", Start: func(ctx context.Context, e *env) (*instance, error) {
			srv, err := startQUICEcho(e.serverTLS())
			if err != nil {
				return nil, err
			}
			return firstByte(e, 20, quicOpener(srv.addr(), e.clientTLS()), srv.stop), nil
		}},
	},
	{
		Name: "dial-to-first-byte-udp-dropped", Area: "endpoint", Unit: "ms",
		// The race gives QUIC its head start, then TCP+TLS wins: the
		// figure must stay near the head start, whatever the ratio.
		Max:         float64((dial.TCPHeadStart + 100*time.Millisecond) / time.Millisecond),
		Description: "as dial-to-first-byte with the node's UDP port silent (dropped): TCP+TLS wins the race after its head start",
		Rounds:      3, ShortRounds: 2,
		Subject: variant{Label: "alknet endpoint + dial.Dial race (pinned), UDP dropped", Start: func(ctx context.Context, e *env) (*instance, error) {
			ep, err := startAlknet(e)
			if err != nil {
				return nil, err
			}
			front, stopFront, err := testnet.UDPDropped(ep.TCPAddr().String())
			if err != nil {
				ep.Shutdown()
				return nil, err
			}
			return firstByte(e, 4, alknetOpener(front, e.fingerprint, false), func() { stopFront(); ep.Shutdown() }), nil
		}},
		Anchor: variant{Label: "bare crypto/tls Listen + Dial, same UDP-dropped port", Start: func(ctx context.Context, e *env) (*instance, error) {
			srv, err := startTLSEcho(e.serverTLS())
			if err != nil {
				return nil, err
			}
			front, stopFront, err := testnet.UDPDropped(srv.addr())
			if err != nil {
				srv.stop()
				return nil, err
			}
			return firstByte(e, 4, tlsOpener(front, e.clientTLS()), func() { stopFront(); srv.stop() }), nil
		}},
	},
}

// firstByte measures n sequential dials per round, each to the first byte
// of a 1-byte echo, and reports their mean in milliseconds.
func firstByte(e *env, n int, open opener, stop func()) *instance {
	one := func(ctx context.Context) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		start := time.Now()
		c, err := open(ctx)
		if err != nil {
			return 0, err
		}
		defer c.close()
		stopAbort := context.AfterFunc(ctx, c.abort)
		defer stopAbort()
		if _, err := c.s.Write([]byte{42}); err != nil {
			return 0, fmt.Errorf("write: %w", err)
		}
		var b [1]byte
		if _, err := io.ReadFull(c.s, b[:]); err != nil || b[0] != 42 {
			return 0, fmt.Errorf("read the echo: %v (got %d)", err, b[0])
		}
		took := time.Since(start)
		_ = c.s.CloseWrite()
		return took, nil
	}
	run := func(ctx context.Context, n int) (float64, error) {
		var total time.Duration
		for range n {
			d, err := one(ctx)
			if err != nil {
				return 0, err
			}
			total += d
		}
		return float64(total) / float64(n) / float64(time.Millisecond), nil
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := run(ctx, 2); return err },
		Measure: func(ctx context.Context) (float64, error) { return run(ctx, n) },
		Stop:    stop,
	}
}
