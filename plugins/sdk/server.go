package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"alknet.dev/alknet/plugins/sdk/internal/hook"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

func init() {
	hook.NewServer = func(p any) (func(pluginrpc.HostDialer) pluginpb.PluginServer, *pluginpb.Manifest, error) {
		pl, ok := p.(Plugin)
		if !ok {
			return nil, nil, fmt.Errorf("%T is not an sdk.Plugin (it has no Info method)", p)
		}
		s, err := newServer(pl)
		if err != nil {
			return nil, nil, err
		}
		return func(dial pluginrpc.HostDialer) pluginpb.PluginServer {
			fresh, _ := newServer(pl) // succeeded once for this value
			fresh.dial = dial
			return fresh
		}, s.manifest, nil
	}
}

// server is the plugin side of the protocol: it answers the node's
// Plugin service for one plugin value.
type server struct {
	pluginpb.UnimplementedPluginServer
	manifest *pluginpb.Manifest
	connSrv  ConnServer
	ops      map[string]*Op
	cfg      Configurer
	dial     pluginrpc.HostDialer

	mu    sync.Mutex
	host  *Host
	conns map[uint64]*Conn
}

// newServer checks p and builds its manifest.
func newServer(p Plugin) (*server, error) {
	info := p.Info()
	s := &server{ops: map[string]*Op{}, conns: map[uint64]*Conn{}}
	s.connSrv, _ = p.(ConnServer)
	s.cfg, _ = p.(Configurer)
	if len(info.ALPNs) > 0 && s.connSrv == nil {
		return nil, fmt.Errorf("plugin %s serves ALPNs %v but has no ServeConn method (sdk.ConnServer)", info.Name, info.ALPNs)
	}
	m := &pluginpb.Manifest{Name: info.Name, Version: info.Version, Description: info.Description, Alpns: info.ALPNs, Namespaces: info.Namespaces}
	for _, v := range info.ProtocolVersions {
		m.ProtocolVersions = append(m.ProtocolVersions, uint32(v))
	}
	if len(m.ProtocolVersions) == 0 {
		m.ProtocolVersions = []uint32{ProtocolVersion}
	}
	var err error
	if m.ConfigSchema, err = schemaValue(info.ConfigSchema); err != nil {
		return nil, fmt.Errorf("plugin %s: config schema: %w", info.Name, err)
	}
	for _, c := range info.Capabilities {
		m.Capabilities = append(m.Capabilities, &pluginpb.CapabilitySpec{Name: c.Name, Required: c.Required, Description: c.Description})
	}
	if set, ok := p.(OperationSet); ok {
		for _, op := range set.Operations() {
			name := strings.TrimPrefix(op.name, "/")
			if op.err != nil {
				return nil, fmt.Errorf("plugin %s: operation %s: %w", info.Name, name, op.err)
			}
			if op.serve == nil {
				return nil, fmt.Errorf("plugin %s: operation %s has no handler; build it with sdk.Query, sdk.Mutation or sdk.Subscription", info.Name, name)
			}
			if _, dup := s.ops[name]; dup {
				return nil, fmt.Errorf("plugin %s: operation %s is listed twice", info.Name, name)
			}
			spec, err := op.spec(name)
			if err != nil {
				return nil, fmt.Errorf("plugin %s: operation %s: %w", info.Name, name, err)
			}
			m.Operations = append(m.Operations, spec)
			o := op
			s.ops[name] = &o
		}
	}
	s.manifest = m
	return s, nil
}

func (o *Op) spec(name string) (*pluginpb.OperationSpec, error) {
	spec := &pluginpb.OperationSpec{Name: name, OpType: string(o.typ), Visibility: string(o.visibility), RemoteSafe: o.remoteSafe,
		Description: o.description, Env: o.env, ActsAsCaller: o.actsAsCaller,
		AccessControl: &pluginpb.AccessControl{RequiredScopes: o.access.RequiredScopes, RequiredScopesAny: o.access.RequiredScopesAny,
			ResourceType: o.access.ResourceType, ResourceAction: o.access.ResourceAction}}
	var err error
	if spec.InputSchema, err = schemaValue(o.inputSchema); err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	if spec.OutputSchema, err = schemaValue(o.outputSchema); err != nil {
		return nil, fmt.Errorf("output schema: %w", err)
	}
	for _, e := range o.errors {
		es := &pluginpb.ErrorSpec{Code: string(e.Code), Description: e.Description, HttpStatus: uint32(e.HTTPStatus)}
		if es.Schema, err = schemaValue(e.Schema); err != nil {
			return nil, fmt.Errorf("error %s schema: %w", e.Code, err)
		}
		spec.ErrorSchemas = append(spec.ErrorSchemas, es)
	}
	return spec, nil
}

// schemaValue carries a JSON Schema document in the manifest.
func schemaValue(raw json.RawMessage) (*structpb.Value, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var v structpb.Value
	if err := protojson.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

func (s *server) Describe(context.Context, *pluginpb.Empty) (*pluginpb.Manifest, error) {
	return s.manifest, nil
}

func (s *server) Configure(ctx context.Context, r *pluginpb.ConfigureRequest) (*pluginpb.Empty, error) {
	setLogLevel(r.GetNode().GetLogLevel())
	s.mu.Lock()
	host := s.host
	s.mu.Unlock()
	if r.GetHostBrokerId() != 0 {
		cc, err := s.dial(r.GetHostBrokerId())
		if err != nil {
			return nil, err
		}
		host = &Host{c: pluginpb.NewHostClient(cc), stateDir: r.GetStateDir(), nodeID: r.GetNode().GetId()}
		s.mu.Lock()
		s.host = host
		s.mu.Unlock()
	}
	if host == nil {
		return nil, status.Error(codes.FailedPrecondition, "configure: no host connection yet")
	}
	if s.cfg == nil {
		return &pluginpb.Empty{}, nil
	}
	settings := json.RawMessage(r.GetSettings())
	if len(settings) == 0 {
		settings = json.RawMessage("{}")
	}
	if err := s.cfg.Configure(ctx, settings, host); err != nil {
		if errors.Is(err, ErrRestartRequired) {
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pluginpb.Empty{}, nil
}

func (s *server) OpenConnection(_ context.Context, r *pluginpb.OpenConnectionRequest) (*pluginpb.Empty, error) {
	s.mu.Lock()
	host := s.host
	s.mu.Unlock()
	if host == nil {
		return nil, status.Error(codes.FailedPrecondition, "not configured")
	}
	if s.connSrv == nil {
		return nil, status.Error(codes.Unimplemented, "this plugin serves no connections")
	}
	a := r.GetAuth()
	c := newConn(r.GetConn(), host, Auth{Identity: identityFrom(a.GetIdentity()), Fingerprint: a.GetFingerprint(), ALPN: a.GetAlpn(), RemoteAddr: a.GetRemoteAddr(), Transport: a.GetTransport()},
		capsFromProto(r.GetCapabilities()))
	ctx := c.ctx
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
					logger.Error("panic serving a connection", "alpn", c.auth.ALPN, "panic", fmt.Sprint(p))
					code, reason = 4, "internal"
				}
			}()
			if err := s.connSrv.ServeConn(ctx, c); err != nil {
				logger.Warn("connection handler failed", "alpn", c.auth.ALPN, "remote_addr", c.auth.RemoteAddr, "error", err)
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
	c := s.conns[r.GetConn()]
	s.mu.Unlock()
	if c != nil {
		c.cancel()
	}
	return &pluginpb.Empty{}, nil
}

// Calls serves every operation call of the node on one long-lived stream
// (docs/spec/plugins.md §3): requests and aborts in, results out,
// correlated by the call's handle. Calls run concurrently; the stream's
// end cancels them all.
func (s *server) Calls(st grpc.BidiStreamingServer[pluginpb.CallFrame, pluginpb.CallFrame]) error {
	var sendMu sync.Mutex
	// No bound of its own: the core bounds the calls it sends.
	pluginrpc.ServeFrames(st.Context(), 0, st.Recv, func(ctx context.Context, calls *pluginrpc.Calls, f *pluginpb.CallFrame) {
		id, req := f.GetId(), f.GetRequest()
		if req == nil {
			return
		}
		if err := calls.Start(ctx, id, 0, func(ctx context.Context) {
			s.serveCall(ctx, id, req, func(res *pluginpb.InvokeResult, last bool) error {
				sendMu.Lock()
				defer sendMu.Unlock()
				return st.Send(&pluginpb.CallFrame{Id: id, Result: res, Last: last})
			})
		}); err != nil {
			logger.Error("the node started a call twice", "id", id, "error", err)
		}
	})
	return nil
}

// serveCall runs one operation call; send gets every result, last marks
// the one that ends the call.
func (s *server) serveCall(ctx context.Context, handle uint64, r *pluginpb.InvokeRequest, send func(*pluginpb.InvokeResult, bool) error) {
	s.mu.Lock()
	host := s.host
	s.mu.Unlock()
	c := &Call{Operation: r.GetOperation(), RequestID: r.GetRequestId(), Identity: identityFrom(r.GetIdentity()),
		ForwardedFor: identityFrom(r.GetForwardedFor()), Internal: r.GetInternal(), Capabilities: capsFromProto(r.GetCapabilities()),
		handle: handle, host: host}
	input := json.RawMessage(r.GetInput())
	if len(input) == 0 {
		input = json.RawMessage("null")
	}
	var mu sync.Mutex
	emit := func(item any) error {
		b, err := json.Marshal(item)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		mu.Lock()
		defer mu.Unlock()
		return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: b}, false)
	}
	out, err := s.run(ctx, c, input, emit)
	mu.Lock()
	defer mu.Unlock()
	if err == nil && !r.GetSubscribe() {
		var b []byte
		if b, err = json.Marshal(out); err == nil {
			_ = send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: b}, true)
			return
		}
		logger.Error("cannot encode the output", "operation", c.Operation, "error", err)
	}
	if err != nil {
		_ = send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_ERROR, Error: callError(c.Operation, err)}, true)
		return
	}
	_ = send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_COMPLETED}, true)
}

// run finds the operation and calls its handler, recovering a panic.
func (s *server) run(ctx context.Context, c *Call, input json.RawMessage, emit func(any) error) (out any, err error) {
	op, ok := s.ops[strings.TrimPrefix(c.Operation, "/")]
	if !ok {
		return nil, Errorf(CodeNotFound, "operation not found: %s", strings.TrimPrefix(c.Operation, "/"))
	}
	defer func() {
		if p := recover(); p != nil {
			logger.Error("operation handler panic", "operation", c.Operation, "panic", fmt.Sprint(p))
			out, err = nil, Errorf(CodeInternal, "internal error")
		}
	}()
	return op.serve(ctx, c, input, emit)
}

// callError is the wire form of a handler's error: an *Error as it is,
// a cancelled context as "request cancelled", anything else logged and
// reported as "internal error".
func callError(op string, err error) *pluginpb.CallError {
	var e *Error
	if !errors.As(err, &e) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			e = Errorf(CodeInternal, "request cancelled")
		} else {
			logger.Warn("operation failed", "operation", op, "error", err)
			e = Errorf(CodeInternal, "internal error")
		}
	}
	p := &pluginpb.CallError{Code: string(e.Code), Message: e.Message, Retryable: e.Retryable}
	if e.Details != nil {
		p.Details, _ = json.Marshal(e.Details)
	}
	return p
}

func (s *server) Health(context.Context, *pluginpb.Empty) (*pluginpb.HealthResponse, error) {
	return &pluginpb.HealthResponse{Status: "ok"}, nil
}
