package endpoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Pipe returns the two ends of an in-memory multi-stream connection for
// alpn: an internal connection between two handlers of one node (the SSH
// plugin's sftp subsystem reaching alknet/sftp, say). Streams opened on
// one end are accepted on the other; no bytes leave the process.
func Pipe(alpn string) (client, server Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &pipeConn{alpn: alpn, incoming: make(chan Stream), ctx: ctx, cancel: cancel, local: pipeAddr("internal-client")}
	s := &pipeConn{alpn: alpn, incoming: make(chan Stream), ctx: ctx, cancel: cancel, local: pipeAddr("internal-server")}
	c.peer, s.peer = s, c
	return c, s
}

type pipeAddr string

func (a pipeAddr) Network() string { return "internal" }
func (a pipeAddr) String() string  { return string(a) }

type pipeConn struct {
	alpn     string
	peer     *pipeConn
	incoming chan Stream
	ctx      context.Context
	cancel   context.CancelFunc
	local    net.Addr
}

func (p *pipeConn) AcceptStream(ctx context.Context) (Stream, error) {
	select {
	case s := <-p.incoming:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (p *pipeConn) OpenStream(ctx context.Context) (Stream, error) {
	ar, aw := io.Pipe() // this side → peer
	br, bw := io.Pipe() // peer → this side
	mine := &pipeStream{r: br, w: aw}
	theirs := &pipeStream{r: ar, w: bw}
	select {
	case p.peer.incoming <- theirs:
		return mine, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (p *pipeConn) CloseWithError(CloseCode, string) error { p.cancel(); return nil }
func (p *pipeConn) Context() context.Context               { return p.ctx }
func (p *pipeConn) LocalAddr() net.Addr                    { return p.local }
func (p *pipeConn) RemoteAddr() net.Addr                   { return p.peer.local }
func (p *pipeConn) ALPN() string                           { return p.alpn }
func (p *pipeConn) Transport() string                      { return "internal" }
func (p *pipeConn) PeerCertificates() [][]byte             { return nil }

// ResetError is the read error after the peer reset its direction.
type ResetError struct{ Code uint64 }

func (e *ResetError) Error() string { return fmt.Sprintf("stream reset (code %d)", e.Code) }

type pipeStream struct {
	r    *io.PipeReader
	w    *io.PipeWriter
	once sync.Once
}

func (s *pipeStream) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s *pipeStream) Write(b []byte) (int, error) { return s.w.Write(b) }
func (s *pipeStream) CloseWrite() error           { return s.w.Close() }
func (s *pipeStream) Close() error {
	s.once.Do(func() { _ = s.w.Close(); _ = s.r.Close() })
	return nil
}
func (s *pipeStream) CancelRead(code uint64)  { _ = s.r.CloseWithError(&ResetError{Code: code}) }
func (s *pipeStream) CancelWrite(code uint64) { _ = s.w.CloseWithError(&ResetError{Code: code}) }

var errNoDeadline = errors.New("internal streams have no deadlines")

func (s *pipeStream) SetDeadline(time.Time) error      { return errNoDeadline }
func (s *pipeStream) SetReadDeadline(time.Time) error  { return errNoDeadline }
func (s *pipeStream) SetWriteDeadline(time.Time) error { return errNoDeadline }
