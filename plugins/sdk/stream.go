package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"alknet.dev/alknet/proto/pluginpb"
)

// chunkStream is the gRPC stream both sides of a bridged byte stream use.
type chunkStream interface {
	Send(*pluginpb.Chunk) error
	Recv() (*pluginpb.Chunk, error)
}

// ResetError is returned by Read after the peer reset its direction.
type ResetError struct{ Code uint64 }

func (e *ResetError) Error() string { return fmt.Sprintf("stream reset by peer (code %d)", e.Code) }

// Stream is one byte stream of a connection: a QUIC stream of the remote
// peer, bridged by the core. It implements net.Conn, plus CloseWrite
// (half-close) and CancelWrite (reset).
type Stream struct {
	cs     chunkStream
	cancel context.CancelFunc
	local  net.Addr
	remote net.Addr

	in       chan []byte   // data chunks, closed at FIN or error
	rerr     error         // set before in is closed
	finished chan struct{} // closed when the core has ended the RPC
	rbuf     []byte
	rfull    []byte // the chunk rbuf is part of, released once read

	dmu          sync.Mutex
	readDeadline time.Time
	dlChanged    chan struct{}

	wmu     sync.Mutex
	wclosed bool
	once    sync.Once
}

var _ net.Conn = (*Stream)(nil)

func newStream(cs chunkStream, cancel context.CancelFunc, local, remote net.Addr) *Stream {
	s := &Stream{cs: cs, cancel: cancel, local: local, remote: remote, in: make(chan []byte, 4), finished: make(chan struct{}), dlChanged: make(chan struct{}, 1)}
	go s.pump()
	return s
}

// pump receives chunks until FIN, reset or error, then keeps receiving
// until the core ends the RPC, so that Close never cuts off bytes still in
// flight. It is owned by the stream and ends with it.
func (s *Stream) pump() {
	defer close(s.finished)
	open := true
	end := func(err error) {
		if open {
			s.rerr = err
			close(s.in)
			open = false
		}
	}
	for {
		c, err := s.cs.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				end(io.EOF)
			} else {
				end(fmt.Errorf("stream: %w", err))
			}
			return
		}
		if !open {
			continue
		}
		if len(c.GetData()) > 0 {
			s.in <- c.GetData()
		}
		if c.GetReset_() {
			end(&ResetError{Code: c.GetCode()})
		} else if c.GetFin() {
			end(io.EOF)
		}
	}
}

// Read reads stream bytes; io.EOF after the peer half-closed.
func (s *Stream) Read(p []byte) (int, error) {
	if len(s.rbuf) == 0 {
		for {
			s.dmu.Lock()
			dl := s.readDeadline
			s.dmu.Unlock()
			var timer <-chan time.Time
			if !dl.IsZero() {
				d := time.Until(dl)
				if d <= 0 {
					return 0, os.ErrDeadlineExceeded
				}
				t := time.NewTimer(d)
				defer t.Stop()
				timer = t.C
			}
			select {
			case b, ok := <-s.in:
				if !ok {
					return 0, s.rerr
				}
				s.rbuf, s.rfull = b, b
			case <-timer:
				return 0, os.ErrDeadlineExceeded
			case <-s.dlChanged:
				continue
			}
			break
		}
	}
	n := copy(p, s.rbuf)
	s.rbuf = s.rbuf[n:]
	if len(s.rbuf) == 0 {
		pluginpb.ReleaseChunkData(s.rfull)
		s.rfull = nil
	}
	return n, nil
}

// Write sends p in chunks of at most 256 KiB; it blocks on flow control.
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wclosed {
		return 0, net.ErrClosed
	}
	n := 0
	for len(p) > 0 {
		c := min(len(p), pluginpb.ChunkSize)
		if err := s.cs.Send(&pluginpb.Chunk{Data: p[:c]}); err != nil {
			return n, fmt.Errorf("stream: %w", err)
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// CloseWrite half-closes: the peer reads EOF; reading goes on.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wclosed {
		return nil
	}
	s.wclosed = true
	return s.cs.Send(&pluginpb.Chunk{Fin: true})
}

// CancelWrite resets the sending direction with code.
func (s *Stream) CancelWrite(code uint64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.wclosed {
		s.wclosed = true
		_ = s.cs.Send(&pluginpb.Chunk{Reset_: true, Code: code})
	}
}

// Close half-closes if needed and releases the stream once the core has
// delivered everything (bounded by 30 s).
func (s *Stream) Close() error {
	err := s.CloseWrite()
	s.once.Do(func() {
		go func() {
			// Discard unread input so the pump can reach the end of the RPC.
			go func() {
				for range s.in {
				}
			}()
			select {
			case <-time.After(30 * time.Second):
			case <-s.finished:
			}
			s.cancel()
		}()
	})
	return err
}

// LocalAddr is the node's address of the connection.
func (s *Stream) LocalAddr() net.Addr { return s.local }

// RemoteAddr is the remote peer's address.
func (s *Stream) RemoteAddr() net.Addr { return s.remote }

// SetDeadline sets the read deadline (writes block only on flow control).
func (s *Stream) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline makes a blocked Read return os.ErrDeadlineExceeded.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.dmu.Lock()
	s.readDeadline = t
	s.dmu.Unlock()
	select {
	case s.dlChanged <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline is accepted for net.Conn compatibility; a write waits
// only for the peer's flow control, which the core bounds.
func (s *Stream) SetWriteDeadline(time.Time) error { return nil }
