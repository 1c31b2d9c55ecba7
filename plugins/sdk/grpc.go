package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"alknet.dev/alknet/proto/pluginpb"
)

// GRPCPlugin is the go-plugin glue. Plugins do not use it directly; the
// core uses its client half.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Handler
}

// GRPCServer registers the plugin side.
func (p *GRPCPlugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	// The Host connection carries the stream bytes: give it the same
	// windows and buffers as the main connection.
	dial := func(id uint32) (*grpc.ClientConn, error) { return broker.DialWithOptions(id, DialOptions()...) }
	pluginpb.RegisterPluginServer(s, NewPluginServer(p.Impl, dial))
	return nil
}

// NewPluginServer returns the plugin side of the protocol for h. dialHost
// connects to the Host service announced in Configure (go-plugin's broker
// in production; sdktest passes an in-memory one).
func NewPluginServer(h Handler, dialHost func(id uint32) (*grpc.ClientConn, error)) pluginpb.PluginServer {
	return &server{h: h, dial: dialHost}
}

// Client is what the core gets when it dispenses the plugin.
type Client struct {
	pluginpb.PluginClient
	Broker *plugin.GRPCBroker
}

// GRPCClient returns the core side.
func (p *GRPCPlugin) GRPCClient(_ context.Context, broker *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &Client{PluginClient: pluginpb.NewPluginClient(c), Broker: broker}, nil
}

type server struct {
	pluginpb.UnimplementedPluginServer
	h    Handler
	dial func(uint32) (*grpc.ClientConn, error)

	mu    sync.Mutex
	host  *Host
	conns map[uint64]*Conn
}

func (s *server) Describe(context.Context, *pluginpb.Empty) (*pluginpb.Manifest, error) {
	b, err := json.Marshal(s.h.Manifest())
	return &pluginpb.Manifest{Json: b}, err
}

func (s *server) Configure(ctx context.Context, r *pluginpb.ConfigureRequest) (*pluginpb.Empty, error) {
	cc, err := s.dial(r.GetHostBrokerId())
	if err != nil {
		return nil, err
	}
	host := &Host{c: pluginpb.NewHostClient(cc)}
	s.mu.Lock()
	s.host = host
	s.conns = map[uint64]*Conn{}
	s.mu.Unlock()
	settings := json.RawMessage(r.GetSettings())
	if len(settings) == 0 {
		settings = json.RawMessage("{}")
	}
	if err := s.h.Configure(ctx, settings, host); err != nil {
		return nil, err
	}
	return &pluginpb.Empty{}, nil
}

func (s *server) OpenConnection(_ context.Context, r *pluginpb.OpenConnectionRequest) (*pluginpb.Empty, error) {
	s.mu.Lock()
	host := s.host
	s.mu.Unlock()
	if host == nil {
		return nil, errors.New("not configured")
	}
	a := r.GetAuth()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{id: r.GetConnId(), host: host.c, ctx: ctx, cancel: cancel, caps: capsFromProto(r.GetCapabilities()),
		auth: Auth{Identity: identityFrom(a.GetIdentity()), Fingerprint: a.GetFingerprint(), ALPN: a.GetAlpn(), RemoteAddr: a.GetRemoteAddr(), Transport: a.GetTransport()}}
	s.mu.Lock()
	s.conns[c.id] = c
	s.mu.Unlock()
	go func() {
		// Owned by the connection: ends when the handler returns.
		var code uint64
		reason := ""
		func() {
			defer func() {
				if p := recover(); p != nil {
					code, reason = 4, "internal"
				}
			}()
			if err := s.h.ServeConn(ctx, c); err != nil {
				code, reason = 4, "internal"
			}
		}()
		s.mu.Lock()
		delete(s.conns, c.id)
		s.mu.Unlock()
		_ = c.Close(code, reason)
	}()
	return &pluginpb.Empty{}, nil
}

func (s *server) CloseConnection(_ context.Context, r *pluginpb.CloseConnectionRequest) (*pluginpb.Empty, error) {
	s.mu.Lock()
	c := s.conns[r.GetConnId()]
	s.mu.Unlock()
	if c != nil {
		c.cancel()
	}
	return &pluginpb.Empty{}, nil
}

func (s *server) Invoke(r *pluginpb.InvokeRequest, st grpc.ServerStreamingServer[pluginpb.InvokeResult]) error {
	return s.serveCall(st.Context(), r, func(res *pluginpb.InvokeResult, _ bool) error { return st.Send(res) })
}

// Calls serves every operation call of the core on one long-lived stream
// (spec/plugins.md §3): requests and aborts in, results out, correlated
// by id. Calls run concurrently; the stream's end cancels them all.
func (s *server) Calls(st grpc.BidiStreamingServer[pluginpb.CallFrame, pluginpb.CallFrame]) error {
	ctx, cancelAll := context.WithCancel(st.Context())
	var (
		mu      sync.Mutex // guards running and serialises Send
		running = map[uint64]context.CancelFunc{}
		wg      sync.WaitGroup
	)
	defer func() { cancelAll(); wg.Wait() }()
	for {
		f, err := st.Recv()
		if err != nil {
			return nil
		}
		id := f.GetId()
		if f.GetAbort() {
			mu.Lock()
			if c := running[id]; c != nil {
				c()
			}
			mu.Unlock()
			continue
		}
		if f.GetRequest() == nil {
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		mu.Lock()
		running[id] = cancel
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(running, id)
				mu.Unlock()
				cancel()
			}()
			_ = s.serveCall(cctx, f.GetRequest(), func(res *pluginpb.InvokeResult, last bool) error {
				mu.Lock()
				defer mu.Unlock()
				return st.Send(&pluginpb.CallFrame{Id: id, Result: res, Last: last})
			})
		}()
	}
}

// serveCall runs one operation call; send gets every result, last marks
// the one that ends the call.
func (s *server) serveCall(ctx context.Context, r *pluginpb.InvokeRequest, send func(*pluginpb.InvokeResult, bool) error) error {
	s.mu.Lock()
	host := s.host
	s.mu.Unlock()
	call := &Call{Operation: r.GetOperation(), Input: r.GetInput(), RequestID: r.GetRequestId(), ParentID: r.GetParentId(),
		Identity: identityFrom(r.GetIdentity()), ForwardedFor: identityFrom(r.GetForwardedFor()), Internal: r.GetInternal(),
		Capabilities: capsFromProto(r.GetCapabilities()), Host: host}
	if len(call.Input) == 0 {
		call.Input = json.RawMessage("null")
	}
	var mu sync.Mutex
	if r.GetSubscribe() {
		call.Emit = func(item any) error {
			b, err := json.Marshal(item)
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: b}, false)
		}
	}
	out, err := invokeSafely(ctx, s.h, call)
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		var ce *CallError
		if !errors.As(err, &ce) {
			ce = &CallError{Code: "INTERNAL", Message: "internal error"}
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				ce.Message = "request cancelled"
			}
		}
		b, _ := json.Marshal(ce)
		return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_ERROR, Error: b}, true)
	}
	if r.GetSubscribe() {
		return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_COMPLETED}, true)
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: b}, true)
}

func invokeSafely(ctx context.Context, h Handler, c *Call) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, &CallError{Code: "INTERNAL", Message: "internal error"}
		}
	}()
	return h.Invoke(ctx, c)
}

func (s *server) Health(context.Context, *pluginpb.Empty) (*pluginpb.HealthResponse, error) {
	return &pluginpb.HealthResponse{Status: "ok"}, nil
}
