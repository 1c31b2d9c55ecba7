package bao

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"lukechampine.com/blake3/guts"
)

// treeNode is a subtree still to be visited in a walk.
type treeNode struct {
	cv    [8]uint32 // expected chaining value, already verified from above
	pos   int64     // content offset of the subtree
	n     int64     // content length of the subtree
	ob    int64     // outboard offset of the subtree's first parent node
	flags uint32    // guts.FlagRoot for the whole tree, else 0
}

// walk visits, in pre-order, the nodes of the tree of a blob that overlap
// the byte range [start, end): the parent nodes and groups of its slice.
// Every node handed out carries the chaining value it must hash to, taken
// from its (verified) parent or the root, so verification is top-down and a
// bad node is detected before anything below it is accepted. Unlike the
// recursive functions of lukechampine.com/blake3/bao, it keeps an explicit
// stack, so that a reader can be suspended between groups.
type walk struct {
	start, end int64
	stack      []treeNode
}

func newWalk(root Hash, size, offset, length int64) *walk {
	w := &walk{start: offset, end: offset + length}
	w.stack = append(w.stack, treeNode{cv: hashToCV(&root), n: size, ob: headerSize, flags: guts.FlagRoot})
	return w
}

// next returns the next node of the slice.
func (w *walk) next() (treeNode, bool) {
	for len(w.stack) > 0 {
		nd := w.stack[len(w.stack)-1]
		w.stack = w.stack[:len(w.stack)-1]
		if nd.pos < w.end && w.start < nd.pos+nd.n {
			return nd, true
		}
	}
	return treeNode{}, false
}

// firstGroup returns the first group of the slice below nd.
func (w *walk) firstGroup(nd *treeNode) int64 {
	return max(nd.pos, w.start) / GroupSize
}

// descend verifies the parent node p (two chaining values) read for nd and
// queues its children.
func (w *walk) descend(nd *treeNode, p []byte) error {
	l, r := getCV(p[:32]), getCV(p[32:parentSize])
	if parentCV(l, r, nd.flags) != nd.cv {
		return &GroupError{Index: w.firstGroup(nd), Node: true}
	}
	mid := leftLen(nd.n)
	w.stack = append(w.stack,
		treeNode{cv: r, pos: nd.pos + mid, n: nd.n - mid, ob: nd.ob + parentSize*(mid/GroupSize)},
		treeNode{cv: l, pos: nd.pos, n: mid, ob: nd.ob + parentSize})
	return nil
}

// checkGroup verifies the group nd whose data is at the start of buf.
func (w *walk) checkGroup(nd *treeNode, buf *[GroupSize]byte) error {
	if groupCV(buf, int(nd.n), nd.pos, nd.flags) != nd.cv {
		return &GroupError{Index: nd.pos / GroupSize}
	}
	return nil
}

// checkEmpty verifies root for the empty blob, whose slices carry no group
// and so would otherwise verify nothing.
func checkEmpty(root Hash, size int64) error {
	if size == 0 && root != emptyRoot {
		return &GroupError{Index: 0}
	}
	return nil
}

func checkOutboard(ob []byte, size int64) error {
	if want := OutboardSize(size); int64(len(ob)) != want {
		return fmt.Errorf("bao: outboard is %d bytes, want %d for size %d", len(ob), want, size)
	}
	if got := binary.LittleEndian.Uint64(ob); got != uint64(size) {
		return fmt.Errorf("bao: outboard is for size %d, want %d", got, size)
	}
	return nil
}

// WriteSlice writes to w the slice of the byte range [offset,
// offset+length) of the blob with the given root and size, taking the
// groups from content and the parent nodes from the outboard ob.
//
// Everything is verified before it is written, exactly as the receiver will
// verify it: if the stored content or outboard does not match root,
// WriteSlice stops at the first bad group and returns a *GroupError, having
// written nothing of that group (the groups before it have been written). A
// group that content cannot supply in full (io.EOF) is a bad group too.
// The root is needed so that the proof nodes sent for groups outside the
// range are verified as well. Other errors, from content or w, are returned
// wrapped or as they are.
func WriteSlice(w io.Writer, content io.ReaderAt, ob []byte, root Hash, size, offset, length int64) error {
	if err := checkRange(size, offset, length); err != nil {
		return err
	}
	if err := checkOutboard(ob, size); err != nil {
		return err
	}
	if err := checkEmpty(root, size); err != nil {
		return err
	}
	// pend collects the header and parent nodes, written together with
	// the group that follows them.
	pend := make([]byte, headerSize, headerSize+64*parentSize+GroupSize)
	binary.LittleEndian.PutUint64(pend, uint64(size))
	err := sendSlice(content, ob, root, size, offset, length, func(p []byte, group bool) error {
		pend = append(pend, p...)
		if !group {
			return nil
		}
		_, err := w.Write(pend)
		pend = pend[:0]
		return err
	})
	if err == nil && len(pend) > 0 {
		_, err = w.Write(pend)
	}
	return err
}

// Verify verifies the whole stored blob, content against its outboard ob
// and root, and returns a *GroupError for the first bad group. It does not
// check that content holds no more than size bytes.
func Verify(content io.ReaderAt, ob []byte, root Hash, size int64) error {
	if size < 0 {
		return fmt.Errorf("bao: negative size %d", size)
	}
	if err := checkOutboard(ob, size); err != nil {
		return err
	}
	if err := checkEmpty(root, size); err != nil {
		return err
	}
	return sendSlice(content, ob, root, size, 0, size, nil)
}

// sendSlice walks the slice, passing each verified parent node and group
// to emit (if not nil). The arguments must have been checked.
func sendSlice(content io.ReaderAt, ob []byte, root Hash, size, offset, length int64, emit func(p []byte, group bool) error) error {
	buf := new([GroupSize]byte)
	w := newWalk(root, size, offset, length)
	for {
		nd, ok := w.next()
		if !ok {
			return nil
		}
		if nd.n > GroupSize {
			p := ob[nd.ob : nd.ob+parentSize]
			if err := w.descend(&nd, p); err != nil {
				return err
			}
			if emit != nil {
				if err := emit(p, false); err != nil {
					return err
				}
			}
			continue
		}
		g := buf[:nd.n]
		if n, err := content.ReadAt(g, nd.pos); n < len(g) {
			if err == nil || err == io.EOF { // content shorter than size
				return &GroupError{Index: nd.pos / GroupSize}
			}
			return fmt.Errorf("bao: reading group %d: %w", nd.pos/GroupSize, err)
		}
		if err := w.checkGroup(&nd, buf); err != nil {
			return err
		}
		if emit != nil {
			if err := emit(g, true); err != nil {
				return err
			}
		}
	}
}

// A SliceVerifier reads a slice, as written by WriteSlice, from an
// underlying reader and yields the verified content of its range. See
// NewSliceVerifier.
type SliceVerifier struct {
	r              io.Reader
	root           Hash
	size           int64
	offset, length int64
	walk           *walk // nil until the header has been read
	buf            *[GroupSize]byte
	out            []byte // verified, not yet returned
	err            error  // sticky
}

// NewSliceVerifier returns a SliceVerifier that reads from r the slice of
// the byte range [offset, offset+length) of the blob with the given root and
// size, as written by WriteSlice.
//
// Read yields exactly the bytes of the range, in order, then io.EOF. A
// group's bytes are yielded only once the whole group has arrived and has
// been verified. If the slice is corrupt, Read returns a *GroupError for
// the first bad group, after having yielded the bytes of the groups before
// it and none of that group; if r ends early, an error wrapping
// io.ErrUnexpectedEOF. Errors are sticky, and an invalid range is reported
// by the first Read.
//
// The SliceVerifier reads exactly EncodedSliceSize(size, offset, length)
// bytes from r, never more, so r may carry other data after the slice. It
// does not check that r ends after the slice.
//
// The size is the caller's: the slice header must match it, but, as in Bao,
// only a range that includes the last group proves it against the root.
func NewSliceVerifier(r io.Reader, root Hash, size, offset, length int64) *SliceVerifier {
	return &SliceVerifier{r: r, root: root, size: size, offset: offset, length: length, buf: new([GroupSize]byte)}
}

// Read implements io.Reader, yielding only verified content.
func (v *SliceVerifier) Read(p []byte) (int, error) {
	for len(v.out) == 0 {
		if v.err != nil {
			return 0, v.err
		}
		v.err = v.step()
	}
	n := copy(p, v.out)
	v.out = v.out[n:]
	return n, nil
}

// step reads and verifies the slice up to and including the next group,
// and sets v.out to that group's bytes within the range.
func (v *SliceVerifier) step() error {
	if v.walk == nil {
		if err := checkRange(v.size, v.offset, v.length); err != nil {
			return err
		}
		var h [headerSize]byte
		if _, err := io.ReadFull(v.r, h[:]); err != nil {
			return readError("header", err)
		}
		if got := binary.LittleEndian.Uint64(h[:]); got != uint64(v.size) {
			return fmt.Errorf("bao: slice header says size %d, want %d", got, v.size)
		}
		if err := checkEmpty(v.root, v.size); err != nil {
			return err
		}
		v.walk = newWalk(v.root, v.size, v.offset, v.length)
	}
	for {
		nd, ok := v.walk.next()
		if !ok {
			return io.EOF
		}
		if nd.n > GroupSize {
			var p [parentSize]byte
			if _, err := io.ReadFull(v.r, p[:]); err != nil {
				return readError(fmt.Sprintf("group %d", v.walk.firstGroup(&nd)), err)
			}
			if err := v.walk.descend(&nd, p[:]); err != nil {
				return err
			}
			continue
		}
		g := v.buf[:nd.n]
		if _, err := io.ReadFull(v.r, g); err != nil {
			return readError(fmt.Sprintf("group %d", nd.pos/GroupSize), err)
		}
		if err := v.walk.checkGroup(&nd, v.buf); err != nil {
			return err
		}
		lo := max(v.offset-nd.pos, 0)
		hi := min(v.offset+v.length-nd.pos, nd.n)
		v.out = g[lo:hi]
		return nil
	}
}

func readError(at string, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("bao: reading slice %s: %w", at, err)
}
