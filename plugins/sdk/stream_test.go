package sdk

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// chunkPeer is the core's end of a bridged stream, as the Stream's write
// side sees it: it records what was sent (copied, as gRPC encodes a chunk
// before Send returns) and can hold Send, as the peer's flow control does.
type chunkPeer struct {
	mu      sync.Mutex
	sent    []*pluginpb.Chunk
	hold    chan struct{} // when not nil, Send waits until it is closed
	sending chan struct{} // gets a value when a Send starts
	err     error         // Send's result
	in      chan *pluginpb.Chunk
}

func newChunkPeer() *chunkPeer {
	return &chunkPeer{in: make(chan *pluginpb.Chunk), sending: make(chan struct{}, 64)}
}

func (p *chunkPeer) Send(c *pluginpb.Chunk) error {
	p.sending <- struct{}{}
	p.mu.Lock()
	hold := p.hold
	p.mu.Unlock()
	if hold != nil {
		<-hold
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent = append(p.sent, &pluginpb.Chunk{Data: bytes.Clone(c.Data), Fin: c.Fin, Reset_: c.Reset_, Code: c.Code})
	return p.err
}

func (p *chunkPeer) Recv() (*pluginpb.Chunk, error) {
	c, ok := <-p.in
	if !ok {
		return nil, io.EOF
	}
	return c, nil
}

func (p *chunkPeer) holdSends() {
	p.mu.Lock()
	p.hold = make(chan struct{})
	p.mu.Unlock()
}

func (p *chunkPeer) releaseSends() {
	p.mu.Lock()
	if p.hold != nil {
		close(p.hold)
		p.hold = nil
	}
	p.mu.Unlock()
}

func (p *chunkPeer) chunks() []*pluginpb.Chunk {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*pluginpb.Chunk(nil), p.sent...)
}

func startStream(t *testing.T, p *chunkPeer) *Stream {
	t.Helper()
	s := newStream(p, func() {}, addr{"alknet", "node"}, addr{"alknet", "peer"})
	t.Cleanup(func() {
		p.releaseSends()
		close(p.in) // the core ends the RPC
		<-s.finished
	})
	return s
}

func waitSend(t *testing.T, p *chunkPeer) {
	t.Helper()
	select {
	case <-p.sending:
	case <-time.After(10 * time.Second):
		t.Fatal("no Send started")
	}
}

// While one chunk is on its way, later writes gather into the next one:
// the three writes x/crypto/ssh makes per packet, or a burst of small
// writes, cross as one message — in order, and complete.
func TestStreamWritesGatherWhileSending(t *testing.T) {
	p := newChunkPeer()
	s := startStream(t, p)
	p.holdSends()
	var want bytes.Buffer
	first := []byte("first")
	want.Write(first)
	if n, err := s.Write(first); n != len(first) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	waitSend(t, p) // the first write is on its way and held there
	for i := range 100 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, 100+i)
		want.Write(b)
		if n, err := s.Write(b); n != len(b) || err != nil {
			t.Fatalf("Write %d: %d, %v", i, n, err)
		}
	}
	p.releaseSends()
	if err := s.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	var got bytes.Buffer
	cs := p.chunks()
	for _, c := range cs {
		got.Write(c.Data)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("the peer got %d bytes, not the %d written in order", got.Len(), want.Len())
	}
	if len(cs) > 3 {
		t.Fatalf("101 writes made %d messages; the 100 written during a send should gather into one", len(cs))
	}
	if last := cs[len(cs)-1]; !last.Fin {
		t.Fatalf("the last message is not the FIN: %+v", last)
	}
	if _, err := s.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after CloseWrite: %v; want net.ErrClosed", err)
	}
	// The core ends the RPC after both FINs: closing is still clean.
	close(p.in)
	<-s.finished
	p.in = make(chan *pluginpb.Chunk) // for the cleanup
	if err := s.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite again after a clean end: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after a clean end: %v", err)
	}
}

// A writer waits while a full chunk is already queued: the peer's flow
// control reaches it instead of memory growing without bound.
func TestStreamWriteWaitsForRoom(t *testing.T) {
	p := newChunkPeer()
	s := startStream(t, p)
	p.holdSends()
	big := make([]byte, pluginrpc.ChunkSize)
	if _, err := s.Write(big); err != nil {
		t.Fatal(err)
	}
	waitSend(t, p) // taken by the sender, held in Send
	if _, err := s.Write(big); err != nil {
		t.Fatal(err) // queued: fills the next chunk
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Write([]byte("one more"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a write past a full queued chunk returned (%v) while the peer was not taking data", err)
	case <-time.After(200 * time.Millisecond):
	}
	p.releaseSends()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write did not resume once the peer took data")
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range p.chunks() {
		n += len(c.Data)
		if len(c.Data) > pluginrpc.ChunkSize {
			t.Fatalf("a message of %d bytes; chunks hold at most %d", len(c.Data), pluginrpc.ChunkSize)
		}
	}
	if want := 2*pluginrpc.ChunkSize + len("one more"); n != want {
		t.Fatalf("the peer got %d bytes; want %d", n, want)
	}
}

// A send that fails is reported by the next Write and by CloseWrite.
func TestStreamSendErrorReachesWriter(t *testing.T) {
	p := newChunkPeer()
	p.err = errors.New("transport is closing")
	s := startStream(t, p)
	if _, err := s.Write([]byte("lost")); err != nil {
		t.Fatalf("the first Write only queues: %v", err)
	}
	waitSend(t, p)
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = s.Write([]byte("x"))
		time.Sleep(time.Millisecond)
	}
	if err == nil || !errors.Is(err, p.err) {
		t.Fatalf("Write after a failed send: %v; want it to wrap %q", err, p.err)
	}
	if err := s.CloseWrite(); !errors.Is(err, p.err) {
		t.Fatalf("CloseWrite after a failed send: %v", err)
	}
}

// A reset drops what is still queued and is the last message.
func TestStreamCancelWriteDropsQueued(t *testing.T) {
	p := newChunkPeer()
	s := startStream(t, p)
	p.holdSends()
	if _, err := s.Write([]byte("on its way")); err != nil {
		t.Fatal(err)
	}
	waitSend(t, p)
	if _, err := s.Write([]byte("still queued")); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		s.CancelWrite(7)
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	p.releaseSends()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("CancelWrite did not return")
	}
	cs := p.chunks()
	if len(cs) != 2 || string(cs[0].Data) != "on its way" || !cs[1].Reset_ || cs[1].Code != 7 || len(cs[1].Data) != 0 {
		t.Fatalf("sent %+v; want the data on its way, then a reset with code 7 and nothing queued after it", cs)
	}
}

// When the core ends the RPC, a writer waiting for room is released
// with an error instead of waiting forever.
func TestStreamEndedRPCReleasesWriter(t *testing.T) {
	p := newChunkPeer()
	s := newStream(p, func() {}, addr{"alknet", "node"}, addr{"alknet", "peer"})
	p.holdSends()
	big := make([]byte, pluginrpc.ChunkSize)
	_, _ = s.Write(big)
	waitSend(t, p)
	_, _ = s.Write(big)
	done := make(chan error, 1)
	go func() {
		_, err := s.Write(big)
		done <- err
	}()
	close(p.in) // the core ends the RPC
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after the RPC ended: %v; want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a writer waiting for room was not released when the RPC ended")
	}
	if err := s.CloseWrite(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("CloseWrite after the RPC ended: %v", err)
	}
	p.releaseSends()
	<-s.finished
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		s.wmu.Lock()
		sending := s.sending
		s.wmu.Unlock()
		if !sending {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the sender goroutine did not end")
		}
		time.Sleep(time.Millisecond)
	}
}
