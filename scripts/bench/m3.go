package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

// The call protocol: unary calls over alknet/call — an endpoint
// serving a core-style registry through call.Adapter, called through one
// shared call.Connection (QUIC, TLS 1.3, pinned) — against grpc-go unary
// calls over TCP loopback through one shared grpc.ClientConn. Both echo
// the same small JSON document.
var m3 = []benchmark{
	{
		Name: "call-unary-p50", Area: "call", Unit: "µs", HigherIsBetter: false, Goal: 1.0,
		Description: "one sequential caller on one connection: p50 latency of a unary echo call of " + string(callInput) + "; " + anchorNote,
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: callLabel, Start: startCallSubject(sequential)},
		Anchor:  variant{Label: grpcLabel, Start: startGRPCAnchor(false, sequential)},
		Also: []companion{
			{Name: "call-unary-p99", Unit: "µs", HigherIsBetter: false, Goal: 1.0, Informational: true,
				Description: "p99 latency of the call-unary-p50 rounds"},
			{Name: "call-unary-c1", Unit: "calls/s", HigherIsBetter: true, Goal: 1.0,
				Description: "calls completed per second by the one sequential caller of the call-unary-p50 rounds"},
		},
	},
	{
		Name: "call-unary-c64", Area: "call", Unit: "calls/s", HigherIsBetter: true, Goal: 1.0,
		Description: "64 concurrent callers sharing one connection, unary echo calls; " + anchorNote,
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: callLabel, Start: startCallSubject(concurrent(64))},
		Anchor:  variant{Label: grpcLabel, Start: startGRPCAnchor(false, concurrent(64))},
	},
	{
		Name: "call-batch-100", Area: "call", Unit: "batch/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
		Description: "sequential batches of 100 echo calls on one connection: conn.Batch against 100 concurrent grpc unary calls; " + anchorNote,
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: callLabel + ", Batch", Start: startCallSubject(batches(100))},
		Anchor:  variant{Label: grpcLabel + ", 100 goroutines", Start: startGRPCAnchor(false, batches(100))},
	},
	// The floor of the transport the spec prescribes: what quic-go alone
	// gives for one stream per call (open, write the same request frame,
	// half-close, read the answer to the end), against the same grpc
	// anchor. Alknet's call rows cannot beat this ratio; what they lose
	// beyond it is Alknet's own cost.
	{
		Name: "call-floor-quic-p50", Area: "call", Unit: "µs", HigherIsBetter: false, Goal: 1.0, Informational: true,
		Description: "the transport's floor: bare quic-go, one stream per call carrying the same request frame, echoed by a bare server; one sequential caller",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: quicFloorLabel, Start: startQUICFloor(sequential)},
		Anchor:  variant{Label: grpcLabel, Start: startGRPCAnchor(false, sequential)},
		Also: []companion{
			{Name: "call-floor-quic-p99", Unit: "µs", HigherIsBetter: false, Goal: 1.0, Informational: true,
				Description: "p99 latency of the call-floor-quic-p50 rounds"},
			{Name: "call-floor-quic-c1", Unit: "calls/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
				Description: "calls per second of the call-floor-quic-p50 rounds"},
		},
	},
	{
		Name: "call-floor-quic-c64", Area: "call", Unit: "calls/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
		Description: "the transport's floor as call-floor-quic-p50 with 64 concurrent callers on one connection",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: quicFloorLabel, Start: startQUICFloor(concurrent(64))},
		Anchor:  variant{Label: grpcLabel, Start: startGRPCAnchor(false, concurrent(64))},
	},
	{
		Name: "call-unary-c64-tls", Area: "call", Unit: "calls/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
		Description: "as call-unary-c64 with the anchor on TLS 1.3 (same certificate, grpc credentials.NewTLS): both sides encrypted",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: callLabel, Start: startCallSubject(concurrent(64))},
		Anchor:  variant{Label: "grpc-go unary, TCP + TLS 1.3", Start: startGRPCAnchor(true, concurrent(64))},
	},
}

const (
	quicFloorLabel = "bare quic-go, stream per call"
	callLabel      = "alknet/call: endpoint + call.Connection"
	grpcLabel      = "grpc-go unary, plain TCP (insecure)"
	anchorNote     = "anchor on plain TCP with insecure credentials (grpc's default, no TLS), Alknet on QUIC + TLS 1.3"
	// benchOp is the operation the subject calls.
	benchOp = "bench/echo"
)

// callInput is what every call sends and expects back, byte for byte.
var callInput = json.RawMessage(`{"n":123,"s":"hello"}`)

// callRound is how long one measured round calls.
func (e *env) callRound() time.Duration {
	if e.short {
		return 300 * time.Millisecond
	}
	return time.Second // × 5 rounds × 2 sides: ~10 s per row
}

// --- the two sides, as "make one echo call" and "make n at once" ---

// caller is a started side: a connection to an echo server.
type caller struct {
	// one makes one echo call and checks the answer.
	one func(ctx context.Context) error
	// many makes n echo calls at once and checks every answer.
	many func(ctx context.Context, n int) error
	stop func()
}

// workload turns a caller into the measurement of one row.
type workload func(e *env, c *caller) *instance

// startCallSubject starts an endpoint serving bench/echo over alknet/call
// and connects one call.Connection to it (QUIC, server pinned, with a
// client certificate of its own).
func startCallSubject(w workload) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		reg := call.NewRegistry(nil)
		err := reg.Register(call.Registration{
			Spec: call.Spec{Name: benchOp, OpType: call.Query, Description: "returns its input"},
			Call: func(_ context.Context, in json.RawMessage) (any, error) { return in, nil },
		})
		if err != nil {
			return nil, err
		}
		ep := endpoint.New(endpoint.Options{Listen: "127.0.0.1:0", Certs: staticCert{&e.cert}, DrainTimeout: time.Second})
		if err := ep.Register(call.ALPN, "bench", &call.Adapter{Registry: reg}); err != nil {
			return nil, err
		}
		if err := ep.Start(); err != nil {
			return nil, err
		}
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err == nil {
			var cert tls.Certificate
			if cert, err = identity.RawKeyTLSCertificate(key); err == nil {
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var conn *call.Connection
				conn, err = call.New(nil).Connect(dctx, ep.UDPAddr().String(), call.Credentials{TLS: &cert, Peer: e.fingerprint})
				cancel()
				if err == nil {
					return w(e, callCaller(conn, ep)), nil
				}
			}
		}
		ep.Shutdown()
		return nil, err
	}
}

func callCaller(conn *call.Connection, ep *endpoint.Endpoint) *caller {
	return &caller{
		one: func(ctx context.Context) error {
			out, err := conn.Call(ctx, benchOp, callInput)
			if err != nil {
				return err
			}
			return checkEcho(out)
		},
		many: func(ctx context.Context, n int) error {
			reqs := make([]call.Request, n)
			for i := range reqs {
				reqs[i] = call.Request{Name: benchOp, Input: callInput}
			}
			for _, r := range conn.Batch(ctx, reqs) {
				if r.Err != nil {
					return r.Err
				}
				if err := checkEcho(r.Output); err != nil {
					return err
				}
			}
			return nil
		},
		stop: func() {
			_ = conn.Close()
			ep.Shutdown()
		},
	}
}

func checkEcho(out []byte) error {
	if !bytes.Equal(out, callInput) {
		return fmt.Errorf("echo returned %q, want %q", out, callInput)
	}
	return nil
}

// The anchor's service, registered by hand instead of generated by protoc:
// one unary method /alknet.bench.Echo/Echo whose request and response are
// google.protobuf.BytesValue (a well-known type, so the standard proto
// codec applies), carrying callInput.
const grpcMethod = "/alknet.bench.Echo/Echo"

var grpcEchoDesc = grpc.ServiceDesc{
	ServiceName: "alknet.bench.Echo",
	HandlerType: (*any)(nil), // no interface to satisfy: the handler below is the service
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.BytesValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			echo := func(context.Context, any) (any, error) { return in, nil }
			if icpt == nil {
				return echo(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: grpcMethod}, echo)
		},
	}},
	Metadata: "scripts/bench/m3.go",
}

// startGRPCAnchor starts a grpc-go server with the echo service on
// loopback TCP and one client connection to it: without TLS (insecure
// credentials) or with TLS 1.3 and the node's certificate.
func startGRPCAnchor(useTLS bool, w workload) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		serverCreds, clientCreds := insecure.NewCredentials(), insecure.NewCredentials()
		if useTLS {
			// NewTLS adds the "h2" ALPN to both.
			serverCreds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{e.cert}})
			clientCreds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, ServerName: identity.RawKeySNI, InsecureSkipVerify: true})
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		srv := grpc.NewServer(grpc.Creds(serverCreds))
		srv.RegisterService(&grpcEchoDesc, nil)
		var serving sync.WaitGroup
		serving.Go(func() { _ = srv.Serve(ln) })
		stopServer := func() { srv.Stop(); serving.Wait() }
		cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(clientCreds))
		if err != nil {
			stopServer()
			return nil, err
		}
		in := wrapperspb.Bytes(callInput)
		one := func(ctx context.Context) error {
			out := new(wrapperspb.BytesValue)
			if err := cc.Invoke(ctx, grpcMethod, in, out); err != nil {
				return err
			}
			return checkEcho(out.Value)
		}
		return w(e, &caller{
			one:  one,
			many: manyAtOnce(one),
			stop: func() {
				_ = cc.Close()
				stopServer()
			},
		}), nil
	}
}

// manyAtOnce makes n calls of one at once, each on its own goroutine,
// and joins their errors.
func manyAtOnce(one func(context.Context) error) func(context.Context, int) error {
	return func(ctx context.Context, n int) error {
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { errs[i] = one(ctx) })
		}
		wg.Wait()
		return errors.Join(errs...)
	}
}

// --- workloads ---

// sequential is one caller calling back to back: each round returns the
// p50 latency in µs, and Also its p99 (µs) and its calls per second.
func sequential(e *env, c *caller) *instance {
	var also []float64
	run := func(ctx context.Context, d time.Duration) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
		defer cancel()
		lat := make([]time.Duration, 0, 1<<16)
		start := time.Now()
		deadline := start.Add(d)
		for t0 := start; t0.Before(deadline); {
			if err := c.one(ctx); err != nil {
				return 0, err
			}
			t1 := time.Now()
			lat = append(lat, t1.Sub(t0))
			t0 = t1
		}
		elapsed := time.Since(start)
		slices.Sort(lat)
		also = []float64{percentile(lat, 0.99), float64(len(lat)) / elapsed.Seconds()}
		return percentile(lat, 0.50), nil
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := run(ctx, 200*time.Millisecond); return err },
		Measure: func(ctx context.Context) (float64, error) { return run(ctx, e.callRound()) },
		Also:    func() []float64 { return also },
		Stop:    c.stop,
	}
}

// percentile is the nearest-rank q-quantile of sorted, in µs.
func percentile(sorted []time.Duration, q float64) float64 {
	i := max(int(math.Ceil(q*float64(len(sorted))))-1, 0)
	return float64(sorted[i]) / float64(time.Microsecond)
}

// concurrent is workers callers sharing the connection, calling back to
// back: each round returns the calls completed per second.
func concurrent(workers int) workload {
	return func(e *env, c *caller) *instance {
		return timed(e, c, workers, func(ctx context.Context) error { return c.one(ctx) })
	}
}

// batches is one caller making n calls at once, batch after batch: each
// round returns the batches completed per second.
func batches(n int) workload {
	return func(e *env, c *caller) *instance {
		return timed(e, c, 1, func(ctx context.Context) error { return c.many(ctx, n) })
	}
}

// timed runs op back to back in each of workers goroutines for a round and
// returns the ops completed per second; the first error ends the round.
func timed(e *env, c *caller, workers int, op func(context.Context) error) *instance {
	run := func(ctx context.Context, d time.Duration) (float64, error) {
		ctx, cancel := context.WithTimeoutCause(ctx, d+30*time.Second, errors.New("round did not finish"))
		defer cancel()
		return opsPerSecond(ctx, workers, d, op)
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := run(ctx, 200*time.Millisecond); return err },
		Measure: func(ctx context.Context) (float64, error) { return run(ctx, e.callRound()) },
		Stop:    c.stop,
	}
}

// floorRequest is the frame a call.Connection sends for one bench/echo
// call (4-byte length, then the envelope), built once.
var floorRequest = func() []byte {
	body := []byte(`{"type":"call.requested","id":"0b9e7bb3-6a3c-4d0e-9f1e-3f4c2a1b5d6e","payload":{"operationId":"/bench/echo","input":` +
		string(callInput) + `,"subscribe":false}}`)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}()

// startQUICFloor starts a bare quic-go server that answers each stream
// the way a call server does at best (read the request to its end, write
// the answer and the end of the stream at once) and one client connection
// that makes each call on a new stream.
func startQUICFloor(w workload) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		ln, err := quic.ListenAddr("127.0.0.1:0", e.serverTLS(), nil)
		if err != nil {
			return nil, err
		}
		var t tracker[*quic.Conn]
		t.wg.Go(func() {
			for {
				c, err := ln.Accept(context.Background())
				if err != nil {
					return
				}
				if !t.add(c, func() { _ = c.CloseWithError(0, "shutdown") }) {
					continue
				}
				t.wg.Go(func() {
					defer t.remove(c)
					for {
						st, err := c.AcceptStream(context.Background())
						if err != nil {
							return
						}
						t.wg.Go(func() {
							req, err := io.ReadAll(st)
							if err == nil {
								_, err = st.Write(req)
							}
							if err != nil {
								st.CancelRead(0)
								st.CancelWrite(0)
								return
							}
							_ = st.Close()
						})
					}
				})
			}
		})
		stopServer := func() { _ = ln.Close(); t.closeAll(); t.wg.Wait() }
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		qc, err := quic.DialAddr(dctx, ln.Addr().String(), e.clientTLS(), nil)
		cancel()
		if err != nil {
			stopServer()
			return nil, err
		}
		one := func(ctx context.Context) error {
			st, err := qc.OpenStreamSync(ctx)
			if err != nil {
				return err
			}
			if _, err := st.Write(floorRequest); err != nil {
				return err
			}
			_ = st.Close()
			got, err := io.ReadAll(st)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, floorRequest) {
				return fmt.Errorf("floor echo returned %d bytes, want %d", len(got), len(floorRequest))
			}
			return nil
		}
		return w(e, &caller{
			one:  one,
			many: manyAtOnce(one),
			stop: func() {
				_ = qc.CloseWithError(0, "")
				stopServer()
			},
		}), nil
	}
}
