package call

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/endpoint"
)

// The calling half of a Session: this side's requests and their answers.
// Every request is prepared once (id, frame, deadline) and then sent on
// the connection's own transport: a stream of its own on QUIC, where the
// caller reads its answer directly; the one stream of a TCP connection,
// where the shared reader routes answers to pending requests.

// Request is one call of a batch.
type Request struct {
	ID    string
	Name  string
	Input any
}

// Result is the answer to one Request.
type Result struct {
	ID     string
	Output json.RawMessage
	Err    *Error
}

// CallOption adjusts one outgoing call.
type CallOption func(*callOpts)

type callOpts struct {
	id           string
	forwardedFor *auth.Identity
	timeout      time.Duration
}

// WithID sets the request id (default: a new UUID v4).
func WithID(id string) CallOption { return func(o *callOpts) { o.id = id } }

// WithForwardedFor records the original caller for audit.
func WithForwardedFor(id *auth.Identity) CallOption {
	return func(o *callOpts) { o.forwardedFor = id }
}

// WithTimeout overrides the session's call timeout for this call.
func WithTimeout(d time.Duration) CallOption { return func(o *callOpts) { o.timeout = d } }

// outgoing is one prepared request: its id, its encoded frame (a pooled
// buffer, released with release) and, for a query or mutation, its
// deadline — the earlier of the call timeout and the caller's own.
type outgoing struct {
	id, name string
	sub      bool
	buf      *[]byte
	frame    []byte
	timeout  time.Duration
	deadline time.Time // zero for a subscription
}

func (o *outgoing) release() { putBuf(o.buf) }

// prepare builds the request frame and its deadline, once.
func (s *Session) prepare(ctx context.Context, name string, input any, sub bool, opts []CallOption) (*outgoing, *Error) {
	var co callOpts
	for _, o := range opts {
		o(&co)
	}
	in, err := marshalOutput(input)
	if err != nil {
		return nil, Errorf(CodeInvalidInput, "encode input: %v", err)
	}
	o := &outgoing{id: co.id, name: name, sub: sub, timeout: s.o.CallTimeout, buf: getBuf()}
	if o.id == "" {
		o.id = uuid.NewString()
	}
	if co.timeout > 0 {
		o.timeout = co.timeout
	}
	if !sub {
		o.deadline = time.Now().Add(o.timeout)
		if d, ok := ctx.Deadline(); ok && d.Before(o.deadline) {
			o.deadline = d
		}
	}
	payload := requestPayload{RequestPayload: RequestPayload{OperationID: "/" + normalize(name), Input: in, AuthToken: s.o.AuthToken, ForwardedFor: co.forwardedFor}, Subscribe: &sub}
	if o.frame, err = encodeRequest(o.buf, o.id, payload); err != nil {
		o.release()
		return nil, Errorf(CodeInternal, "cannot send: %v", err)
	}
	return o, nil
}

// Call makes a query or mutation and waits for its answer. Cancelling ctx
// aborts it on the remote side; no answer within the call timeout (or
// ctx's deadline) is TIMEOUT.
func (s *Session) Call(ctx context.Context, name string, input any, opts ...CallOption) (json.RawMessage, error) {
	if s.closed.Load() {
		return nil, ErrConnectionClosed
	}
	o, cerr := s.prepare(ctx, name, input, false, opts)
	if cerr != nil {
		return nil, cerr
	}
	defer o.release()
	if s.single {
		return s.callShared(ctx, o)
	}
	return s.callOwnStream(ctx, o)
}

// stopped is the outcome of a call whose wait ended without an answer:
// cancelled by the caller, past its deadline, or the connection gone (nil:
// none of these).
func (s *Session) stopped(ctx context.Context, o *outgoing) error {
	switch {
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return s.gaveUp(o.id, false, o.timeout)
	case !time.Now().Before(o.deadline):
		return s.gaveUp(o.id, true, o.timeout)
	case s.ctx.Err() != nil || s.conn.Context().Err() != nil:
		return ErrConnectionClosed
	}
	return nil
}

// callShared sends o on the connection's one stream and waits for the
// answer the shared reader routes to it.
func (s *Session) callShared(ctx context.Context, o *outgoing) (json.RawMessage, error) {
	defer s.busy()()
	p, cerr := s.send(ctx, o)
	if cerr != nil {
		return nil, cerr
	}
	defer s.forget(o.id)
	t := time.NewTimer(time.Until(o.deadline))
	defer t.Stop()
	select {
	case env := <-p.events:
		return answer(env, o.name)
	case <-p.failed:
		return nil, p.err
	case <-ctx.Done():
	case <-t.C:
	}
	if err := s.stopped(ctx, o); err != nil {
		return nil, err
	}
	return nil, s.gaveUp(o.id, true, o.timeout)
}

// callOwnStream is a call on QUIC: one stream per call, and the caller
// reads its own answer from it — no reader goroutine, no hand-off. The
// deadline is the stream's read deadline rather than a derived context,
// and ctx is watched only when it can be cancelled: this runs for every
// call.
func (s *Session) callOwnStream(ctx context.Context, o *outgoing) (json.RawMessage, error) {
	st, err := s.openStream(ctx, o.deadline)
	if err != nil {
		if e := s.stopped(ctx, o); e != nil {
			return nil, e
		}
		return nil, Errorf(CodeInternal, "cannot open stream")
	}
	if _, err := st.Write(o.frame); err != nil { // the stream is this call's alone
		st.CancelWrite(0)
		st.CancelRead(0)
		return nil, Errorf(CodeInternal, "cannot send: %v", err)
	}
	_ = st.CloseWrite()
	if err := st.SetReadDeadline(o.deadline); err != nil {
		st.CancelRead(0)
		return nil, Errorf(CodeInternal, "cannot read: %v", err)
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { st.CancelRead(0) })
		defer stop()
	}
	br := getReader(st)
	defer putReader(br)
	for {
		body, skip, err := nextFrame(br, s.limits.MaxFrameBytes, nil)
		if err != nil {
			st.CancelRead(0)
			if e := s.stopped(ctx, o); e != nil {
				return nil, e
			}
			// The stream may fail a moment before the connection reports
			// its close; give it that moment before calling it a stream error.
			select {
			case <-s.conn.Context().Done():
				return nil, ErrConnectionClosed
			case <-s.ctx.Done():
				return nil, ErrConnectionClosed
			case <-time.After(50 * time.Millisecond):
			}
			return nil, Errorf(CodeInternal, "the peer closed the stream without an answer")
		}
		env, err := DecodeEnvelope(body) // copies what it keeps
		_, _ = br.Discard(skip)
		if err != nil {
			st.CancelRead(0)
			return nil, Errorf(CodeInternal, "malformed answer from the peer")
		}
		if env.ID != o.id || env.Type == EventRequested {
			continue // not ours; our side of this stream cannot answer requests
		}
		if !atEOF(br, st) {
			// More than the answer may follow: not read, so stop it
			// (STOP_SENDING). A stream read to its end needs no such frame.
			st.CancelRead(0)
		}
		return answer(env, o.name)
	}
}

// openStream opens a stream for a call without waiting when the peer's
// stream limit allows; otherwise it waits until deadline (or ctx).
func (s *Session) openStream(ctx context.Context, deadline time.Time) (endpoint.Stream, error) {
	if t, ok := s.conn.(interface {
		TryOpenStream() (endpoint.Stream, error)
	}); ok {
		if st, err := t.TryOpenStream(); err == nil {
			return st, nil
		}
	}
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	return s.conn.OpenStream(ctx)
}

type pending struct {
	events chan Envelope
	failed chan struct{}
	err    *Error
	once   sync.Once
}

func (p *pending) fail(e *Error) {
	p.once.Do(func() { p.err = e; close(p.failed) })
}

// send registers o as pending and sends its frame: on the one stream of a
// TCP connection, or on a stream of its own whose answers the shared
// reader routes (subscriptions on QUIC).
func (s *Session) send(ctx context.Context, o *outgoing) (*pending, *Error) {
	p := &pending{events: make(chan Envelope, 16), failed: make(chan struct{})}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, ErrConnectionClosed
	}
	if _, dup := s.pending[o.id]; dup {
		s.mu.Unlock()
		return nil, Errorf(CodeInternal, "request id %s is already pending", o.id)
	}
	s.pending[o.id] = p
	s.mu.Unlock()
	if err := s.sendFrame(ctx, o.frame, true); err != nil {
		s.forget(o.id)
		return nil, err
	}
	return p, nil
}

// sendFrame sends one encoded frame on a fresh stream (QUIC) or on the one
// stream (TCP). For a request on QUIC it half-closes and has the shared
// reader read the answers.
func (s *Session) sendFrame(ctx context.Context, frame []byte, request bool) *Error {
	if s.single {
		w, err := s.singleWriter(ctx)
		if err != nil {
			return err
		}
		if err := w.write(frame, nil); err != nil {
			return Errorf(CodeInternal, "cannot send: %v", err)
		}
		return nil
	}
	st, err := s.conn.OpenStream(ctx)
	if err != nil {
		if s.conn.Context().Err() != nil {
			return ErrConnectionClosed
		}
		return Errorf(CodeInternal, "cannot open stream")
	}
	w := &streamWriter{s: st}
	if err := w.write(frame, nil); err != nil {
		st.CancelWrite(0)
		st.CancelRead(0)
		return Errorf(CodeInternal, "cannot send: %v", err)
	}
	_ = st.CloseWrite()
	if !request {
		st.CancelRead(0)
		return nil
	}
	s.wg.Add(1)
	go s.readStream(st, w, true)
	return nil
}

// singleWriter returns the writer of a single-stream connection, opening
// the stream on the client side.
func (s *Session) singleWriter(ctx context.Context) (*streamWriter, *Error) {
	s.mu.Lock()
	if w := s.singleW; w != nil {
		s.mu.Unlock()
		return w, nil
	}
	st, err := s.conn.OpenStream(ctx)
	if err == nil {
		w := &streamWriter{s: st}
		s.setSingleLocked(w)
		s.wg.Add(1)
		go s.readStream(st, w, true)
		s.mu.Unlock()
		return w, nil
	}
	s.mu.Unlock()
	if errors.Is(err, endpoint.ErrSingleStream) {
		// Run accepted the one stream between our look at singleW and
		// our open: its writer is about to be published.
		select {
		case <-s.singleReady:
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.singleW, nil
		case <-ctx.Done():
		case <-s.ctx.Done():
		}
	}
	return nil, Errorf(CodeInternal, "cannot open stream")
}

// forget removes a pending call whose consumer has left; a reader still
// delivering to it is released.
func (s *Session) forget(id string) {
	s.mu.Lock()
	p := s.pending[id]
	delete(s.pending, id)
	s.mu.Unlock()
	if p != nil {
		p.fail(ErrConnectionClosed)
	}
}

// Abort sends call.aborted for id to the remote side.
func (s *Session) Abort(id string) error {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	bp := getBuf()
	defer putBuf(bp)
	frame, err := encodeFrame(bp, EventAborted, id, empty)
	if err != nil {
		return Errorf(CodeInternal, "cannot send: %v", err)
	}
	if err := s.sendFrame(ctx, frame, false); err != nil {
		return err
	}
	return nil
}

// answer turns the event answering a query into its result.
func answer(env Envelope, name string) (json.RawMessage, error) {
	switch env.Type {
	case EventResponded:
		var r struct {
			Output jsontext.Value `json:"output"`
		}
		if err := decodeJSON(env.Payload, &r); err != nil {
			return nil, Errorf(CodeInternal, "malformed response payload")
		}
		if r.Output == nil {
			return json.RawMessage("null"), nil
		}
		return json.RawMessage(r.Output), nil
	case EventError:
		return nil, fromPayload(env.Payload)
	case EventCompleted:
		return nil, Errorf(CodeInvalidOperationType, "%s is a subscription; subscribe to it", normalize(name))
	default:
		return nil, Errorf(CodeInternal, "request cancelled by the peer")
	}
}

// gaveUp aborts request id on the peer after the caller stopped waiting:
// TIMEOUT when its time ran out, else cancelled.
func (s *Session) gaveUp(id string, timedOut bool, timeout time.Duration) error {
	_ = s.Abort(id)
	if timedOut {
		return &Error{Code: CodeTimeout, Message: fmt.Sprintf("no answer from the peer within %s", timeout), Retryable: true}
	}
	return Errorf(CodeInternal, "request cancelled")
}

// Sub is a running subscription. Read Items until it is closed,
// then Err says how it ended (nil = completed).
type Sub struct {
	ID    string
	Items <-chan json.RawMessage
	s     *Session
	stop  context.CancelFunc
	err   *Error
	done  chan struct{}
}

// Err waits for the end and returns nil for a completed subscription.
func (sub *Sub) Err() error {
	<-sub.done
	if sub.err == nil {
		return nil
	}
	return sub.err
}

// Close drops the subscription: the remote side gets call.aborted.
func (sub *Sub) Close() { sub.stop(); <-sub.done }

// Subscribe starts a subscription. Cancelling ctx or Close aborts it.
func (s *Session) Subscribe(ctx context.Context, name string, input any, opts ...CallOption) (*Sub, error) {
	ctx, stop := context.WithCancel(ctx)
	o, cerr := s.prepare(ctx, name, input, true, opts)
	if cerr != nil {
		stop()
		return nil, cerr
	}
	p, cerr := s.send(ctx, o)
	o.release()
	if cerr != nil {
		stop()
		return nil, cerr
	}
	id := o.id
	items := make(chan json.RawMessage, 64)
	sub := &Sub{ID: id, Items: items, s: s, stop: stop, done: make(chan struct{})}
	done := s.busy()
	go func() {
		// Owned by the subscription: ends with completion, error, Close,
		// ctx or the connection.
		defer done()
		defer close(sub.done)
		defer close(items)
		defer s.forget(id)
		defer stop()
		for {
			select {
			case env := <-p.events:
				switch env.Type {
				case EventResponded:
					var r RespondedPayload
					_ = json.Unmarshal(env.Payload, &r)
					if r.Output == nil {
						r.Output = json.RawMessage("null")
					}
					select {
					case items <- r.Output:
					case <-ctx.Done():
						_ = s.Abort(id)
						sub.err = Errorf(CodeInternal, "request cancelled")
						return
					}
				case EventCompleted:
					return
				case EventError:
					sub.err = fromPayload(env.Payload)
					return
				default:
					sub.err = Errorf(CodeInternal, "request cancelled by the peer")
					return
				}
			case <-p.failed:
				sub.err = p.err
				return
			case <-ctx.Done():
				_ = s.Abort(id)
				sub.err = Errorf(CodeInternal, "request cancelled")
				return
			}
		}
	}()
	return sub, nil
}

// Batch sends the requests concurrently and returns their results in
// request order; there is no atomicity (docs/spec/call.md §6).
func (s *Session) Batch(ctx context.Context, reqs []Request) []Result {
	out := make([]Result, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := r.ID
			if id == "" {
				id = uuid.NewString()
			}
			o, err := s.Call(ctx, r.Name, r.Input, WithID(id))
			out[i] = Result{ID: id, Output: o}
			if err != nil {
				out[i].Err = AsError(err)
			}
		}()
	}
	wg.Wait()
	return out
}

// ServicesList calls services/list.
func (s *Session) ServicesList(ctx context.Context) ([]Spec, error) {
	raw, err := s.Call(ctx, "services/list", nil)
	if err != nil {
		return nil, err
	}
	var r struct {
		Operations []Spec `json:"operations"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, Errorf(CodeInternal, "malformed services/list answer")
	}
	return r.Operations, nil
}

// ServicesSchema calls services/schema for name.
func (s *Session) ServicesSchema(ctx context.Context, name string) (Spec, error) {
	raw, err := s.Call(ctx, "services/schema", map[string]string{"name": name})
	if err != nil {
		return Spec{}, err
	}
	var sp Spec
	if err := json.Unmarshal(raw, &sp); err != nil {
		return Spec{}, Errorf(CodeInternal, "malformed services/schema answer")
	}
	return sp, nil
}
