package call

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

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
	// Limits bound what the remote side can make this session hold
	// (docs/architecture.md D14); zero values take the defaults.
	Limits Limits
	// NodeBudget is the node-wide budget of request bytes in flight,
	// shared by every session of the node (nil: none).
	NodeBudget *Budget
}

// Limits bound what the remote side of one connection can make it hold.
type Limits struct {
	// MaxFrameBytes is the largest frame read (default DefaultMaxFrameBytes).
	MaxFrameBytes int
	// MaxRequestBytes is the connection's budget of request bytes in
	// flight (default DefaultMaxRequestBytes).
	MaxRequestBytes int64
	// MaxInFlight is how many of the remote side's requests are served at
	// once; reading more waits until one ends (default 100).
	MaxInFlight int
	// MaxAuthFailures is how many rejected auth_tokens a connection may
	// present; each is answered later than the one before, and the
	// connection is closed after the last (default 5).
	MaxAuthFailures int
	// AuthPenalty, when set, slows and counts rejected tokens per source
	// address across connections.
	AuthPenalty *auth.Penalties
}

// Defaults of Limits.
const (
	DefaultMaxFrameBytes   = 16 << 20
	DefaultMaxRequestBytes = 64 << 20
	DefaultMaxInFlight     = 100
	DefaultMaxAuthFailures = 5
)

func (l Limits) withDefaults() Limits {
	if l.MaxFrameBytes <= 0 || l.MaxFrameBytes > MaxFrame {
		l.MaxFrameBytes = min(DefaultMaxFrameBytes, MaxFrame)
	}
	if l.MaxRequestBytes <= 0 {
		l.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = DefaultMaxInFlight
	}
	if l.MaxAuthFailures <= 0 {
		l.MaxAuthFailures = DefaultMaxAuthFailures
	}
	return l
}

// Session is the one dispatcher of an alknet/call connection, shared by
// the server path (Adapter) and the client path (Client.Connect): it
// accepts streams and serves requests on them, and it sends this side's
// requests and routes their answers (docs/spec/call.md §7). Safe for concurrent
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

	limits     Limits
	connBudget *Budget
	inflight   chan struct{} // one token per request being served
	authFails  atomic.Int32
	overLogged atomic.Bool // the first over-budget stream was logged
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
	l := o.Limits.withDefaults()
	s := &Session{o: o, conn: conn, log: o.Logger, ctx: ctx, cancel: cancel,
		single:  conn.Transport() != auth.TransportQUIC,
		pending: map[string]*pending{}, singleReady: make(chan struct{}),
		limits: l, connBudget: NewBudget(l.MaxRequestBytes), inflight: make(chan struct{}, l.MaxInFlight)}
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
// are routed by id. A malformed frame, or one over the request budget,
// ends this stream only. On a single-stream connection (TCP) the end of
// the stream is the end of the connection: everything it started is
// cancelled.
func (s *Session) readStream(st endpoint.Stream, w *streamWriter, ours bool) {
	var handlers sync.WaitGroup
	malformed := false
	br := getReader(st)
	defer func() {
		if s.single {
			s.shutdown()
		}
		handlers.Wait()
		putReader(br)
		if malformed {
			_ = st.Close()
		} else if !ours {
			_ = st.CloseWrite()
		}
		s.wg.Done()
	}()
	beforeRead := func() {}
	for {
		beforeRead()
		h := &hold{conn: s.connBudget, node: s.o.NodeBudget}
		reserve := h.reserve
		if ours {
			reserve = nil // answers to our own requests: bounded by the frame limit
		}
		body, skip, err := nextFrame(br, s.limits.MaxFrameBytes, reserve)
		if err != nil {
			h.done()
			switch {
			case errors.Is(err, ErrOverBudget):
				malformed = true
				st.CancelRead(codeOverBudget)
				st.CancelWrite(codeOverBudget)
				if s.overLogged.CompareAndSwap(false, true) {
					which := "limits.max_request_bytes_per_connection"
					if h.over == s.o.NodeBudget {
						which = "limits.max_request_bytes"
					}
					s.log.Warn("request bytes over budget; stream reset", "remote_addr", s.remote(), "budget", which, "limit", h.over.Limit())
				}
			case !errors.Is(err, io.EOF) && (errors.Is(err, ErrEmptyFrame) || errors.Is(err, ErrFrameTooLarge)):
				malformed = true
				st.CancelRead(0)
				s.log.Debug("malformed frame; closing the stream", "error", err)
			}
			return
		}
		env, err := DecodeEnvelope(body) // copies what it keeps
		_, _ = br.Discard(skip)
		if err != nil {
			h.done()
			malformed = true
			st.CancelRead(0)
			s.log.Debug("malformed envelope; closing the stream", "error", err)
			return
		}
		if env.Type != EventRequested {
			h.done()
		}
		switch env.Type {
		case EventRequested:
			// At most MaxInFlight requests are served at once: reading
			// waits here, which the peer feels as flow control.
			var ok bool
			if ok, beforeRead = s.acquireSlot(br); !ok {
				beforeRead()
				h.done()
				return
			}
			if !s.single && atEOF(br, st) {
				// The last frame of the stream (a Go client's one call):
				// serve it here, and the answer and the end of the stream
				// leave together, without a hand-off to another goroutine.
				s.serveRequest(env, w)
				<-s.inflight
				h.done()
				return
			}
			handlers.Add(1)
			go func() {
				defer handlers.Done()
				s.serveRequest(env, w)
				<-s.inflight
				h.done()
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

// acquireSlot waits for a free request slot. On a single-stream (TCP)
// connection the reader would not notice the peer leaving while it waits
// — the socket would sit in CLOSE-WAIT, its handlers running — so it
// watches the stream meanwhile: the end of the stream ends the session.
// The watch only peeks, so br keeps what arrives for the next read, and it
// watches until br's buffer is full (beyond that, the idle timeout of the
// connection is the bound). It reports false when the session ended, and
// a function to call before br is read again (it waits for the watch).
func (s *Session) acquireSlot(br *bufio.Reader) (ok bool, beforeRead func()) {
	none := func() {}
	select {
	case s.inflight <- struct{}{}:
		return true, none
	default:
	}
	if !s.single {
		select {
		case s.inflight <- struct{}{}:
			return true, none
		case <-s.ctx.Done():
			return false, none
		}
	}
	gone, watched := make(chan struct{}), make(chan struct{})
	stop := make(chan struct{})
	go func() {
		// Owned by this wait: it ends when the peer leaves, when br's
		// buffer is full, or at the first arrival after the slot was
		// taken; the reader waits for it before reading again.
		defer close(watched)
		for n := br.Buffered() + 1; n <= br.Size(); n = br.Buffered() + 1 {
			if _, err := br.Peek(n); err != nil {
				if !errors.Is(err, bufio.ErrBufferFull) {
					close(gone)
				}
				return
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	select {
	case s.inflight <- struct{}{}:
		close(stop)
		return true, func() { <-watched }
	case <-gone:
		s.shutdown()
		return false, none
	case <-s.ctx.Done():
		close(stop)
		return false, func() { <-watched }
	}
}

// busy marks work in progress on a connection whose transport has no idle
// timeout of its own (TCP): the endpoint closes such a connection when
// nothing moves and nothing is busy. The returned function ends the mark.
func (s *Session) busy() func() {
	if b, ok := s.conn.(interface{ Busy() func() }); ok {
		return b.Busy()
	}
	return func() {}
}

// codeOverBudget resets a stream whose frame the budget could not hold.
const codeOverBudget = 0x10

func (s *Session) remote() string {
	if a := s.conn.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
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

// setSingleLocked publishes the single stream's writer. Called with mu
// held, once.
func (s *Session) setSingleLocked(w *streamWriter) {
	s.singleW = w
	close(s.singleReady)
}
