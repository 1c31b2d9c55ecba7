package call

import (
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
