package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"alknet.dev/alknet/plugins/sdk"
)

// The floor under plugin-call-p50: a plugin call crosses into the plugin
// process and back on an open gRPC stream. This row times exactly that
// crossing with nothing else — one small message and its echo on an open
// bidirectional stream, with the gRPC options core and plugins use (no
// TLS), to a server in a child process over a unix socket — minus the same
// with the server in this process. It is what the process boundary costs
// on this machine (waking an idle process, twice), which no change to
// Alknet's code removes.
var ipcFloor = benchmark{
	Name: "plugin-ipc-floor", Area: "plugins", Unit: "µs", HigherIsBetter: false, Delta: true, Informational: true,
	Description: "p50 of one message and its echo on an open gRPC stream over a unix socket (sdk options, no TLS): server in a child process minus server in this process — the process boundary a plugin call crosses twice",
	Rounds:      5, ShortRounds: 3,
	Subject: variant{Label: "gRPC stream ping-pong, server in a child process", Start: startPingPong(true)},
	Anchor:  variant{Label: "gRPC stream ping-pong, server in this process", Start: startPingPong(false)},
	Also: []companion{
		{Name: "plugin-ipc-floor-p99", Unit: "µs", HigherIsBetter: false, Delta: true, Informational: true,
			Description: "p99 of the plugin-ipc-floor rounds"},
	},
}

const pingPongMethod = "/alknet.bench.PingPong/Stream"

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
	srv := grpc.NewServer(sdk.ServerOptions()...)
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
			a, stop, err := startChild("grpc-pingpong")
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
		cc, err := grpc.NewClient("unix://"+addr, append(sdk.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
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
		in := sequential(e, &caller{
			one: func(context.Context) error {
				if err := st.SendMsg(msg); err != nil {
					return err
				}
				got := new(wrapperspb.BytesValue)
				if err := st.RecvMsg(got); err != nil {
					return err
				}
				return checkEcho(got.Value)
			},
			stop: func() {
				_ = st.CloseSend()
				cancel()
				_ = cc.Close()
				stopServer()
			},
		})
		also := in.Also
		in.Also = func() []float64 { return also()[:1] } // the p99; not calls/s
		return in, nil
	}
}
