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
	"alknet.dev/alknet/proto/pluginrpc"
)

// chunkStream is the gRPC stream both sides of a bridged byte stream use.
type chunkStream interface {
	Send(*pluginpb.Chunk) error
	Recv() (*pluginpb.Chunk, error)
}

// errRPCEnded fails writes once the core has ended the stream's RPC.
var errRPCEnded = fmt.Errorf("stream: %w", net.ErrClosed)

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
	opened   chan struct{} // closed when the node says the stream exists
	endErr   error         // how the RPC ended (set before finished closes)
	finished chan struct{} // closed when the core has ended the RPC
	rbuf     []byte
	rfull    []byte // the chunk rbuf is part of, released once read

	dmu          sync.Mutex
	readDeadline time.Time
	dlChanged    chan struct{}

	// Write side: Write copies into pend and the sender goroutine sends
	// what has gathered (see Write).
	wmu     sync.Mutex
	wcond   sync.Cond     // wakes writers waiting for room in pend
	pend    *[]byte       // bytes not yet sent (from pluginrpc.ChunkBuffers)
	wclosed bool          // CloseWrite or CancelWrite was called
	fin     bool          // FIN to send after pend
	reset   bool          // reset to send (pend dropped)
	code    uint64        // the reset's code
	sending bool          // the sender goroutine runs
	werr    error         // the first send error; every later write returns it
	wended  bool          // wdone is closed
	wdone   chan struct{} // closed once the FIN/reset is sent or cannot be
	once    sync.Once
}

var _ net.Conn = (*Stream)(nil)

func newStream(cs chunkStream, cancel context.CancelFunc, local, remote net.Addr) *Stream {
	s := &Stream{cs: cs, cancel: cancel, local: local, remote: remote, in: make(chan []byte, 4), opened: make(chan struct{}), finished: make(chan struct{}), dlChanged: make(chan struct{}, 1), wdone: make(chan struct{})}
	s.wcond.L = &s.wmu
	go s.pump()
	return s
}

// pump receives chunks until FIN, reset or error, then keeps receiving
// until the core ends the RPC, so that Close never cuts off bytes still in
// flight. It is owned by the stream and ends with it.
func (s *Stream) pump() {
	defer close(s.finished)
	defer s.failWrites(errRPCEnded)
	open := true
	end := func(err error) {
		if open {
			s.rerr = err
			close(s.in)
			open = false
		}
	}
	opened := false
	for {
		c, err := s.cs.Recv()
		if err != nil {
			s.endErr = err
			if errors.Is(err, io.EOF) {
				end(io.EOF)
			} else {
				end(fmt.Errorf("stream: %w", err))
			}
			return
		}
		if c.GetOpened() && !opened {
			opened = true
			close(s.opened)
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
		pluginrpc.ReleaseChunkData(s.rfull)
		s.rfull = nil
	}
	return n, nil
}

// Write queues p for the peer and returns once it is copied; it blocks
// while a full chunk (pluginrpc.ChunkSize) is already waiting, which is how
// the peer's flow control reaches the writer. An error of an earlier send
// is returned by the next Write (and by CloseWrite), as with a socket.
//
// Writes are gathered: a sender goroutine sends whatever has queued since
// its last message, so a burst of small writes — x/crypto/ssh writes each
// packet in three pieces — crosses the bridge as one message, while a
// lone write leaves at once (no timer, no added latency when idle).
func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	n := 0
	for len(p) > 0 {
		for s.werr == nil && !s.wclosed && s.pend != nil && len(*s.pend) >= pluginrpc.ChunkSize {
			s.wcond.Wait()
		}
		if s.werr != nil {
			return n, s.werr
		}
		if s.wclosed {
			return n, net.ErrClosed
		}
		c := min(len(p), pluginrpc.ChunkSize-s.pendLen())
		s.grow(c)
		*s.pend = append(*s.pend, p[:c]...)
		n += c
		p = p[c:]
		s.kick()
	}
	return n, nil
}

func (s *Stream) pendLen() int {
	if s.pend == nil {
		return 0
	}
	return len(*s.pend)
}

// grow makes room for n more bytes in pend, moving to a larger pooled
// buffer when needed (doubling, so a burst costs few copies).
func (s *Stream) grow(n int) {
	if s.pend == nil {
		s.pend = pluginrpc.ChunkBuffers.Get(max(n, 4<<10))
		*s.pend = (*s.pend)[:0]
		return
	}
	if have := *s.pend; cap(have)-len(have) < n {
		bp := pluginrpc.ChunkBuffers.Get(max(len(have)+n, 2*cap(have)))
		*bp = append((*bp)[:0], have...)
		pluginrpc.ChunkBuffers.Put(s.pend)
		s.pend = bp
	}
}

// kick has the sender send what is queued, starting it if it is not
// running. Called with wmu held.
func (s *Stream) kick() {
	if !s.sending {
		s.sending = true
		go s.sender()
	}
}

// sender sends what the writers queued, in order, then the FIN or reset.
// It runs while there is something to send — a burst gathers in pend
// while a Send is under way — and ends when pend is empty, after the FIN
// or reset, or after a failed send; kick starts it again.
func (s *Stream) sender() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for {
		if s.werr != nil || (s.pendLen() == 0 && !s.fin && !s.reset) {
			s.sending = false
			if s.werr != nil {
				if s.pend != nil {
					pluginrpc.ChunkBuffers.Put(s.pend) // cannot be sent any more
					s.pend = nil
				}
				if s.fin || s.reset {
					s.endLocked()
				}
			}
			return
		}
		c := &pluginpb.Chunk{}
		bp := s.pend
		s.pend = nil
		if s.reset {
			c.Reset_, c.Code = true, s.code
			if bp != nil {
				pluginrpc.ChunkBuffers.Put(bp) // a reset abandons unsent bytes
				bp = nil
			}
		} else {
			if bp != nil {
				c.Data = *bp
			}
			c.Fin = s.fin
		}
		last := c.Fin || c.Reset_
		s.wcond.Broadcast() // room for writers waiting on a full chunk
		s.wmu.Unlock()

		err := s.cs.Send(c)
		if bp != nil {
			pluginrpc.ChunkBuffers.Put(bp) // Send has encoded it
		}

		s.wmu.Lock()
		if err != nil && s.werr == nil {
			s.werr = fmt.Errorf("stream: %w", err)
			s.wcond.Broadcast()
		}
		if last {
			s.sending = false
			s.endLocked()
			return
		}
	}
}

// endLocked marks the write side finished (FIN or reset sent, or sending
// impossible) for endWrite. Called with wmu held.
func (s *Stream) endLocked() {
	if !s.wended {
		s.wended = true
		close(s.wdone)
	}
}

// failWrites ends the write side when the RPC has ended: nothing queued
// can be sent any more. A write side that already ended (FIN or reset
// sent) keeps its result.
func (s *Stream) failWrites(err error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.werr == nil && !s.wended {
		s.werr = err
	}
	if s.pend != nil && !s.sending {
		pluginrpc.ChunkBuffers.Put(s.pend)
		s.pend = nil
	}
	s.wcond.Broadcast()
	s.endLocked()
}

// writeEnded reports whether the write side has finished: its FIN or
// reset was handed to the node, or sending failed.
func (s *Stream) writeEnded() bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.wended
}

// CloseWrite half-closes once the queued bytes are sent: the peer reads
// EOF; reading goes on. It returns when the FIN has left, with the error
// of any send that failed.
func (s *Stream) CloseWrite() error {
	return s.endWrite(false, 0)
}

// CancelWrite resets the sending direction with code; bytes not yet sent
// are dropped.
func (s *Stream) CancelWrite(code uint64) {
	_ = s.endWrite(true, code)
}

func (s *Stream) endWrite(reset bool, code uint64) error {
	s.wmu.Lock()
	if !s.wclosed {
		s.wclosed = true
		if s.werr == nil {
			if reset {
				s.reset, s.code = true, code
			} else {
				s.fin = true
			}
			s.kick()
		}
	}
	wait := (s.fin || s.reset) && !s.wended
	s.wmu.Unlock()
	if wait {
		<-s.wdone
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.werr
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
