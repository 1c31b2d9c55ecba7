package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
)

// hostService is the Host gRPC service one plugin instance talks to.
type hostService struct {
	pluginpb.UnimplementedHostServer
	h  *Host
	in *instance
}

func (s *hostService) conn(id uint64) (*bridgedConn, error) {
	v, ok := s.in.conns.Load(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "connection %d is closed", id)
	}
	return v.(*bridgedConn), nil
}

func (s *hostService) register(bc *bridgedConn, connID uint64, st endpoint.Stream) *pluginpb.StreamRef {
	sid := s.in.nextID.Add(1)
	s.in.streams.Store(streamKey{connID, sid}, st)
	return &pluginpb.StreamRef{ConnId: connID, StreamId: sid}
}

func (s *hostService) AcceptStream(ctx context.Context, r *pluginpb.ConnRef) (*pluginpb.StreamRef, error) {
	bc, err := s.conn(r.GetConnId())
	if err != nil {
		return nil, err
	}
	// Draining ends the plugin's accept loop; streams in progress go on.
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-bc.drain.Done():
		case <-bc.done:
		case <-actx.Done():
		}
		cancel()
	}()
	st, err := bc.conn.AcceptStream(actx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "connection closed or draining: %v", err)
	}
	return s.register(bc, r.GetConnId(), st), nil
}

func (s *hostService) OpenStream(ctx context.Context, r *pluginpb.ConnRef) (*pluginpb.StreamRef, error) {
	bc, err := s.conn(r.GetConnId())
	if err != nil {
		return nil, err
	}
	st, err := bc.conn.OpenStream(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "open stream: %v", err)
	}
	return s.register(bc, r.GetConnId(), st), nil
}

// Stream bridges one endpoint stream and one gRPC stream, both ways, with
// half-close and reset preserved and flow control end to end.
func (s *hostService) Stream(rpc grpc.BidiStreamingServer[pluginpb.Chunk, pluginpb.Chunk]) error {
	md, _ := metadata.FromIncomingContext(rpc.Context())
	cid, err1 := strconv.ParseUint(first(md.Get(pluginpb.MetaConnID)), 10, 64)
	sid, err2 := strconv.ParseUint(first(md.Get(pluginpb.MetaStreamID)), 10, 64)
	if err1 != nil || err2 != nil {
		return status.Error(codes.InvalidArgument, "stream reference missing")
	}
	v, ok := s.in.streams.LoadAndDelete(streamKey{cid, sid})
	if !ok {
		return status.Errorf(codes.NotFound, "stream %d/%d unknown", cid, sid)
	}
	st := v.(endpoint.Stream)
	s.in.active.Add(1)
	defer s.in.active.Add(-1)
	return bridge(st, rpc)
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// bridge copies both directions until both are finished.
func bridge(st endpoint.Stream, rpc grpc.BidiStreamingServer[pluginpb.Chunk, pluginpb.Chunk]) error {
	done := make(chan struct{}, 2)
	go func() {
		// peer → plugin. Owned by bridge.
		defer func() { done <- struct{}{} }()
		buf := make([]byte, pluginpb.ChunkSize)
		for {
			n, err := st.Read(buf)
			if n > 0 {
				if rpc.Send(&pluginpb.Chunk{Data: buf[:n]}) != nil {
					st.CancelRead(uint64(endpoint.CodeUnavailable))
					return
				}
			}
			if errors.Is(err, io.EOF) {
				_ = rpc.Send(&pluginpb.Chunk{Fin: true})
				return
			}
			if err != nil {
				_ = rpc.Send(&pluginpb.Chunk{Reset_: true, Code: resetCode(err)})
				return
			}
		}
	}()
	go func() {
		// plugin → peer. Owned by bridge.
		defer func() { done <- struct{}{} }()
		for {
			c, err := rpc.Recv()
			if err != nil {
				// The plugin went away mid-stream.
				st.CancelWrite(uint64(endpoint.CodeUnavailable))
				st.CancelRead(uint64(endpoint.CodeUnavailable))
				return
			}
			if len(c.GetData()) > 0 {
				_, err := st.Write(c.GetData())
				pluginpb.ReleaseChunkData(c.GetData())
				if err != nil {
					st.CancelRead(0)
					return
				}
			}
			if c.GetReset_() {
				st.CancelWrite(c.GetCode())
				return
			}
			if c.GetFin() {
				_ = st.CloseWrite()
				return
			}
		}
	}()
	<-done
	<-done
	return nil
}

// resetCode extracts a peer's reset code from a stream error.
func resetCode(err error) uint64 {
	var re *endpoint.ResetError
	if errors.As(err, &re) {
		return re.Code
	}
	return 0
}

func (s *hostService) CloseConnection(_ context.Context, r *pluginpb.CloseConnectionRequest) (*pluginpb.Empty, error) {
	bc, err := s.conn(r.GetConnId())
	if err != nil {
		return &pluginpb.Empty{}, nil
	}
	bc.finish(r.GetCode(), r.GetReason())
	return &pluginpb.Empty{}, nil
}

// Invoke is a nested call from a running plugin operation: allowed only for
// names in that operation's env, run internal with the plugin's authority.
func (s *hostService) Invoke(r *pluginpb.InvokeRequest, st grpc.ServerStreamingServer[pluginpb.InvokeResult]) error {
	v, ok := s.in.calls.Load(r.GetParentId())
	name := call.Errorf(call.CodeNotFound, "operation not found: %s", r.GetOperation())
	if !ok || !slices.Contains(v.(*inflight).env, trimSlash(r.GetOperation())) {
		return sendError(st, name)
	}
	authority := &auth.Identity{ID: "plugin:" + s.in.name}
	emit := func(b json.RawMessage) error {
		return st.Send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: b})
	}
	out, cerr := s.h.opts.Registry.Invoke(st.Context(), call.Invocation{Name: r.GetOperation(), Input: r.GetInput(), Identity: authority,
		Internal: true, ParentID: r.GetParentId(), Subscribe: r.GetSubscribe()}, emit)
	if cerr != nil {
		return sendError(st, cerr)
	}
	if r.GetSubscribe() {
		return st.Send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_COMPLETED})
	}
	return st.Send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: out})
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}

func sendError(st grpc.ServerStreamingServer[pluginpb.InvokeResult], e *call.Error) error {
	b, _ := json.Marshal(e)
	return st.Send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_ERROR, Error: b})
}

// DialInternal connects the plugin to another handler of the node.
func (s *hostService) DialInternal(_ context.Context, r *pluginpb.DialInternalRequest) (*pluginpb.ConnRef, error) {
	var id *auth.Identity
	if len(r.GetIdentity()) > 0 {
		id = &auth.Identity{}
		if json.Unmarshal(r.GetIdentity(), id) != nil {
			id = nil
		}
	}
	client, server := endpoint.Pipe(r.GetAlpn())
	if err := s.h.opts.Endpoint.ServeInternal(server, id); err != nil {
		return nil, status.Errorf(codes.NotFound, "%v; install the plugin that serves it (alknet plugin install …)", err)
	}
	cid := s.in.nextID.Add(1)
	bc := &bridgedConn{conn: client, drain: s.in.ctx, done: make(chan struct{})}
	s.in.conns.Store(cid, bc)
	go func() {
		// Owned by the internal connection: ends when either side closes.
		select {
		case <-bc.done:
		case <-client.Context().Done():
		case <-s.in.ctx.Done():
		}
		_ = client.CloseWithError(0, "")
		s.in.conns.Delete(cid)
	}()
	return &pluginpb.ConnRef{ConnId: cid}, nil
}

// ResolveIdentity maps a credential to an identity under the current
// auth policy (SSH keys for the SSH plugin, tokens for HTTP, …).
func (s *hostService) ResolveIdentity(_ context.Context, r *pluginpb.ResolveRequest) (*pluginpb.ResolveResponse, error) {
	if s.h.opts.Policy == nil {
		return &pluginpb.ResolveResponse{}, nil
	}
	pol := s.h.opts.Policy()
	var id *auth.Identity
	switch r.GetKind() {
	case "ssh_key":
		id = pol.ResolveSSHKey(r.GetValue())
	case "tls":
		id = pol.ResolveFingerprint(r.GetValue())
	case "token":
		id = pol.ResolveToken(r.GetValue(), time.Now())
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown credential kind %q", r.GetKind())
	}
	return &pluginpb.ResolveResponse{Identity: identityJSON(id)}, nil
}
