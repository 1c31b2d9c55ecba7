package bao

import (
	"encoding/binary"

	"lukechampine.com/blake3/guts"
)

// An OutboardWriter computes the root hash and the outboard of the content
// written to it, so that a file can be hashed while it is being written or
// received; the size need not be known in advance.
//
// It keeps the 32-byte chaining value of each completed group (about 0.2 %
// of the content) and builds the pre-order outboard in Sum. This is written
// by hand because lukechampine.com/blake3/bao.Encode needs the size up front
// and writes the outboard out of order through an io.WriterAt.
type OutboardWriter struct {
	buf  *[GroupSize]byte // current group, not yet hashed
	n    int              // bytes in buf
	size int64
	cvs  [][8]uint32 // chaining values of the completed groups (non-root)
}

// NewOutboardWriter returns an OutboardWriter for an empty blob.
func NewOutboardWriter() *OutboardWriter {
	return &OutboardWriter{buf: new([GroupSize]byte)}
}

// Write adds p to the content. It never returns an error.
func (w *OutboardWriter) Write(p []byte) (int, error) {
	total := len(p)
	w.size += int64(total)
	// A group is hashed only once more data follows it: the last group
	// is the root if it is the only one, which changes its hash. Hence
	// w.n > 0 whenever w.size > 0.
	if w.n > 0 {
		c := copy(w.buf[w.n:], p)
		w.n += c
		p = p[c:]
		if len(p) == 0 {
			return total, nil
		}
		w.flush(w.buf)
		w.n = 0
	}
	// Hash full groups straight from p, always keeping at least one
	// byte back so the final group stays pending.
	for len(p) > GroupSize {
		w.flush((*[GroupSize]byte)(p))
		p = p[GroupSize:]
	}
	w.n = copy(w.buf[:], p)
	return total, nil
}

// flush hashes a complete, non-final group.
func (w *OutboardWriter) flush(g *[GroupSize]byte) {
	pos := int64(len(w.cvs)) * GroupSize
	w.cvs = append(w.cvs, groupCV(g, GroupSize, pos, 0))
}

// Size returns the number of bytes written so far.
func (w *OutboardWriter) Size() int64 { return w.size }

// Sum returns the root hash (the BLAKE3-256 hash of the content written so
// far) and the outboard, OutboardSize(w.Size()) bytes. It does not change
// the state of w; more data may be written afterwards.
func (w *OutboardWriter) Sum() (root Hash, outboard []byte) {
	ob := make([]byte, OutboardSize(w.size))
	binary.LittleEndian.PutUint64(ob, uint64(w.size))
	pos := int64(len(w.cvs)) * GroupSize
	if len(w.cvs) == 0 {
		cv := groupCV(w.buf, w.n, pos, guts.FlagRoot)
		return cvToHash(&cv), ob
	}
	// Append the last group's chaining value only for the duration of
	// the call, so that Sum leaves w unchanged without copying w.cvs.
	k := len(w.cvs)
	w.cvs = append(w.cvs, groupCV(w.buf, w.n, pos, 0))
	cv := buildTree(ob[headerSize:], w.cvs, guts.FlagRoot)
	w.cvs = w.cvs[:k]
	return cvToHash(&cv), ob
}

// buildTree writes the pre-order parent nodes of the tree over the groups
// with chaining values cvs (len(cvs) >= 1) to ob, which must be exactly
// parentSize*(len(cvs)-1) bytes, and returns the chaining value of the
// tree's top node.
func buildTree(ob []byte, cvs [][8]uint32, flags uint32) [8]uint32 {
	if len(cvs) == 1 {
		return cvs[0]
	}
	mid := leftLen(int64(len(cvs))*GroupSize) / GroupSize
	lob := ob[parentSize : parentSize*mid]
	l := buildTree(lob, cvs[:mid], 0)
	r := buildTree(ob[parentSize*mid:], cvs[mid:], 0)
	putCV(ob[:32], &l)
	putCV(ob[32:64], &r)
	return parentCV(l, r, flags)
}
