package endpoint

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/auth"
)

// CloseCode is the application error code a connection is closed with
// (docs/spec/identity.md §1).
type CloseCode uint64

// Close codes.
const (
	CodeNormal      CloseCode = 0 // normal close, and "shutdown"
	CodeNoHandler   CloseCode = 1 // no handler for the ALPN
	CodeUnavailable CloseCode = 2 // the handler's plugin is restarting or failed
	CodeForbidden   CloseCode = 3 // refused by policy or limits
	CodeInternal    CloseCode = 4 // the handler failed
)

// Stream is one bidirectional byte stream: a QUIC stream, or the whole of a
// TCP(+TLS) connection. It is a net.Conn-like duplex with half-close.
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite half-closes: the peer reads EOF; reading continues.
	CloseWrite() error
	// Close closes both directions.
	Close() error
	// CancelRead and CancelWrite abort a direction with an error code
	// (QUIC STOP_SENDING / RESET_STREAM; on TCP they close the connection).
	CancelRead(code uint64)
	CancelWrite(code uint64)
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// Conn is a connection routed to a handler. QUIC connections carry many
// streams; TCP+TLS and plain TCP connections carry exactly one, which
// AcceptStream (server side) or OpenStream (client side) returns once.
type Conn interface {
	AcceptStream(ctx context.Context) (Stream, error)
	OpenStream(ctx context.Context) (Stream, error)
	// CloseWithError closes the connection; on QUIC the peer sees code and
	// reason as an application error.
	CloseWithError(code CloseCode, reason string) error
	// Context is done when the connection is closed.
	Context() context.Context
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
	ALPN() string
	Transport() string
	// PeerCertificates are the certificates the peer presented (may be nil).
	PeerCertificates() [][]byte
}

// ErrSingleStream is returned by a second stream request on a
// single-stream (TCP) connection.
var ErrSingleStream = errors.New("this connection carries a single stream (TCP transport); use QUIC for several")

// --- QUIC ---

type quicConn struct {
	c *quic.Conn
}

// WrapQUIC adapts a quic-go connection.
func WrapQUIC(c *quic.Conn) Conn { return &quicConn{c: c} }

func (q *quicConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := q.c.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (q *quicConn) OpenStream(ctx context.Context) (Stream, error) {
	s, err := q.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

// TryOpenStream opens a stream if the peer's stream limit allows it now,
// without waiting (and without needing a context).
func (q *quicConn) TryOpenStream() (Stream, error) {
	s, err := q.c.OpenStream()
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (q *quicConn) CloseWithError(code CloseCode, reason string) error {
	return q.c.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

func (q *quicConn) Context() context.Context { return q.c.Context() }
func (q *quicConn) LocalAddr() net.Addr      { return q.c.LocalAddr() }
func (q *quicConn) RemoteAddr() net.Addr     { return q.c.RemoteAddr() }
func (q *quicConn) ALPN() string             { return q.c.ConnectionState().TLS.NegotiatedProtocol }
func (q *quicConn) Transport() string        { return auth.TransportQUIC }
func (q *quicConn) PeerCertificates() [][]byte {
	return rawCerts(q.c.ConnectionState().TLS.PeerCertificates)
}

type quicStream struct{ s *quic.Stream }

func (s quicStream) Read(p []byte) (int, error)  { return s.s.Read(p) }
func (s quicStream) Write(p []byte) (int, error) { return s.s.Write(p) }
func (s quicStream) CloseWrite() error           { return s.s.Close() }
func (s quicStream) Close() error {
	err := s.s.Close()
	s.s.CancelRead(0)
	return err
}
func (s quicStream) CancelRead(code uint64)  { s.s.CancelRead(quic.StreamErrorCode(code)) }
func (s quicStream) CancelWrite(code uint64) { s.s.CancelWrite(quic.StreamErrorCode(code)) }
func (s quicStream) SetDeadline(t time.Time) error {
	return s.s.SetDeadline(t)
}
func (s quicStream) SetReadDeadline(t time.Time) error  { return s.s.SetReadDeadline(t) }
func (s quicStream) SetWriteDeadline(t time.Time) error { return s.s.SetWriteDeadline(t) }

// --- TCP (+TLS): one connection, one stream ---

type halfCloser interface{ CloseWrite() error }

type streamConn struct {
	nc        net.Conn
	alpn      string
	transport string
	ctx       context.Context
	cancel    context.CancelFunc
	once      sync.Once
	taken     bool
	mu        sync.Mutex

	// Idle tracking (watchIdle): when bytes last moved either way, and how
	// many pieces of work are in progress (Busy).
	lastActive atomic.Int64 // unix nanoseconds
	busy       atomic.Int32
}

// Busy marks work in progress on the connection (a request being served,
// an answer awaited): the idle timeout does not close a busy connection.
// It returns the function that ends the mark.
func (c *streamConn) Busy() (done func()) {
	c.busy.Add(1)
	var once sync.Once
	return func() {
		once.Do(func() {
			c.busy.Add(-1)
			c.touch()
		})
	}
}

func (c *streamConn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// watchIdle closes the connection once no byte has moved either way and
// nothing was busy for timeout (docs/architecture.md D14: TCP has no
// transport-level idle timeout as QUIC does). onIdle is called first.
func (c *streamConn) watchIdle(timeout time.Duration, onIdle func()) {
	if timeout <= 0 {
		return
	}
	c.touch()
	var t *time.Timer
	check := func() {
		if c.ctx.Err() != nil {
			return
		}
		idle := time.Since(time.Unix(0, c.lastActive.Load()))
		if c.busy.Load() > 0 || idle < timeout {
			t.Reset(max(timeout-idle, time.Second))
			return
		}
		onIdle()
		_ = c.CloseWithError(CodeNormal, "idle")
	}
	t = time.AfterFunc(timeout, check)
	context.AfterFunc(c.ctx, func() { t.Stop() })
}

// WrapStreamConn adapts a TCP or TLS connection as a single-stream Conn.
func WrapStreamConn(nc net.Conn, alpn, transport string) Conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamConn{nc: nc, alpn: alpn, transport: transport, ctx: ctx, cancel: cancel}
}

func (c *streamConn) take() (Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.taken {
		return nil, ErrSingleStream
	}
	c.taken = true
	return &tcpStream{c: c}, nil
}

// AcceptStream returns the connection's stream once; later calls wait until
// the connection closes or ctx is done.
func (c *streamConn) AcceptStream(ctx context.Context) (Stream, error) {
	if s, err := c.take(); err == nil {
		return s, nil
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (c *streamConn) OpenStream(context.Context) (Stream, error) { return c.take() }

func (c *streamConn) CloseWithError(CloseCode, string) error {
	var err error
	c.once.Do(func() {
		err = c.nc.Close()
		c.cancel()
	})
	return err
}

func (c *streamConn) Context() context.Context { return c.ctx }
func (c *streamConn) LocalAddr() net.Addr      { return c.nc.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr     { return c.nc.RemoteAddr() }
func (c *streamConn) ALPN() string             { return c.alpn }
func (c *streamConn) Transport() string        { return c.transport }
func (c *streamConn) PeerCertificates() [][]byte {
	if tc, ok := c.nc.(*tls.Conn); ok {
		return rawCerts(tc.ConnectionState().PeerCertificates)
	}
	return nil
}

// tcpStream is the one stream of a TCP connection. Once both directions
// are finished (EOF read and CloseWrite called) the connection is closed,
// as a QUIC connection's stream would complete.
type tcpStream struct {
	c           *streamConn
	readEOF     atomic.Bool
	writeClosed atomic.Bool
}

func (s *tcpStream) Read(p []byte) (int, error) {
	n, err := s.c.nc.Read(p)
	if n > 0 {
		s.c.touch()
	}
	if errors.Is(err, io.EOF) && s.readEOF.CompareAndSwap(false, true) && s.writeClosed.Load() {
		_ = s.Close()
	}
	return n, err
}

func (s *tcpStream) Write(p []byte) (int, error) {
	n, err := s.c.nc.Write(p)
	if n > 0 {
		s.c.touch()
	}
	return n, err
}

func (s *tcpStream) CloseWrite() error {
	hc, ok := s.c.nc.(halfCloser)
	if !ok {
		return s.Close()
	}
	err := hc.CloseWrite()
	if s.writeClosed.CompareAndSwap(false, true) && s.readEOF.Load() {
		_ = s.Close()
	}
	return err
}
func (s *tcpStream) Close() error                       { return s.c.CloseWithError(CodeNormal, "") }
func (s *tcpStream) CancelRead(uint64)                  { _ = s.Close() }
func (s *tcpStream) CancelWrite(uint64)                 { _ = s.Close() }
func (s *tcpStream) SetDeadline(t time.Time) error      { return s.c.nc.SetDeadline(t) }
func (s *tcpStream) SetReadDeadline(t time.Time) error  { return s.c.nc.SetReadDeadline(t) }
func (s *tcpStream) SetWriteDeadline(t time.Time) error { return s.c.nc.SetWriteDeadline(t) }
