package call

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/endpoint"
)

// SessionOptions configure the dispatcher of one connection.
type SessionOptions struct {
	// Registry serves the remote side's requests.
	Registry *Registry
	// Identity is the remote side's identity from the TLS handshake.
	Identity *auth.Identity
	// Policy resolves auth_token in incoming requests (nil: tokens ignored).
	Policy func() *auth.Policy
	// RemoteFilter: only remote_safe operations exist for the remote side
	// (a default-deny CallClient).
	RemoteFilter bool
	// AuthToken is sent with every outgoing request.
	AuthToken string
	// CallTimeout bounds outgoing queries and mutations (default 30 s).
	CallTimeout time.Duration
	Logger      hclog.Logger
}

// Session is the one dispatcher of an alknet/call connection, shared by
// the server path (Adapter) and the client path (Client.Connect): it
// accepts streams and serves requests on them, and it sends this side's
// requests and routes their answers (spec/call.md §7). Safe for concurrent
// use.
type Session struct {
	o      SessionOptions
	conn   endpoint.Conn
	log    hclog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	single bool

	mu          sync.Mutex
	singleW     *streamWriter
	singleReady chan struct{} // closed once singleW is set
	pending     map[string]*pending
	closed      atomic.Bool // set once, under mu

	// running holds the cancel func of every request being served, by id
	// (aborts, duplicate ids, and the end of the session). A sync.Map and
	// contexts not derived from the session's keep concurrent requests
	// from queueing on one lock.
	running sync.Map

	wg sync.WaitGroup // stream readers (and through them, handlers)
}

// NewSession prepares the dispatcher for conn; call Run to serve.
func NewSession(conn endpoint.Conn, o SessionOptions) *Session {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultDeadline
	}
	if o.Registry == nil {
		o.Registry = NewRegistry(o.Logger)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{o: o, conn: conn, log: o.Logger, ctx: ctx, cancel: cancel,
		single:  conn.Transport() != auth.TransportQUIC,
		pending: map[string]*pending{}, singleReady: make(chan struct{})}
	go func() {
		// Owned by the session: ends when the connection or session ends.
		select {
		case <-conn.Context().Done():
		case <-ctx.Done():
		}
		s.shutdown()
	}()
	return s
}

// streamWriter serialises frames written to one stream.
type streamWriter struct {
	mu sync.Mutex
	s  endpoint.Stream
}

func (w *streamWriter) send(typ, id string, payload any) error {
	bp := getBuf()
	defer putBuf(bp)
	b, err := encodeFrame(bp, typ, id, payload)
	return w.write(b, err)
}

// answer sends call.responded with out.
func (w *streamWriter) answer(id string, out json.RawMessage) error {
	bp := getBuf()
	defer putBuf(bp)
	b, err := encodeAnswer(bp, id, out)
	return w.write(b, err)
}

func (w *streamWriter) write(frame []byte, err error) error {
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err = w.s.Write(frame)
	return err
}

type pending struct {
	sub    bool
	events chan Envelope
	failed chan struct{}
	err    *Error
	once   sync.Once
}

func (p *pending) fail(e *Error) {
	p.once.Do(func() { p.err = e; close(p.failed) })
}

// Run accepts the remote side's streams until drain is done or the
// connection closes, then waits for the requests in progress.
func (s *Session) Run(drain context.Context) {
	for {
		st, err := s.conn.AcceptStream(drain)
		if err != nil {
			break
		}
		w := &streamWriter{s: st}
		if s.single {
			s.mu.Lock()
			s.setSingleLocked(w)
			s.mu.Unlock()
		}
		s.wg.Add(1)
		go s.readStream(st, w, false)
	}
	s.wg.Wait()
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Close ends the session and its connection; pending calls fail with
// INTERNAL "connection closed".
func (s *Session) Close() error {
	s.shutdown()
	return s.conn.CloseWithError(endpoint.CodeNormal, "")
}

func (s *Session) shutdown() {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return
	}
	s.closed.Store(true)
	for _, p := range s.pending {
		p.fail(ErrConnectionClosed)
	}
	s.pending = map[string]*pending{}
	s.mu.Unlock()
	s.cancel()
	// Cancel every handler serving a request of this connection; one that
	// registers after this sees closed and cancels itself.
	s.running.Range(func(_, v any) bool {
		v.(context.CancelFunc)()
		return true
	})
}

// readStream reads frames until the stream ends; requests are served
// concurrently and answered on this stream, answers to our own requests
// are routed by id. A malformed frame ends this stream only.
func (s *Session) readStream(st endpoint.Stream, w *streamWriter, ours bool) {
	var handlers sync.WaitGroup
	malformed := false
	br := getReader(st)
	defer func() {
		handlers.Wait()
		putReader(br)
		if malformed {
			_ = st.Close()
		} else if !ours {
			_ = st.CloseWrite()
		}
		s.wg.Done()
	}()
	for {
		body, skip, err := nextFrame(br)
		if err != nil {
			if !errors.Is(err, io.EOF) && (errors.Is(err, ErrEmptyFrame) || errors.Is(err, ErrFrameTooLarge)) {
				malformed = true
				st.CancelRead(0)
				s.log.Debug("malformed frame; closing the stream", "error", err)
			}
			return
		}
		env, err := DecodeEnvelope(body) // copies what it keeps
		_, _ = br.Discard(skip)
		if err != nil {
			malformed = true
			st.CancelRead(0)
			s.log.Debug("malformed envelope; closing the stream", "error", err)
			return
		}
		switch env.Type {
		case EventRequested:
			if !s.single && atEOF(br, st) {
				// The last frame of the stream (a Go client's one call):
				// serve it here, and the answer and the end of the stream
				// leave together, without a hand-off to another goroutine.
				s.serveRequest(env, w)
				return
			}
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				s.serveRequest(env, w)
			}()
		case EventAborted:
			s.abortRunning(env.ID)
			s.deliver(env)
		case EventResponded, EventError, EventCompleted:
			s.deliver(env)
		default:
			s.log.Debug("ignoring unknown event type", "type", env.Type)
		}
	}
}

func (s *Session) abortRunning(id string) {
	if cancel, ok := s.running.Load(id); ok {
		cancel.(context.CancelFunc)()
	}
}

func (s *Session) deliver(env Envelope) {
	s.mu.Lock()
	p, ok := s.pending[env.ID]
	s.mu.Unlock()
	if !ok {
		return
	}
	select {
	case p.events <- env:
	case <-p.failed:
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

// start sends a request and registers it as pending.
func (s *Session) start(ctx context.Context, name string, input any, sub bool, co callOpts) (*pending, string, *Error) {
	in, err := marshalOutput(input)
	if err != nil {
		return nil, "", Errorf(CodeInvalidInput, "encode input: %v", err)
	}
	id := co.id
	if id == "" {
		id = uuid.NewString()
	}
	p := &pending{sub: sub, events: make(chan Envelope, 16), failed: make(chan struct{})}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, id, ErrConnectionClosed
	}
	if _, dup := s.pending[id]; dup {
		s.mu.Unlock()
		return nil, id, Errorf(CodeInternal, "request id %s is already pending", id)
	}
	s.pending[id] = p
	s.mu.Unlock()
	subscribe := sub
	payload := requestPayload{RequestPayload: RequestPayload{OperationID: "/" + normalize(name), Input: in, AuthToken: s.o.AuthToken, ForwardedFor: co.forwardedFor}, Subscribe: &subscribe}
	if err := s.sendOnNewStream(ctx, EventRequested, id, payload, true); err != nil {
		s.forget(id)
		return nil, id, err
	}
	return p, id, nil
}

// sendOnNewStream sends one frame on a fresh stream (QUIC) or on the one
// stream (TCP). For a request on QUIC it half-closes and reads the answers.
func (s *Session) sendOnNewStream(ctx context.Context, typ, id string, payload any, request bool) *Error {
	if s.single {
		w, err := s.singleWriter(ctx)
		if err != nil {
			return err
		}
		if err := w.send(typ, id, payload); err != nil {
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
	if err := w.send(typ, id, payload); err != nil {
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

// setSingleLocked publishes the single stream's writer. Called with mu
// held, once.
func (s *Session) setSingleLocked(w *streamWriter) {
	s.singleW = w
	close(s.singleReady)
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
	if err := s.sendOnNewStream(ctx, EventAborted, id, empty, false); err != nil {
		return err
	}
	return nil
}

// Call makes a query or mutation and waits for its answer. Cancelling ctx
// aborts it on the remote side; no answer within the call timeout (or ctx's
// deadline) is TIMEOUT.
func (s *Session) Call(ctx context.Context, name string, input any, opts ...CallOption) (json.RawMessage, error) {
	var co callOpts
	for _, o := range opts {
		o(&co)
	}
	timeout := s.o.CallTimeout
	if co.timeout > 0 {
		timeout = co.timeout
	}
	if !s.single {
		return s.callDirect(ctx, name, input, co, timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, id, cerr := s.start(ctx, name, input, false, co)
	if cerr != nil {
		return nil, cerr
	}
	defer s.forget(id)
	select {
	case env := <-p.events:
		return answer(env, name)
	case <-p.failed:
		return nil, p.err
	case <-ctx.Done():
		return nil, s.gaveUp(id, errors.Is(ctx.Err(), context.DeadlineExceeded), timeout)
	}
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

// callDirect is Call on QUIC: one stream per call, and the caller reads
// its own answer from it — no reader goroutine, no hand-off. The call
// timeout is the stream's deadline rather than a derived context, and
// ctx is watched only when it can be cancelled: this runs for every call.
func (s *Session) callDirect(ctx context.Context, name string, input any, co callOpts, timeout time.Duration) (json.RawMessage, error) {
	in, err := marshalOutput(input)
	if err != nil {
		return nil, Errorf(CodeInvalidInput, "encode input: %v", err)
	}
	id := co.id
	if id == "" {
		id = uuid.NewString()
	}
	if s.closed.Load() {
		return nil, ErrConnectionClosed
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// The outcome once the stream failed or the deadline passed.
	stopped := func() error {
		switch {
		case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
			return s.gaveUp(id, false, timeout)
		case !time.Now().Before(deadline):
			return s.gaveUp(id, true, timeout)
		case s.ctx.Err() != nil || s.conn.Context().Err() != nil:
			return ErrConnectionClosed
		}
		return nil
	}
	st, err := s.openStream(ctx, deadline)
	if err != nil {
		if e := stopped(); e != nil {
			return nil, e
		}
		return nil, Errorf(CodeInternal, "cannot open stream")
	}
	sub := false
	payload := requestPayload{RequestPayload: RequestPayload{OperationID: "/" + normalize(name), Input: in, AuthToken: s.o.AuthToken, ForwardedFor: co.forwardedFor}, Subscribe: &sub}
	bp := getBuf()
	frame, err := encodeRequest(bp, id, payload)
	if err == nil {
		_, err = st.Write(frame) // the stream is this call's alone
	}
	putBuf(bp)
	if err != nil {
		st.CancelWrite(0)
		st.CancelRead(0)
		return nil, Errorf(CodeInternal, "cannot send: %v", err)
	}
	_ = st.CloseWrite()
	if err := st.SetReadDeadline(deadline); err != nil {
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
		body, skip, err := nextFrame(br)
		if err != nil {
			st.CancelRead(0)
			if e := stopped(); e != nil {
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
		if env.ID != id || env.Type == EventRequested {
			continue // not ours; our side of this stream cannot answer requests
		}
		if !atEOF(br, st) {
			// More than the answer may follow: not read, so stop it
			// (STOP_SENDING). A stream read to its end needs no such frame.
			st.CancelRead(0)
		}
		return answer(env, name)
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
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return s.conn.OpenStream(ctx)
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
	var co callOpts
	for _, o := range opts {
		o(&co)
	}
	ctx, stop := context.WithCancel(ctx)
	p, id, cerr := s.start(ctx, name, input, true, co)
	if cerr != nil {
		stop()
		return nil, cerr
	}
	items := make(chan json.RawMessage, 64)
	sub := &Sub{ID: id, Items: items, s: s, stop: stop, done: make(chan struct{})}
	go func() {
		// Owned by the subscription: ends with completion, error, Close,
		// ctx or the connection.
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
// request order; there is no atomicity (spec/call.md §6).
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
