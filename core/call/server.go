package call

import (
	"context"
	"encoding/json"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"alknet.dev/alknet/core/auth"
)

// The serving half of a Session: requests of the remote side, answered on
// the stream they arrived on (docs/spec/call.md §1–§5).

func (s *Session) abortRunning(id string) {
	if cancel, ok := s.running.Load(id); ok {
		cancel.(context.CancelFunc)()
	}
}

// requestPayload is RequestPayload plus the optional "subscribe" hint this
// implementation sends so the callee can answer INVALID_OPERATION_TYPE;
// peers that do not know it ignore it, and requests without it are served
// by the operation's own type.
type requestPayload struct {
	RequestPayload
	Subscribe *bool `json:"subscribe,omitempty"`
}

// wireRequest is requestPayload as the server decodes it (decodeJSON).
type wireRequest struct {
	OperationID  string         `json:"operationId"`
	Input        jsontext.Value `json:"input"`
	AuthToken    string         `json:"auth_token"`
	ForwardedFor *auth.Identity `json:"forwarded_for"`
	Subscribe    *bool          `json:"subscribe"`
}

func (s *Session) serveRequest(env Envelope, w *streamWriter) {
	var p wireRequest
	if err := decodeJSON(env.Payload, &p); err != nil || p.OperationID == "" {
		_ = w.send(EventError, env.ID, Errorf(CodeInvalidInput, "malformed call.requested payload"))
		return
	}
	id := s.o.Identity
	if p.AuthToken != "" && s.o.Policy != nil {
		tid := s.o.Policy().ResolveToken(p.AuthToken, time.Now())
		logID, result := auth.TokenPrefix(p.AuthToken), "reject"
		if tid != nil {
			id, logID, result = tid, tid.ID, "accept"
		}
		s.log.Info("auth attempt", "remote_addr", s.conn.RemoteAddr().String(), "method", "token", "id", logID, "result", result)
	}
	name := normalize(p.OperationID)
	subscribe := false
	if p.Subscribe != nil {
		subscribe = *p.Subscribe
	} else if e, ok := s.o.Registry.lookup(name); ok {
		subscribe = e.reg.Spec.OpType == Subscription
	}
	// The request's context: cancelled by call.aborted and by the end of
	// the session (through running), and for a query or mutation bounded
	// by the node's deadline here rather than by a second context in
	// Registry.Invoke.
	var ctx context.Context
	var cancel context.CancelFunc
	if d := s.o.Registry.Deadline(); d > 0 && !subscribe {
		ctx, cancel = context.WithTimeout(context.Background(), d)
	} else {
		ctx, cancel = context.WithCancel(context.Background())
	}
	defer cancel()
	if _, dup := s.running.LoadOrStore(env.ID, cancel); dup {
		_ = w.send(EventError, env.ID, Errorf(CodeInternal, "duplicate request id"))
		return
	}
	defer s.running.Delete(env.ID)
	if s.closed.Load() {
		return // the connection is gone: nobody waits for an answer
	}
	var emit func(json.RawMessage) error
	if subscribe {
		emit = func(b json.RawMessage) error { return w.answer(env.ID, b) }
	}
	out, cerr := s.o.Registry.Invoke(ctx, Invocation{
		Name: name, Input: json.RawMessage(p.Input), Identity: id, ForwardedFor: p.ForwardedFor,
		RemoteFilter: s.o.RemoteFilter, RequestID: env.ID, Subscribe: subscribe, Peer: s,
	}, emit)
	switch {
	case cerr != nil && ctx.Err() != nil && cerr.Code != CodeTimeout:
		// Aborted by the caller or the connection is gone: nobody waits.
	case cerr != nil:
		_ = w.send(EventError, env.ID, cerr)
	case subscribe:
		_ = w.send(EventCompleted, env.ID, empty)
	default:
		_ = w.answer(env.ID, out)
	}
}
