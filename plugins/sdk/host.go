package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"alknet.dev/alknet/proto/pluginpb"
)

// Host is the plugin's handle on the node: nested calls through the
// node's registry, internal connections to other handlers, and
// credentials resolved to identities.
//
// Everything the plugin does through Host acts as an Actor — a *Call or a
// *Conn the plugin is serving, or a *Session — and only while it is open;
// the node attaches that actor's identity (docs/architecture.md D15).
type Host struct {
	c        pluginpb.HostClient
	stateDir string
	nodeID   string

	muxMu  sync.Mutex
	muxCur *invokeMux // queries and mutations (hostmux.go)
	noMux  bool       // the node lacks Host.Invokes
}

// NodeID is the fingerprint of the node running the plugin
// ("ed25519:<hex>"), the name its peers pin it by.
func (h *Host) NodeID() string { return h.nodeID }

// StateDir is the plugin's own directory for data it keeps between runs
// (<data>/<plugin name>, mode 0700, created by the node), or "" when the
// node gives it none (docs/spec/plugins.md §9).
func (h *Host) StateDir() string { return h.stateDir }

// Actor is what a nested call or an internal dial acts as: a *Call the
// plugin is answering, a *Conn it is serving or a *Session.
type Actor interface {
	actorHandle() uint64
}

// AsCaller is call as an Actor that acts as the call's caller rather than
// as a nested call: Host.Invoke and Host.Subscribe then run with the
// caller's identity through every gate a call from the network meets,
// within the call's deadline and cancelled with it. Only a call of an
// operation declared with Op.ActsAsCaller may (otherwise the node answers
// FAILED_PRECONDITION).
func AsCaller(call *Call) Actor { return callerActor{call} }

type callerActor struct{ c *Call }

func (a callerActor) actorHandle() uint64 { return a.c.actorHandle() }

// ErrNotServing is returned for an actor the plugin no longer serves (a
// call that ended, a connection that closed).
var ErrNotServing = errors.New("not a connection, call or session this plugin is serving")

// Logger is the plugin's logger (the same as the package's Logger).
func (h *Host) Logger() hclog.Logger { return logger }

// Invoke calls an operation of the node as as. From a *Call, it is a
// nested call: op must be in the operation's env (Op.CanCall), and it runs
// with the plugin's authority within the call's deadline, cancelled with
// it. From a *Conn or *Session it is a call as that identity, through the
// same gates as a call from the network; from AsCaller(call), a call as
// that call's caller. Errors are *Error values (or ErrNotServing).
func (h *Host) Invoke(ctx context.Context, as Actor, op string, input any) (json.RawMessage, error) {
	_, out, err := h.InvokeWithID(ctx, as, op, input)
	return out, err
}

// InvokeWithID is Invoke that also returns the request id the node gave
// the call ("" when the call never reached the node), for a gateway that
// answers it to its client: the node's logs name the same id.
func (h *Host) InvokeWithID(ctx context.Context, as Actor, op string, input any) (requestID string, out json.RawMessage, err error) {
	err = h.invoke(ctx, as, op, input, false, &requestID, func(b json.RawMessage) error { out = b; return nil })
	return requestID, out, err
}

// Subscribe is Invoke for a subscription: each gets every item; returning
// an error from it ends the subscription.
func (h *Host) Subscribe(ctx context.Context, as Actor, op string, input any, each func(item json.RawMessage) error) error {
	return h.invoke(ctx, as, op, input, true, nil, each)
}

func (h *Host) invoke(ctx context.Context, as Actor, op string, input any, sub bool, requestID *string, each func(json.RawMessage) error) error {
	in, ok := input.(json.RawMessage)
	if !ok || len(in) == 0 {
		var err error
		if in, err = json.Marshal(input); err != nil {
			return Errorf(CodeInvalidInput, "encode input: %v", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, asCaller := as.(callerActor)
	req := &pluginpb.HostInvokeRequest{As: as.actorHandle(), Operation: op, Input: in, Subscribe: sub, AsCaller: asCaller}
	if !sub {
		m, err := h.mux(ctx)
		switch {
		case err == nil:
			r, err := m.call(ctx, req)
			if status.Code(err) != codes.Unimplemented {
				if err != nil {
					return hostError(err)
				}
				return oneResult(r, requestID, each)
			}
			h.muxMu.Lock()
			h.noMux = true
			h.muxMu.Unlock()
		case !errors.Is(err, errNoMux):
			return hostError(err)
		}
	}
	st, err := h.c.Invoke(ctx, req)
	if err != nil {
		return hostError(err)
	}
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return Errorf(CodeInternal, "no answer")
		}
		if err != nil {
			return hostError(err)
		}
		if requestID != nil && r.GetRequestId() != "" {
			*requestID = r.GetRequestId()
		}
		switch r.GetKind() {
		case pluginpb.InvokeResult_RESPONDED:
			if err := each(r.GetOutput()); err != nil {
				return err
			}
			if !sub {
				return nil
			}
		case pluginpb.InvokeResult_ERROR:
			return errorFrom(r.GetError())
		case pluginpb.InvokeResult_COMPLETED:
			return nil
		}
	}
}

// oneResult is the answer of a query or mutation.
func oneResult(r *pluginpb.InvokeResult, requestID *string, each func(json.RawMessage) error) error {
	if requestID != nil && r.GetRequestId() != "" {
		*requestID = r.GetRequestId()
	}
	switch r.GetKind() {
	case pluginpb.InvokeResult_RESPONDED:
		return each(r.GetOutput())
	case pluginpb.InvokeResult_ERROR:
		return errorFrom(r.GetError())
	}
	return Errorf(CodeInternal, "no answer")
}

// hostError turns a failed Host RPC into an error for the plugin.
func hostError(err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied:
		return fmt.Errorf("%w (%s)", ErrNotServing, status.Convert(err).Message())
	case codes.Canceled:
		return context.Canceled
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	}
	return err
}

func errorFrom(p *pluginpb.CallError) *Error {
	e := &Error{Code: Code(p.GetCode()), Message: p.GetMessage(), Retryable: p.GetRetryable()}
	if len(p.GetDetails()) > 0 {
		e.Details = json.RawMessage(p.GetDetails())
	}
	return e
}

// DialInternal connects to another handler of this node by ALPN (the SSH
// plugin's sftp subsystem to alknet/sftp, say), as as: the target sees
// as's identity. The connection closes when as ends; OpenStream on it
// reaches the target handler.
func (h *Host) DialInternal(ctx context.Context, as Actor, alpn string) (*Conn, error) {
	ref, err := h.c.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: alpn, As: as.actorHandle()})
	if err != nil {
		return nil, fmt.Errorf("dial internal %s: %w", alpn, hostError(err))
	}
	return newConn(ref.GetConn(), h, Auth{ALPN: alpn, RemoteAddr: "internal", Transport: "internal"}, Capabilities{}), nil
}

// DialPeer connects to another node, as this node (its identity is what
// the other node resolves and grants scopes to), on one of the plugin's
// own ALPNs — the plugin's protocol elsewhere, never another handler.
// target is "FINGERPRINT@host:port" or the "host:port" of a node in the
// node's known_peers: the peer is always pinned. The connection closes
// when as ends; OpenStream on it reaches the other node's handler.
func (h *Host) DialPeer(ctx context.Context, as Actor, target, alpn string) (*Conn, error) {
	ref, err := h.c.DialPeer(ctx, &pluginpb.DialPeerRequest{Alpn: alpn, As: as.actorHandle(), Target: target})
	if err != nil {
		return nil, fmt.Errorf("dial %s on %s: %w", target, alpn, hostError(err))
	}
	return newConn(ref.GetConn(), h, Auth{ALPN: alpn, RemoteAddr: target, Transport: "peer"}, Capabilities{}), nil
}

// CredentialKind names what Authenticate resolves.
type CredentialKind string

// Credential kinds.
const (
	// CredentialSSHKey is an OpenSSH SHA256:<base64> key fingerprint
	// (ssh.FingerprintSHA256) whose possession the plugin verified.
	CredentialSSHKey CredentialKind = "ssh_key"
	// CredentialTLS is a TLS fingerprint (ed25519:… or SHA256:…).
	CredentialTLS CredentialKind = "tls"
	// CredentialToken is a bearer token.
	CredentialToken CredentialKind = "token"
)

// Session is an identity the node resolved from a credential presented
// on a connection: an Actor for Invoke and DialInternal, valid until Close
// or until its connection closes.
type Session struct {
	Identity *Identity
	handle   uint64
	host     *Host
}

func (s *Session) actorHandle() uint64 { return s.handle }

// Close releases the session.
func (s *Session) Close() error {
	_, err := s.host.c.EndSession(context.Background(), &pluginpb.SessionRef{Session: s.handle})
	return hostError(err)
}

// Authenticate asks the node who credential, presented on c, belongs to,
// under the node's current auth configuration. It returns nil and no
// error when nobody matches: refuse the peer then.
func (h *Host) Authenticate(ctx context.Context, c *Conn, kind CredentialKind, credential string) (*Session, error) {
	r, err := h.c.Authenticate(ctx, &pluginpb.AuthenticateRequest{Conn: c.id, Kind: string(kind), Credential: credential})
	if err != nil {
		return nil, fmt.Errorf("authenticate %s: %w", kind, hostError(err))
	}
	id := identityFrom(r.GetIdentity())
	if id == nil {
		return nil, nil
	}
	return &Session{Identity: id, handle: r.GetSession(), host: h}, nil
}
