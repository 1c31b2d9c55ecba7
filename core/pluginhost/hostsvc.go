package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// hostService is the Host gRPC service one plugin instance talks to. Every
// RPC names what it acts on by handle, and only handles of this instance
// that are still open are accepted (docs/architecture.md D15): a plugin
// cannot reach another plugin's connections or calls, nor act after the
// connection or call it served has ended, nor state an identity.
type hostService struct {
	pluginpb.UnimplementedHostServer
	h  *Host
	in *instance
}

func notServing(id uint64) error {
	return status.Errorf(codes.PermissionDenied, "handle %d is not a connection, call or session this plugin is serving", id)
}

// Stream carries one stream of a connection: the plugin's first message
// names the connection and whether to accept the peer's next stream or
// open a new one; the core answers opened once the stream exists, then
// bridges it.
func (s *hostService) Stream(rpc grpc.BidiStreamingServer[pluginpb.Chunk, pluginpb.Chunk]) error {
	first, err := rpc.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil || len(first.GetData()) > 0 || first.GetFin() || first.GetReset_() {
		return status.Error(codes.InvalidArgument, "the first message of a stream must name it (open) and carry nothing else")
	}
	ch, ok := s.in.lookupConn(open.GetConn())
	if !ok {
		return notServing(open.GetConn())
	}
	var st endpoint.Stream
	if open.GetAccept() {
		if !take(&ch.accepts, maxPendingAccepts) {
			return status.Errorf(codes.ResourceExhausted, "connection %d has %d accepts waiting already; accept one stream at a time", open.GetConn(), maxPendingAccepts)
		}
		// Draining ends the plugin's accept loop; streams in progress go on.
		actx, cancel := context.WithCancel(rpc.Context())
		go func() {
			// Owned by this accept: ends with it.
			select {
			case <-ch.drain.Done():
			case <-ch.done:
			case <-actx.Done():
			}
			cancel()
		}()
		st, err = ch.conn.AcceptStream(actx)
		cancel()
		ch.accepts.Add(-1)
		if err != nil {
			return status.Errorf(codes.Unavailable, "connection closed or draining: %v", err)
		}
	} else {
		st, err = ch.conn.OpenStream(rpc.Context())
		if err != nil {
			return status.Errorf(codes.Unavailable, "open stream: %v", err)
		}
	}
	if err := rpc.Send(&pluginpb.Chunk{Opened: true}); err != nil {
		// The plugin gave up on this stream: nothing may stay open.
		st.CancelRead(uint64(endpoint.CodeUnavailable))
		st.CancelWrite(uint64(endpoint.CodeUnavailable))
		return err
	}
	s.in.active.Add(1)
	defer s.in.active.Add(-1)
	bridge(st, rpc)
	return nil
}

func (s *hostService) CloseConnection(_ context.Context, r *pluginpb.CloseConnectionRequest) (*pluginpb.Empty, error) {
	if ch, ok := s.in.lookupConn(r.GetConn()); ok {
		ch.finish(r.GetCode(), r.GetReason())
	}
	return &pluginpb.Empty{}, nil
}

// pluginAuthority is the identity a plugin's nested calls run with: the
// composition authority of its registrations (docs/spec/call.md §5).
func (s *hostService) pluginAuthority() *auth.Identity {
	return &auth.Identity{ID: "plugin:" + s.in.name}
}

// Invoke is a call the plugin makes through the registry, acting as a
// handle: from a running call of its own, a nested call limited to that
// operation's env (internal, with the plugin's authority, within the
// call's deadline and cancelled with it); from a connection or session, a
// call as its identity through every gate a wire call passes.
func (s *hostService) Invoke(r *pluginpb.HostInvokeRequest, st grpc.ServerStreamingServer[pluginpb.InvokeResult]) error {
	if !take(&s.in.invokes, maxHostInvokes) {
		return status.Errorf(codes.ResourceExhausted, "plugin %s runs %d Host.Invoke calls already; end some first", s.in.name, maxHostInvokes)
	}
	defer s.in.invokes.Add(-1)
	return s.invoke(st.Context(), r, st.Send)
}

// maxHostCallsPerStream bounds the calls one Invokes stream runs at once
// (each holds a goroutine of the core).
const maxHostCallsPerStream = 4096

// Invokes serves the plugin's calls on one long-lived stream (the SDK's
// way; docs/spec/plugins.md §3): each request frame starts a call, run as
// Invoke runs it, whose results go back with its id, the last one marked;
// an abort frame cancels it; the stream's end cancels them all.
func (s *hostService) Invokes(st grpc.BidiStreamingServer[pluginpb.HostCallFrame, pluginpb.HostCallFrame]) error {
	var sendMu sync.Mutex
	send := func(f *pluginpb.HostCallFrame) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return st.Send(f)
	}
	pluginrpc.ServeFrames(st.Context(), maxHostCallsPerStream, st.Recv, func(ctx context.Context, calls *pluginrpc.Calls, f *pluginpb.HostCallFrame) {
		id, req := f.GetId(), f.GetRequest()
		if req == nil {
			return
		}
		err := calls.Start(ctx, id, time.Duration(f.GetTimeoutMicros())*time.Microsecond, func(ctx context.Context) {
			sub := req.GetSubscribe()
			err := s.invoke(ctx, req, func(res *pluginpb.InvokeResult) error {
				// A subscription's items go out as they come; the result
				// that ends the call is marked last.
				last := !sub || res.GetKind() != pluginpb.InvokeResult_RESPONDED
				return send(&pluginpb.HostCallFrame{Id: id, Result: res, Last: last})
			})
			if err != nil {
				st, _ := status.FromError(err)
				_ = send(&pluginpb.HostCallFrame{Id: id, Last: true, StatusCode: uint32(st.Code()), StatusMessage: st.Message()})
			}
		})
		switch {
		case errors.Is(err, pluginrpc.ErrCallRunning):
			_ = send(&pluginpb.HostCallFrame{Id: id, Last: true, StatusCode: uint32(codes.InvalidArgument),
				StatusMessage: "call id " + strconv.FormatUint(id, 10) + " is already running"})
		case err != nil:
			_ = send(&pluginpb.HostCallFrame{Id: id, Last: true, StatusCode: uint32(codes.ResourceExhausted),
				StatusMessage: "more than " + strconv.Itoa(maxHostCallsPerStream) + " calls at once on one stream"})
		}
	})
	return nil
}

// invoke runs one call of the plugin's (Invoke, Invokes): results go to
// send; an error is a gRPC status for a call that could not run at all.
func (s *hostService) invoke(pctx context.Context, r *pluginpb.HostInvokeRequest, send func(*pluginpb.InvokeResult) error) error {
	a, err := s.in.actorOf(r.GetAs())
	if err != nil {
		return notServing(r.GetAs())
	}
	name := trimSlash(r.GetOperation())
	ctx, cancel := context.WithCancel(pctx)
	defer cancel()
	defer context.AfterFunc(a.ctx, cancel)()
	inv := call.Invocation{Name: name, Input: r.GetInput(), Identity: a.identity, RequestID: uuid.NewString(), Subscribe: r.GetSubscribe()}
	switch {
	case r.GetAsCaller():
		// As the caller of a call being served: the caller's identity
		// and every gate of a call from the network, within the call's
		// deadline and cancelled with it — only for an operation that
		// declares it (docs/spec/plugins.md §4).
		if a.call == nil {
			return status.Error(codes.FailedPrecondition, "as_caller: the actor is not a call this plugin is serving")
		}
		if !a.call.actsAsCaller {
			return status.Errorf(codes.FailedPrecondition, "as_caller: the operation of call %s does not declare acts_as_caller", a.call.requestID)
		}
		if d, ok := a.call.ctx.Deadline(); ok {
			var c context.CancelFunc
			ctx, c = context.WithDeadline(ctx, d)
			defer c()
		}
		inv.ParentID = a.call.requestID
	case a.call != nil:
		if !slices.Contains(a.call.env, name) {
			return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_ERROR, Error: callErrorProto(call.NotFound(name))})
		}
		if d, ok := a.call.ctx.Deadline(); ok {
			var c context.CancelFunc
			ctx, c = context.WithDeadline(ctx, d)
			defer c()
		}
		inv.Identity, inv.Internal, inv.ParentID = s.pluginAuthority(), true, a.call.requestID
	}
	id := inv.RequestID
	emit := func(b json.RawMessage) error {
		return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: b, RequestId: id})
	}
	out, cerr := s.h.opts.Registry.Invoke(ctx, inv, emit)
	if cerr != nil {
		return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_ERROR, Error: callErrorProto(cerr), RequestId: id})
	}
	if r.GetSubscribe() {
		return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_COMPLETED, RequestId: id})
	}
	return send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: out, RequestId: id})
}

func trimSlash(s string) string {
	if len(s) > 0 && s[0] == '/' {
		return s[1:]
	}
	return s
}

// DialInternal connects the plugin to another handler of the node, acting
// as a handle it serves: the target sees that handle's identity, and the
// internal connection ends when the handle does.
func (s *hostService) DialInternal(_ context.Context, r *pluginpb.DialInternalRequest) (*pluginpb.ConnRef, error) {
	a, err := s.in.actorOf(r.GetAs())
	if err != nil {
		return nil, notServing(r.GetAs())
	}
	if !take(&s.in.dialed, maxDialedConns) {
		return nil, s.tooManyDialed()
	}
	client, server := endpoint.Pipe(r.GetAlpn())
	ac := auth.AuthContext{Identity: a.identity, ALPN: r.GetAlpn(), RemoteAddr: server.RemoteAddr(), Transport: server.Transport()}
	if err := s.h.opts.Endpoint.ServeInternal(server, ac); err != nil {
		s.in.dialed.Add(-1)
		return nil, status.Errorf(codes.NotFound, "%v; install the plugin that serves it (alknet plugin install …)", err)
	}
	return &pluginpb.ConnRef{Conn: s.adopt(client, a)}, nil
}

func (s *hostService) tooManyDialed() error {
	return status.Errorf(codes.ResourceExhausted, "plugin %s holds %d dialed connections open already; close some first", s.in.name, maxDialedConns)
}

// adopt hands the plugin a connection it dialed, acting as a: it closes
// when either side, the handle it acts as or the plugin ends, and then
// gives back its place among the dialed connections.
func (s *hostService) adopt(client endpoint.Conn, a actor) uint64 {
	ch := &connHandle{conn: client, identity: a.identity, drain: s.in.ctx, done: make(chan struct{})}
	id := s.in.addConn(ch)
	go func() {
		// Owned by the dialed connection: ends when either side, the
		// handle it acts as or the plugin ends.
		defer s.in.dialed.Add(-1)
		select {
		case <-ch.done:
		case <-client.Context().Done():
		case <-a.ctx.Done():
		case <-s.in.ctx.Done():
		}
		_ = client.CloseWithError(endpoint.CloseCode(ch.code), ch.reason)
	}()
	return id
}

// DialPeer connects the plugin, as this node, to another node on one of
// the plugin's own ALPNs (docs/spec/plugins.md §3): its own protocol
// elsewhere, never another handler, and always to a pinned peer.
func (s *hostService) DialPeer(ctx context.Context, r *pluginpb.DialPeerRequest) (*pluginpb.ConnRef, error) {
	a, err := s.in.actorOf(r.GetAs())
	if err != nil {
		return nil, notServing(r.GetAs())
	}
	if !slices.Contains(s.in.manifest.GetAlpns(), r.GetAlpn()) {
		return nil, status.Errorf(codes.FailedPrecondition, "plugin %s may dial other nodes only on its own ALPNs %v, not %q", s.in.name, s.in.manifest.GetAlpns(), r.GetAlpn())
	}
	if s.h.opts.DialPeer == nil {
		return nil, status.Error(codes.Unavailable, "this node does not dial other nodes for plugins")
	}
	if !take(&s.in.dialed, maxDialedConns) {
		return nil, s.tooManyDialed()
	}
	dctx, cancel := context.WithTimeout(ctx, dialPeerTimeout)
	defer cancel()
	conn, err := s.h.opts.DialPeer(dctx, r.GetTarget(), r.GetAlpn())
	if err != nil {
		s.in.dialed.Add(-1)
		return nil, status.Errorf(codes.Unavailable, "dial %s on %s: %v", r.GetTarget(), r.GetAlpn(), err)
	}
	id := ""
	if a.identity != nil {
		id = a.identity.ID
	}
	s.in.log.Info("plugin dialed a peer", "target", r.GetTarget(), "alpn", r.GetAlpn(), "for", id)
	return &pluginpb.ConnRef{Conn: s.adopt(conn, a)}, nil
}

// dialPeerTimeout bounds DialPeer's handshake.
const dialPeerTimeout = 15 * time.Second

// Authenticate resolves a credential presented on a connection the plugin
// serves, under the node's current auth configuration, and binds the
// identity to a session handle that lives no longer than the connection.
func (s *hostService) Authenticate(_ context.Context, r *pluginpb.AuthenticateRequest) (*pluginpb.AuthenticateResponse, error) {
	ch, ok := s.in.lookupConn(r.GetConn())
	if !ok {
		return nil, notServing(r.GetConn())
	}
	var pol *auth.Policy
	if s.h.opts.Policy != nil {
		pol = s.h.opts.Policy()
	}
	var id *auth.Identity
	switch r.GetKind() {
	case "ssh_key":
		id = pol.ResolveSSHKey(r.GetCredential())
	case "tls":
		id = pol.ResolveFingerprint(r.GetCredential())
	case "token":
		id = pol.ResolveToken(r.GetCredential(), time.Now())
	default:
		return nil, status.Errorf(codes.InvalidArgument, "unknown credential kind %q (ssh_key, tls, token)", r.GetKind())
	}
	if id == nil {
		return &pluginpb.AuthenticateResponse{}, nil
	}
	h, ok := s.in.addSession(ch, id)
	if !ok {
		return nil, status.Errorf(codes.ResourceExhausted, "connection %d holds %d sessions already; end some (EndSession)", r.GetConn(), maxSessionsPerConn)
	}
	return &pluginpb.AuthenticateResponse{Identity: identityProto(id), Session: h}, nil
}

// EndSession releases a session handle.
func (s *hostService) EndSession(_ context.Context, r *pluginpb.SessionRef) (*pluginpb.Empty, error) {
	s.in.endSession(r.GetSession())
	return &pluginpb.Empty{}, nil
}
