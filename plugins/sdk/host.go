package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"alknet.dev/alknet/proto/pluginpb"
)

// Host is the plugin's handle on the core: nested calls through the node's
// registry and internal connections to other handlers.
type Host struct {
	c pluginpb.HostClient
}

// CallError is an alknet/call error.
type CallError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	Details   any    `json:"details,omitempty"`
}

func (e *CallError) Error() string { return e.Code + ": " + e.Message }

// Errorf returns a CallError with the given code (NOT_FOUND, FORBIDDEN,
// INVALID_INPUT, INTERNAL, … or one the operation declares).
func Errorf(code, format string, args ...any) *CallError {
	return &CallError{Code: code, Message: fmt.Sprintf(format, args...), Retryable: code == "TIMEOUT"}
}

// Invoke calls an operation of the node on behalf of the running call
// (parentID), which must list it in its manifest env.
func (h *Host) Invoke(ctx context.Context, parentID, op string, input any) (json.RawMessage, error) {
	in, err := json.Marshal(input)
	if err != nil {
		return nil, err
	}
	st, err := h.c.Invoke(ctx, &pluginpb.InvokeRequest{Operation: op, Input: in, ParentId: parentID})
	if err != nil {
		return nil, err
	}
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil, Errorf("INTERNAL", "no answer")
		}
		if err != nil {
			return nil, err
		}
		switch r.GetKind() {
		case pluginpb.InvokeResult_RESPONDED:
			return r.GetOutput(), nil
		case pluginpb.InvokeResult_ERROR:
			var ce CallError
			if json.Unmarshal(r.GetError(), &ce) != nil {
				return nil, Errorf("INTERNAL", "malformed error")
			}
			return nil, &ce
		}
	}
}

// DialInternal connects to another handler of this node by ALPN (for
// example the SSH plugin's sftp subsystem to alknet/sftp). The returned
// connection's OpenStream reaches the target handler.
func (h *Host) DialInternal(ctx context.Context, alpn string, as *Identity) (*Conn, error) {
	var id []byte
	if as != nil {
		id, _ = json.Marshal(as)
	}
	ref, err := h.c.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: alpn, Identity: id})
	if err != nil {
		return nil, fmt.Errorf("dial internal %s: %w", alpn, err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	return &Conn{id: ref.GetConnId(), host: h.c, ctx: cctx, cancel: cancel, auth: Auth{ALPN: alpn, RemoteAddr: "internal", Transport: "internal"}}, nil
}

// Credential kinds for Resolve.
const (
	KindSSHKey = "ssh_key" // OpenSSH SHA256:<base64> fingerprint (ssh.FingerprintSHA256)
	KindTLS    = "tls"     // TLS fingerprint (ed25519:… or SHA256:…)
	KindToken  = "token"   // bearer token
)

// Resolve asks the node who a credential belongs to, under its current
// auth configuration; nil means nobody (the caller should refuse).
func (h *Host) Resolve(ctx context.Context, kind, value string) (*Identity, error) {
	r, err := h.c.ResolveIdentity(ctx, &pluginpb.ResolveRequest{Kind: kind, Value: value})
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", kind, err)
	}
	return identityFrom(r.GetIdentity()), nil
}
