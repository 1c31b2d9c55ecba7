package call

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-json-experiment/json/jsontext"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/endpoint"
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
	// The deadline runs from here: decoding and validating the input
	// count against it (docs/spec/call.md §4).
	start := time.Now()
	defer s.busy()()
	var p wireRequest
	if err := decodeJSON(env.Payload, &p); err != nil || p.OperationID == "" {
		_ = w.send(EventError, env.ID, Errorf(CodeInvalidInput, "malformed call.requested payload"))
		return
	}
	id := s.o.Identity
	if p.AuthToken != "" {
		tid := s.resolveToken(p.AuthToken)
		if tid == nil {
			s.rejectToken(env.ID, w)
			return
		}
		id = tid
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
		ctx, cancel = context.WithDeadline(context.Background(), start.Add(d))
	} else {
		ctx, cancel = context.WithCancel(context.Background())
	}
	defer cancel()
	if _, dup := s.running.LoadOrStore(env.ID, cancel); dup {
		// Never answered: an answer carries the id of the request already
		// running, whose caller would take it for its own.
		s.log.Debug("duplicate request id ignored", "remote_addr", s.remote())
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

// resolveToken resolves a request's auth_token, logging the attempt for
// fail2ban (a rejected token only by a prefix of its hash).
func (s *Session) resolveToken(token string) *auth.Identity {
	var tid *auth.Identity
	if s.o.Policy != nil {
		tid = s.o.Policy().ResolveToken(token, time.Now())
	}
	logID, result := auth.TokenLogID(token), "reject"
	if tid != nil {
		logID, result = tid.ID, "accept"
	}
	s.log.Info("auth attempt", "remote_addr", s.remote(), "method", "token", "id", logID, "result", result)
	return tid
}

// errTokenRejected answers a request whose auth_token resolves to nobody:
// a caller that presents a credential is never downgraded to anonymous.
var errTokenRejected = Errorf(CodeForbidden, "token not accepted")

// rejectToken answers a rejected token, each one later than the last from
// this connection or its source address, and closes the connection after
// limits.max_auth_attempts of them (docs/architecture.md D14).
func (s *Session) rejectToken(id string, w *streamWriter) {
	n := int(s.authFails.Add(1))
	delay := s.limits.AuthPenalty.Fail(auth.Source(s.conn.RemoteAddr(), auth.DefaultIPv6Prefix), time.Now())
	if step := time.Duration(n) * 100 * time.Millisecond; step > delay {
		delay = min(step, 5*time.Second)
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
		return
	}
	_ = w.send(EventError, id, errTokenRejected)
	if n >= s.limits.MaxAuthFailures {
		s.log.Info("connection closed", "remote_addr", s.remote(), "reason", fmt.Sprintf("too many rejected tokens (limits.max_auth_attempts = %d)", s.limits.MaxAuthFailures))
		s.shutdown()
		_ = s.conn.CloseWithError(endpoint.CodeForbidden, "too many failed authentications")
	}
}
