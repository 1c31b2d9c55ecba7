package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"alknet.dev/alknet/proto/pluginrpc"
)

// The floor under plugin-call-p50: a plugin call crosses into the plugin
// process and back on an open gRPC stream. This row times exactly that
// crossing with nothing else — one small message and its echo on an open
// bidirectional stream, with the gRPC options core and plugins use (no
// TLS), to a server in a child process (GOMAXPROCS 1, as a plugin's default
// limits.cpu gives it) over a unix socket — minus the same
// with the server in this process. Each exchange follows ipcIdle of
// silence, as in plugin-call-p50, where the plugin sits idle while an
// answer travels back to the caller and the next call comes in; an idle
// process takes longer to wake than a busy one (on this kind of machine
// ~140 µs back to back, ~210 µs after an idle gap). It is what the
// process boundary costs, which no change to Alknet's code removes.
var ipcFloor = benchmark{
	Name: "plugin-ipc-floor", Area: "plugins", Unit: "µs", HigherIsBetter: false, Delta: true, Informational: true,
	Description: "p50 of one message and its echo on an open gRPC stream over a unix socket (the plugin protocol's gRPC options and codec, no TLS), each after 300 µs idle: server in a child process with GOMAXPROCS 1 as a plugin has by default, minus server in this process — the process boundary a plugin call crosses there and back",
	Rounds:      5, ShortRounds: 3,
	Subject: variant{Label: "gRPC stream ping-pong, server in a child process", Start: startPingPong(true)},
	Anchor:  variant{Label: "gRPC stream ping-pong, server in this process", Start: startPingPong(false)},
	Also: []companion{
		{Name: "plugin-ipc-floor-p99", Unit: "µs", HigherIsBetter: false, Delta: true, Informational: true,
			Description: "p99 of the plugin-ipc-floor rounds"},
	},
}

const pingPongMethod = "/alknet.bench.PingPong/Stream"

// ipcIdle is the silence before each ping-pong exchange: about the time a
// plugin stays idle between two sequential calls of plugin-call-p50.
const ipcIdle = 300 * time.Microsecond

var pingPongDesc = grpc.ServiceDesc{
	ServiceName: "alknet.bench.PingPong",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Stream", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, st grpc.ServerStream) error {
			for {
				m := new(wrapperspb.BytesValue)
				if err := st.RecvMsg(m); err != nil {
					return nil
				}
				if err := st.SendMsg(m); err != nil {
					return err
				}
			}
		},
	}},
	Metadata: "scripts/bench/ipc.go",
}

type pingPongServer struct {
	addr string
	stop func()
}

// startPingPongServer serves pingPongDesc on a unix socket in a new
// temporary directory.
func startPingPongServer() (*pingPongServer, error) {
	dir, err := os.MkdirTemp("", "alknet-bench-ipc-")
	if err != nil {
		return nil, err
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	srv := grpc.NewServer(pluginrpc.ServerOptions()...)
	srv.RegisterService(&pingPongDesc, nil)
	var serving sync.WaitGroup
	serving.Go(func() { _ = srv.Serve(ln) })
	return &pingPongServer{addr: sock, stop: func() {
		srv.Stop()
		serving.Wait()
		_ = os.RemoveAll(dir)
	}}, nil
}

// startPingPong measures the ping-pong against a server in a child
// process or in this one.
func startPingPong(child bool) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		var addr string
		var stopServer func()
		if child {
			// The server stands in for a plugin, which runs with
			// GOMAXPROCS = plugins.<name>.limits.cpu (1 by default; see
			// docs/spec/plugins.md): with one P the child never wakes a
			// second thread to take over, which on this machine kind is
			// ~80 µs of each round trip.
			a, stop, err := startChild("grpc-pingpong", "GOMAXPROCS=1")
			if err != nil {
				return nil, err
			}
			addr, stopServer = a, stop
		} else {
			srv, err := startPingPongServer()
			if err != nil {
				return nil, err
			}
			addr, stopServer = srv.addr, srv.stop
		}
		cc, err := grpc.NewClient("unix://"+addr, append(pluginrpc.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			stopServer()
			return nil, err
		}
		sctx, cancel := context.WithCancel(context.Background())
		st, err := cc.NewStream(sctx, &pingPongDesc.Streams[0], pingPongMethod)
		if err != nil {
			cancel()
			_ = cc.Close()
			stopServer()
			return nil, err
		}
		msg := wrapperspb.Bytes(callInput)
		one := func() (time.Duration, error) {
			time.Sleep(ipcIdle)
			t0 := time.Now()
			if err := st.SendMsg(msg); err != nil {
				return 0, err
			}
			got := new(wrapperspb.BytesValue)
			if err := st.RecvMsg(got); err != nil {
				return 0, err
			}
			return time.Since(t0), checkEcho(got.Value)
		}
		var p99 float64
		run := func(d time.Duration) (float64, error) {
			lat := make([]time.Duration, 0, 4096)
			for end := time.Now().Add(d); time.Now().Before(end); {
				l, err := one()
				if err != nil {
					return 0, err
				}
				lat = append(lat, l)
			}
			slices.Sort(lat)
			p99 = percentile(lat, 0.99)
			return percentile(lat, 0.50), nil
		}
		return &instance{
			Warmup:  func(context.Context) error { _, err := run(200 * time.Millisecond); return err },
			Measure: func(context.Context) (float64, error) { return run(e.callRound()) },
			Also:    func() []float64 { return []float64{p99} },
			Stop: func() {
				_ = st.CloseSend()
				cancel()
				_ = cc.Close()
				stopServer()
			},
		}, nil
	}
}
