// Command alknet-plugin-prober is a plugin that speaks the wire protocol
// itself (no SDK) to try what the SDK never lets a plugin do: act through
// handles that are not its own or no longer open. prober/probe reports
// what the node answered to each attempt.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

var manifest = &pluginpb.Manifest{Name: "prober", Version: "1.0.0", ProtocolVersions: []uint32{pluginrpc.ProtocolVersion},
	Alpns: []string{"alknet/prober"},
	Operations: []*pluginpb.OperationSpec{
		{Name: "prober/mark", OpType: "query", RemoteSafe: true},
		{Name: "prober/probe", OpType: "query", RemoteSafe: true},
	}}

type prober struct {
	pluginpb.UnimplementedPluginServer
	dial pluginrpc.HostDialer

	mu       sync.Mutex
	host     pluginpb.HostClient
	lastCall uint64 // a call that has finished
	lastConn uint64 // a connection that was closed
}

func (p *prober) Describe(context.Context, *pluginpb.Empty) (*pluginpb.Manifest, error) {
	return manifest, nil
}

func (p *prober) Configure(_ context.Context, r *pluginpb.ConfigureRequest) (*pluginpb.Empty, error) {
	if r.HostBrokerId != 0 {
		cc, err := p.dial(r.HostBrokerId)
		if err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.host = pluginpb.NewHostClient(cc)
		p.mu.Unlock()
	}
	return &pluginpb.Empty{}, nil
}

// OpenConnection keeps the handle and closes the connection at once.
func (p *prober) OpenConnection(_ context.Context, r *pluginpb.OpenConnectionRequest) (*pluginpb.Empty, error) {
	p.mu.Lock()
	p.lastConn = r.Conn
	h := p.host
	p.mu.Unlock()
	go func() {
		_, _ = h.CloseConnection(context.Background(), &pluginpb.CloseConnectionRequest{Conn: r.Conn})
	}()
	return &pluginpb.Empty{}, nil
}

func (p *prober) CloseConnection(context.Context, *pluginpb.CloseConnectionRequest) (*pluginpb.Empty, error) {
	return &pluginpb.Empty{}, nil
}

func (p *prober) Health(context.Context, *pluginpb.Empty) (*pluginpb.HealthResponse, error) {
	return &pluginpb.HealthResponse{Status: "ok"}, nil
}

func (p *prober) Calls(st grpc.BidiStreamingServer[pluginpb.CallFrame, pluginpb.CallFrame]) error {
	var mu sync.Mutex
	for {
		f, err := st.Recv()
		if err != nil {
			return nil
		}
		if f.Request == nil {
			continue
		}
		go func() {
			out := []byte("null")
			if f.Request.Operation == "prober/probe" {
				out, _ = json.Marshal(p.probe(st.Context(), f.Id))
			} else {
				p.mu.Lock()
				p.lastCall = f.Id
				p.mu.Unlock()
			}
			mu.Lock()
			defer mu.Unlock()
			_ = st.Send(&pluginpb.CallFrame{Id: f.Id, Last: true, Result: &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: out}})
		}()
	}
}

// probe tries each forbidden handle and reports the node's answer.
func (p *prober) probe(ctx context.Context, self uint64) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	p.mu.Lock()
	h, call, conn := p.host, p.lastCall, p.lastConn
	p.mu.Unlock()
	invoke := func(as uint64) string {
		st, err := h.Invoke(ctx, &pluginpb.HostInvokeRequest{As: as, Operation: "node/info", Input: []byte("null")})
		if err == nil {
			_, err = st.Recv()
		}
		return status.Code(err).String()
	}
	dial := func(as uint64) string {
		_, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: "alknet/call", As: as})
		return status.Code(err).String()
	}
	auth := func(conn uint64) string {
		_, err := h.Authenticate(ctx, &pluginpb.AuthenticateRequest{Conn: conn, Kind: "token", Credential: "x"})
		return status.Code(err).String()
	}
	return map[string]string{
		"invoke_finished_call": invoke(call),
		"invoke_made_up":       invoke(self + 1_000_000),
		"invoke_closed_conn":   invoke(conn),
		"dial_finished_call":   dial(call),
		"dial_closed_conn":     dial(conn),
		"auth_closed_conn":     auth(conn),
		"dial_own_call":        dial(self),
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "describe" {
		b, err := pluginrpc.MarshalManifest(manifest)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(string(b))
		return
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginrpc.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{pluginrpc.ProtocolVersion: {pluginrpc.PluginName: &pluginrpc.GRPCPlugin{
			NewServer: func(dial pluginrpc.HostDialer) pluginpb.PluginServer { return &prober{dial: dial} }}}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, pluginrpc.ServerOptions()...)...)
		},
	})
}
