package fsclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
)

// pipeStream is one end of an in-process stream with half-close and
// resets, as a QUIC stream has.
type pipeStream struct {
	r *io.PipeReader
	w *io.PipeWriter
}

func (s *pipeStream) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *pipeStream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *pipeStream) CloseWrite() error           { return s.w.Close() }
func (s *pipeStream) Close() error {
	s.w.Close()
	return s.r.Close()
}

// A reset is seen by the other end as a remote quic.StreamError.
func (s *pipeStream) CancelRead(code uint64) {
	s.r.CloseWithError(&quic.StreamError{ErrorCode: quic.StreamErrorCode(code), Remote: true})
}
func (s *pipeStream) CancelWrite(code uint64) {
	s.w.CloseWithError(&quic.StreamError{ErrorCode: quic.StreamErrorCode(code), Remote: true})
}

func newPipe() (client, server *pipeStream) {
	c2sR, c2sW := io.Pipe()
	s2cR, s2cW := io.Pipe()
	return &pipeStream{r: s2cR, w: c2sW}, &pipeStream{r: c2sR, w: s2cW}
}

type fakeBlob struct {
	data []byte // as stored (possibly corrupted)
	ob   []byte
	size int64
}

// fakeNode serves alknet/fs in process from real data and real bao
// slices. It counts the content bytes it sends (the groups' bytes,
// not the proofs), as the node's content_bytes_sent does.
type fakeNode struct {
	t    testing.TB
	name string
	wg   sync.WaitGroup

	mu     sync.Mutex
	blobs  map[bao.Hash]*fakeBlob
	ranges []wire.Range // requested, in arrival order
	gets   int
	puts   int

	contentSent atomic.Int64
	// lieFrom, if >= 0, flips a byte of every group >= lieFrom in what the
	// node sends: the node lies.
	lieFrom int64
	// stall, if not nil, holds every get after its response header until
	// it is closed.
	stall chan struct{}
	// gate, if not nil, holds every get before its response header until
	// it is closed.
	gate chan struct{}
}

func newFake(t testing.TB, name string) *fakeNode {
	n := &fakeNode{t: t, name: name, blobs: map[bao.Hash]*fakeBlob{}, lieFrom: -1}
	t.Cleanup(n.wg.Wait)
	return n
}

func (n *fakeNode) source() Source { return Source{Name: n.name, Open: n.open} }

// add stores data and returns its hash.
func (n *fakeNode) add(data []byte) bao.Hash {
	w := bao.NewOutboardWriter()
	w.Write(data)
	root, ob := w.Sum()
	n.mu.Lock()
	n.blobs[root] = &fakeBlob{data: append([]byte(nil), data...), ob: ob, size: int64(len(data))}
	n.mu.Unlock()
	return root
}

// corruptStored flips a byte of group g of the stored copy of h.
func (n *fakeNode) corruptStored(h bao.Hash, g int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.blobs[h].data[g*bao.GroupSize+7] ^= 0x40
}

func (n *fakeNode) requested() []wire.Range {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]wire.Range(nil), n.ranges...)
}

func (n *fakeNode) open(ctx context.Context) (Stream, error) {
	c, s := newPipe()
	n.wg.Add(1)
	go func() {
		// Owned by the fake node: the test's cleanup waits for it.
		defer n.wg.Done()
		defer s.Close()
		n.serve(s)
	}()
	return c, nil
}

func (n *fakeNode) serve(s *pipeStream) {
	br := bufio.NewReader(s)
	req, err := wire.ParseRequest(br)
	if err != nil {
		wire.WriteHeader(s, &wire.Response{Error: &wire.Error{Code: "INVALID_INPUT", Message: err.Error()}})
		return
	}
	switch req.Op {
	case wire.OpPut:
		w := bao.NewOutboardWriter()
		var buf bytes.Buffer
		if _, err := io.CopyN(io.MultiWriter(w, &buf), br, req.Size); err != nil {
			return
		}
		root, ob := w.Sum()
		n.mu.Lock()
		n.puts++
		n.blobs[root] = &fakeBlob{data: buf.Bytes(), ob: ob, size: req.Size}
		n.mu.Unlock()
		wire.WriteHeader(s, &wire.Response{Size: req.Size, Hash: &root})
		s.CloseWrite()
	case wire.OpGet:
		n.mu.Lock()
		b := n.blobs[*req.Hash]
		n.gets++
		n.ranges = append(n.ranges, req.Ranges...)
		n.mu.Unlock()
		if n.gate != nil {
			<-n.gate
		}
		if b == nil {
			wire.WriteHeader(s, &wire.Response{Error: &wire.Error{Code: "NOT_FOUND", Message: req.Hash.String() + " is not stored here"}})
			return
		}
		ranges := req.Ranges
		if len(ranges) == 0 {
			ranges = []wire.Range{{Offset: 0, Length: b.size}}
		}
		for i, r := range ranges {
			if r.Length == 0 {
				ranges[i].Length = b.size - r.Offset
			}
			if _, _, err := bao.SliceGroups(b.size, r.Offset, ranges[i].Length); err != nil {
				wire.WriteHeader(s, &wire.Response{Error: &wire.Error{Code: "INVALID_INPUT", Message: err.Error()}})
				return
			}
		}
		if err := wire.WriteHeader(s, &wire.Response{Size: b.size}); err != nil {
			return
		}
		if n.stall != nil {
			<-n.stall
			return
		}
		for _, r := range ranges {
			first, _, _ := bao.SliceGroups(b.size, r.Offset, r.Length)
			w := &groupWriter{w: s, n: n, size: b.size, next: first}
			err := bao.WriteSlice(w, bytes.NewReader(b.data), b.ob, *req.Hash, b.size, r.Offset, r.Length)
			var ge *bao.GroupError
			if errors.As(err, &ge) {
				s.CancelWrite(wire.CodeCorrupt)
				return
			}
			if err != nil {
				return
			}
		}
		s.CloseWrite()
	}
}

// groupWriter sees WriteSlice's writes, each of which ends with one group
// (after the proof nodes that precede it): it counts the groups' bytes
// and, for a lying node, flips their last byte.
type groupWriter struct {
	w    io.Writer
	n    *fakeNode
	size int64
	next int64
}

func (g *groupWriter) Write(p []byte) (int, error) {
	_, glen := bao.GroupSpan(g.size, g.next)
	if g.n.lieFrom >= 0 && g.next >= g.n.lieFrom && len(p) > 0 {
		p = append([]byte(nil), p...)
		p[len(p)-1] ^= 0x01
	}
	n, err := g.w.Write(p)
	if err == nil {
		g.n.contentSent.Add(glen)
		g.next++
	}
	return n, err
}
