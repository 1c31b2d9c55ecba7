// Package sdktest runs a plugin handler in-process, without go-plugin or a
// node, so its connections and operations can be unit-tested. The handler
// runs behind the same gRPC protocol the node uses (over an in-memory
// listener), so what passes here behaves the same under a real node.
package sdktest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/proto/pluginpb"
)

// Harness is a handler under test.
type Harness struct {
	plugin pluginpb.PluginClient
	host   *fakeHost
	nextID atomic.Uint64
	close  func()
}

// Start is New for tests: it fails t on error and closes at t.Cleanup.
func Start(t testing.TB, h sdk.Handler, settings any) *Harness {
	t.Helper()
	hz, err := New(h, settings)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hz.Close)
	return hz
}

// Close stops the harness.
func (h *Harness) Close() { h.close() }

// New configures h with settings (any JSON-marshalable value, or nil) and
// returns a harness; Close stops it.
func New(h sdk.Handler, settings any) (*Harness, error) {
	hostLn := bufconn.Listen(1 << 20)
	pluginLn := bufconn.Listen(1 << 20)
	fh := &fakeHost{conns: map[uint64]*conn{}, streams: map[uint64]*pipeEnd{}}
	hostSrv := grpc.NewServer(sdk.ServerOptions()...)
	pluginpb.RegisterHostServer(hostSrv, fh)
	dial := func(ln *bufconn.Listener) (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///bufnet", append(sdk.DialOptions(),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	}
	pluginSrv := grpc.NewServer(sdk.ServerOptions()...)
	pluginpb.RegisterPluginServer(pluginSrv, sdk.NewPluginServer(h, func(uint32) (*grpc.ClientConn, error) { return dial(hostLn) }))
	go func() { _ = hostSrv.Serve(hostLn) }()
	go func() { _ = pluginSrv.Serve(pluginLn) }()
	cc, err := dial(pluginLn)
	if err != nil {
		return nil, err
	}
	closeAll := func() {
		_ = cc.Close()
		pluginSrv.Stop()
		hostSrv.Stop()
	}
	b, _ := json.Marshal(settings)
	if settings == nil {
		b = []byte("{}")
	}
	hz := &Harness{plugin: pluginpb.NewPluginClient(cc), host: fh, close: closeAll}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := hz.plugin.Configure(ctx, &pluginpb.ConfigureRequest{Settings: b, HostBrokerId: 1}); err != nil {
		closeAll()
		return nil, fmt.Errorf("configure: %w", err)
	}
	return hz, nil
}

// Manifest asks the handler for its manifest over the protocol.
func (h *Harness) Manifest(ctx context.Context) (sdk.Manifest, error) {
	var m sdk.Manifest
	mf, err := h.plugin.Describe(ctx, &pluginpb.Empty{})
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(mf.GetJson(), &m)
}

// Call invokes an operation as the node would, with the given capabilities
// and caller identity (nil: anonymous). For a subscription, every item is
// returned in order.
func (h *Harness) Call(ctx context.Context, op string, input any, caps map[string][]byte, caller *sdk.Identity, subscribe bool) ([]json.RawMessage, error) {
	in, err := json.Marshal(input)
	if err != nil {
		return nil, err
	}
	req := &pluginpb.InvokeRequest{Operation: op, Input: in, RequestId: strconv.FormatUint(h.nextID.Add(1), 10), Subscribe: subscribe}
	for name, v := range caps {
		req.Capabilities = append(req.Capabilities, &pluginpb.Capability{Name: name, Value: v})
	}
	if caller != nil {
		req.Identity, _ = json.Marshal(caller)
	}
	st, err := h.plugin.Invoke(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch r.GetKind() {
		case pluginpb.InvokeResult_RESPONDED:
			out = append(out, r.GetOutput())
		case pluginpb.InvokeResult_ERROR:
			var ce sdk.CallError
			_ = json.Unmarshal(r.GetError(), &ce)
			return out, &ce
		case pluginpb.InvokeResult_COMPLETED:
			return out, nil
		}
	}
}

// Conn is the remote peer's side of a connection routed to the handler.
type Conn struct {
	h  *Harness
	c  *conn
	id uint64
}

// Connect opens a connection for alpn, as if a peer had connected with
// auth (its Identity may be nil) and the node granted caps.
func (h *Harness) Connect(ctx context.Context, auth sdk.Auth, caps map[string][]byte) (*Conn, error) {
	id := h.nextID.Add(1)
	c := &conn{incoming: make(chan *pipeEnd, 16), closed: make(chan struct{})}
	h.host.mu.Lock()
	h.host.conns[id] = c
	h.host.mu.Unlock()
	req := &pluginpb.OpenConnectionRequest{ConnId: id, Auth: &pluginpb.AuthContext{Alpn: auth.ALPN, RemoteAddr: auth.RemoteAddr, Fingerprint: auth.Fingerprint, Transport: auth.Transport}}
	if auth.Identity != nil {
		req.Auth.Identity, _ = json.Marshal(auth.Identity)
	}
	for name, v := range caps {
		req.Capabilities = append(req.Capabilities, &pluginpb.Capability{Name: name, Value: v})
	}
	if _, err := h.plugin.OpenConnection(ctx, req); err != nil {
		return nil, err
	}
	return &Conn{h: h, c: c, id: id}, nil
}

// OpenStream opens a stream to the handler; its ServeConn accepts it.
func (c *Conn) OpenStream() *Stream {
	mine, theirs := newPipe()
	c.c.incoming <- theirs
	return &Stream{p: mine}
}

// Close closes the connection; the handler's AcceptStream fails.
func (c *Conn) Close() {
	c.c.once.Do(func() { close(c.c.closed) })
}

// Closed is done when the handler has closed the connection.
func (c *Conn) Closed() <-chan struct{} { return c.c.closed }

// Stream is the peer's end of one stream.
type Stream struct{ p *pipeEnd }

// Read reads what the handler wrote.
func (s *Stream) Read(b []byte) (int, error) { return s.p.r.Read(b) }

// Write sends bytes to the handler.
func (s *Stream) Write(b []byte) (int, error) { return s.p.w.Write(b) }

// CloseWrite half-closes: the handler reads EOF.
func (s *Stream) CloseWrite() error { return s.p.w.Close() }

// --- the fake host ---

type pipeEnd struct {
	r *io.PipeReader
	w *io.PipeWriter
}

func newPipe() (a, b *pipeEnd) {
	ar, bw := io.Pipe()
	br, aw := io.Pipe()
	return &pipeEnd{r: ar, w: aw}, &pipeEnd{r: br, w: bw}
}

type conn struct {
	incoming chan *pipeEnd
	closed   chan struct{}
	once     sync.Once
}

type fakeHost struct {
	pluginpb.UnimplementedHostServer
	mu      sync.Mutex
	conns   map[uint64]*conn
	streams map[uint64]*pipeEnd
	next    atomic.Uint64
}

func (f *fakeHost) AcceptStream(ctx context.Context, r *pluginpb.ConnRef) (*pluginpb.StreamRef, error) {
	f.mu.Lock()
	c := f.conns[r.GetConnId()]
	f.mu.Unlock()
	if c == nil {
		return nil, status.Error(codes.NotFound, "no such connection")
	}
	select {
	case p := <-c.incoming:
		id := f.next.Add(1)
		f.mu.Lock()
		f.streams[id] = p
		f.mu.Unlock()
		return &pluginpb.StreamRef{ConnId: r.GetConnId(), StreamId: id}, nil
	case <-c.closed:
		return nil, status.Error(codes.Unavailable, "connection closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeHost) CloseConnection(_ context.Context, r *pluginpb.CloseConnectionRequest) (*pluginpb.Empty, error) {
	f.mu.Lock()
	c := f.conns[r.GetConnId()]
	f.mu.Unlock()
	if c != nil {
		c.once.Do(func() { close(c.closed) })
	}
	return &pluginpb.Empty{}, nil
}

func (f *fakeHost) Stream(rpc grpc.BidiStreamingServer[pluginpb.Chunk, pluginpb.Chunk]) error {
	md, _ := metadata.FromIncomingContext(rpc.Context())
	ids := md.Get(pluginpb.MetaStreamID)
	if len(ids) == 0 {
		return status.Error(codes.InvalidArgument, "no stream id")
	}
	id, _ := strconv.ParseUint(ids[0], 10, 64)
	f.mu.Lock()
	p := f.streams[id]
	delete(f.streams, id)
	f.mu.Unlock()
	if p == nil {
		return status.Error(codes.NotFound, "no such stream")
	}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 64<<10)
		for {
			n, err := p.r.Read(buf)
			if n > 0 && rpc.Send(&pluginpb.Chunk{Data: append([]byte(nil), buf[:n]...)}) != nil {
				return
			}
			if err != nil {
				_ = rpc.Send(&pluginpb.Chunk{Fin: true})
				return
			}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			c, err := rpc.Recv()
			if err != nil {
				_ = p.w.CloseWithError(fmt.Errorf("plugin stream: %w", err))
				return
			}
			if len(c.GetData()) > 0 {
				if _, err := p.w.Write(c.GetData()); err != nil {
					return
				}
			}
			if c.GetFin() || c.GetReset_() {
				_ = p.w.Close()
				return
			}
		}
	}()
	<-done
	<-done
	return nil
}
