package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
)

// The node's front door: the endpoint with its built-in echo handler
// and the dial package, against bare quic-go and bare crypto/tls.
var m2 = []benchmark{
	{
		Name: "echo-quic", Area: "endpoint", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.95,
		Description: "one QUIC stream, 64 KiB writes then half-close, echoed back and read to EOF (pipe-like client)",
		Rounds:      5, ShortRounds: 5,
		Subject: variant{Label: "alknet endpoint + dial.Dial (pinned)", Start: func(ctx context.Context, e *env) (*instance, error) {
			ep, err := startAlknet(e)
			if err != nil {
				return nil, err
			}
			return throughput(e, alknetOpener(ep.UDPAddr().String(), e.fingerprint, false), ep.Shutdown), nil
		}},
		Anchor: variant{Label: "bare quic-go Listen + DialAddr", Start: func(ctx context.Context, e *env) (*instance, error) {
			srv, err := startQUICEcho(e.serverTLS())
			if err != nil {
				return nil, err
			}
			return throughput(e, quicOpener(srv.addr(), e.clientTLS()), srv.stop), nil
		}},
	},
	{
		Name: "handshake-quic", Area: "endpoint", Unit: "conn/s", HigherIsBetter: true, Goal: 0.9,
		Description: "sequential: full QUIC handshake, open a stream, 1-byte echo, close",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: "alknet endpoint + dial.Dial (pinned)", Start: func(ctx context.Context, e *env) (*instance, error) {
			ep, err := startAlknet(e)
			if err != nil {
				return nil, err
			}
			return handshakes(e, 1, alknetOpener(ep.UDPAddr().String(), e.fingerprint, false), ep.Shutdown), nil
		}},
		Anchor: variant{Label: "bare quic-go Listen + DialAddr", Start: func(ctx context.Context, e *env) (*instance, error) {
			srv, err := startQUICEcho(e.serverTLS())
			if err != nil {
				return nil, err
			}
			return handshakes(e, 1, quicOpener(srv.addr(), e.clientTLS()), srv.stop), nil
		}},
	},
	{
		Name: "handshake-quic-c4", Area: "endpoint", Unit: "conn/s", HigherIsBetter: true, Goal: 0.9,
		Description: "as handshake-quic with 4 concurrent clients",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: "alknet endpoint + dial.Dial (pinned)", Start: func(ctx context.Context, e *env) (*instance, error) {
			ep, err := startAlknet(e)
			if err != nil {
				return nil, err
			}
			return handshakes(e, 4, alknetOpener(ep.UDPAddr().String(), e.fingerprint, false), ep.Shutdown), nil
		}},
		Anchor: variant{Label: "bare quic-go Listen + DialAddr", Start: func(ctx context.Context, e *env) (*instance, error) {
			srv, err := startQUICEcho(e.serverTLS())
			if err != nil {
				return nil, err
			}
			return handshakes(e, 4, quicOpener(srv.addr(), e.clientTLS()), srv.stop), nil
		}},
	},
	{
		Name: "echo-tcptls", Area: "endpoint", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.95, Informational: true,
		Description: "as echo-quic over TCP+TLS 1.3 (dial.Options{TCP: true} to the endpoint's TCP port)",
		Rounds:      5, ShortRounds: 5,
		Subject: variant{Label: "alknet endpoint + dial.Dial TCP (pinned)", Start: func(ctx context.Context, e *env) (*instance, error) {
			ep, err := startAlknet(e)
			if err != nil {
				return nil, err
			}
			return throughput(e, alknetOpener(ep.TCPAddr().String(), e.fingerprint, true), ep.Shutdown), nil
		}},
		Anchor: variant{Label: "bare crypto/tls Listen + Dial", Start: func(ctx context.Context, e *env) (*instance, error) {
			srv, err := startTLSEcho(e.serverTLS())
			if err != nil {
				return nil, err
			}
			return throughput(e, tlsOpener(srv.addr(), e.clientTLS()), srv.stop), nil
		}},
	},
}

// Sizes and durations of one round.
func (e *env) echoBytes() int64 {
	if e.short {
		return 16 << 20
	}
	return 64 << 20
}

func (e *env) warmupBytes() int64 { return 8 << 20 }

func (e *env) handshakeRound() time.Duration {
	if e.short {
		return 300 * time.Millisecond
	}
	return 600 * time.Millisecond // × 5 rounds: 3 s per variant
}

// startAlknet starts an endpoint on loopback serving the built-in echo.
func startAlknet(e *env) (*endpoint.Endpoint, error) {
	ep := endpoint.New(endpoint.Options{Listen: "127.0.0.1:0", Certs: staticCert{&e.cert}, DrainTimeout: time.Second})
	if err := ep.Register(endpoint.EchoALPN, "bench", endpoint.Echo()); err != nil {
		return nil, err
	}
	if err := ep.Start(); err != nil {
		return nil, err
	}
	return ep, nil
}

// staticCert is a CertSource that always presents the same certificate.
type staticCert struct{ c *tls.Certificate }

func (s staticCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.c, nil }

// --- clients ---

// duplex is the part of a stream a pipe-like client uses.
type duplex interface {
	io.Reader
	io.Writer
	CloseWrite() error
}

// conn is one client connection carrying one stream.
type conn struct {
	s duplex
	// abort tears the connection down at once (unblocks Read and Write).
	abort func()
	// close closes it normally.
	close func()
}

// opener dials the echo server and opens one stream.
type opener func(ctx context.Context) (*conn, error)

// alknetOpener dials like `alknet pipe`: dial.Dial with the server's
// fingerprint pinned, then one stream.
func alknetOpener(addr, fingerprint string, tcp bool) opener {
	return func(ctx context.Context) (*conn, error) {
		c, err := dial.Dial(ctx, addr, dial.Options{ALPN: endpoint.EchoALPN, Peer: fingerprint, TCP: tcp})
		if err != nil {
			return nil, err
		}
		s, err := c.OpenStream(ctx)
		if err != nil {
			_ = c.CloseWithError(endpoint.CodeInternal, "bench: open stream failed")
			return nil, fmt.Errorf("open stream: %w", err)
		}
		return &conn{
			s:     s,
			abort: func() { _ = c.CloseWithError(endpoint.CodeInternal, "bench: aborted") },
			close: func() { _ = c.CloseWithError(endpoint.CodeNormal, "") },
		}, nil
	}
}

// quicStream gives a bare quic-go stream the half-close a pipe uses.
type quicStream struct{ *quic.Stream }

func (s quicStream) CloseWrite() error { return s.Stream.Close() }

// quicOpener dials with bare quic-go and its default configuration.
func quicOpener(addr string, cfg *tls.Config) opener {
	return func(ctx context.Context) (*conn, error) {
		c, err := quic.DialAddr(ctx, addr, cfg, nil)
		if err != nil {
			return nil, err
		}
		s, err := c.OpenStreamSync(ctx)
		if err != nil {
			_ = c.CloseWithError(4, "bench: open stream failed")
			return nil, fmt.Errorf("open stream: %w", err)
		}
		return &conn{
			s:     quicStream{s},
			abort: func() { _ = c.CloseWithError(4, "bench: aborted") },
			close: func() { _ = c.CloseWithError(0, "") },
		}, nil
	}
}

// tlsOpener dials with bare crypto/tls.
func tlsOpener(addr string, cfg *tls.Config) opener {
	return func(ctx context.Context) (*conn, error) {
		d := tls.Dialer{Config: cfg}
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		tc := nc.(*tls.Conn)
		return &conn{s: tc, abort: func() { _ = tc.Close() }, close: func() { _ = tc.Close() }}, nil
	}
}

// payload is what every transfer sends, one 64 KiB write at a time.
var payload = func() []byte {
	b := make([]byte, 64<<10)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}()

// echoTransfer sends total bytes from a writer goroutine in 64 KiB writes,
// half-closes, reads the echo to EOF and checks the byte count. It returns
// the time from the first write to EOF.
func echoTransfer(ctx context.Context, c *conn, total int64) (time.Duration, error) {
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	werr := make(chan error, 1)
	start := time.Now()
	go func() {
		var err error
		for sent := int64(0); sent < total; {
			n := min(int64(len(payload)), total-sent)
			if _, err = c.s.Write(payload[:n]); err != nil {
				break
			}
			sent += n
		}
		if err == nil {
			err = c.s.CloseWrite()
		}
		werr <- err
	}()
	buf := make([]byte, 64<<10)
	var got int64
	var rerr error
	for {
		n, err := c.s.Read(buf)
		got += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	elapsed := time.Since(start)
	if rerr != nil {
		c.abort() // unblock the writer
	}
	werrv := <-werr
	switch {
	case ctx.Err() != nil:
		return 0, ctx.Err()
	case rerr != nil:
		return 0, fmt.Errorf("read: %w", rerr)
	case werrv != nil:
		return 0, fmt.Errorf("write: %w", werrv)
	case got != total:
		return 0, fmt.Errorf("echo returned %d bytes, sent %d", got, total)
	}
	return elapsed, nil
}

// throughput measures MiB/s of one pipe-like echo transfer per round, each
// on a new connection (handshake not timed).
func throughput(e *env, open opener, stop func()) *instance {
	run := func(ctx context.Context, total int64) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		c, err := open(ctx)
		if err != nil {
			return 0, err
		}
		elapsed, err := echoTransfer(ctx, c, total)
		if err != nil {
			c.abort()
			return 0, err
		}
		c.close()
		return float64(total) / (1 << 20) / elapsed.Seconds(), nil
	}
	return &instance{
		Warmup: func(ctx context.Context) error {
			_, err := run(ctx, e.warmupBytes())
			return err
		},
		Measure: func(ctx context.Context) (float64, error) { return run(ctx, e.echoBytes()) },
		Stop:    stop,
	}
}

// oneHandshake is a full handshake, one stream, a 1-byte echo and a close.
func oneHandshake(ctx context.Context, open opener) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := open(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, c.abort)
	defer stop()
	fail := func(err error) error {
		c.abort()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	if _, err := c.s.Write([]byte{42}); err != nil {
		return fail(fmt.Errorf("write: %w", err))
	}
	if err := c.s.CloseWrite(); err != nil {
		return fail(fmt.Errorf("close write: %w", err))
	}
	var buf [8]byte
	got := 0
	for {
		n, err := c.s.Read(buf[got:])
		got += n
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("read: %w", err))
		}
		if got == len(buf) {
			break
		}
	}
	if got != 1 || buf[0] != 42 {
		return fail(fmt.Errorf("echo returned %q, want \"*\"", buf[:got]))
	}
	c.close()
	return nil
}

// handshakes measures completed oneHandshake per second over one round,
// with the given number of concurrent clients.
func handshakes(e *env, workers int, open opener, stop func()) *instance {
	run := func(ctx context.Context, d time.Duration) (float64, error) {
		return opsPerSecond(ctx, workers, d, func(ctx context.Context) error { return oneHandshake(ctx, open) })
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := run(ctx, 200*time.Millisecond); return err },
		Measure: func(ctx context.Context) (float64, error) { return run(ctx, e.handshakeRound()) },
		Stop:    stop,
	}
}
