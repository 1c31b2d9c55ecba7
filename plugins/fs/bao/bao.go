// Package bao implements BLAKE3-256 verified streaming with a Bao outboard
// that uses 16 KiB chunk groups, as iroh-blobs does (chunk group log 4: each
// leaf of the tree is 16 BLAKE3 chunks of 1024 bytes).
//
// The root of the tree is the plain BLAKE3-256 hash of the content, so it
// agrees with b3sum and with any other BLAKE3 implementation.
//
// # Formats
//
// Both formats below are byte-for-byte those of lukechampine.com/blake3/bao
// with group = 4, so that package's Decode, VerifyChunk, ExtractSlice and
// VerifySlice can be used on them.
//
// The outboard is the 8-byte little-endian content size followed by the
// parent nodes of the tree in pre-order, each parent node being the 32-byte
// chaining values of its left and right children. A blob of n groups has n-1
// parent nodes, so the outboard is 8 + 64*(n-1) bytes (see [OutboardSize]):
// 64 bytes per 16 KiB, about 0.39 % of the content.
//
// A slice is what a sender transmits for a byte range of a blob: the 8-byte
// little-endian content size, then, in pre-order, every parent node whose
// subtree overlaps the range, interleaved with the data of every group that
// overlaps the range. The range is thus rounded outwards to whole groups on
// the wire; the receiver hands out exactly the requested bytes.
//
// # Groups
//
// Group i holds content bytes [i*GroupSize, min((i+1)*GroupSize, size)).
// Every group is full except possibly the last. As in BLAKE3, where empty
// input is one empty chunk, the empty blob has one empty group.
//
// # Why not lukechampine.com/blake3/bao directly
//
// Its encoder needs the size up front and an io.WriterAt, its slice decoder
// is a recursive push-style function that reports only a bool (not which
// group failed) and cannot be pulled as an io.Reader without a goroutine, and
// its slice extractor trusts the stored content. This package therefore walks
// the tree itself, using the lukechampine.com/blake3/guts primitives the bao
// package is built on; tests check its output against that package.
package bao

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"

	zeebo "github.com/zeebo/blake3"
	"lukechampine.com/blake3/guts"
)

// GroupSize is the number of content bytes per chunk group (leaf of the tree).
const GroupSize = 16 << 10

const (
	headerSize = 8  // little-endian uint64 content size
	parentSize = 64 // two 32-byte chaining values
)

// A group is exactly the number of chunks guts.CompressBuffer hashes in one
// (SIMD) call, which is what lets compressGroup avoid the chunk loop of the
// unexported compressGroup in lukechampine.com/blake3/bao.
var _ [GroupSize - guts.MaxSIMD*guts.ChunkSize]struct{}
var _ [guts.MaxSIMD*guts.ChunkSize - GroupSize]struct{}

// Hash is a BLAKE3-256 hash: the root of a blob's tree.
type Hash [32]byte

const hashPrefix = "blake3:"

// String returns "blake3:" followed by 64 lowercase hex digits.
func (h Hash) String() string {
	return hashPrefix + hex.EncodeToString(h[:])
}

// MarshalText implements encoding.TextMarshaler using the String form.
func (h Hash) MarshalText() ([]byte, error) {
	return []byte(h.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler; it accepts what
// ParseHash accepts.
func (h *Hash) UnmarshalText(text []byte) error {
	p, err := ParseHash(string(text))
	if err != nil {
		return err
	}
	*h = p
	return nil
}

// ParseHash parses the form produced by Hash.String: "blake3:" followed by
// exactly 64 lowercase hex digits. Nothing else is accepted.
func ParseHash(s string) (Hash, error) {
	var h Hash
	bad := func(why string) (Hash, error) {
		q := s
		if len(q) > 100 {
			q = q[:100] + "..."
		}
		return Hash{}, fmt.Errorf("bao: invalid hash %q: %s", q, why)
	}
	if len(s) < len(hashPrefix) || s[:len(hashPrefix)] != hashPrefix {
		return bad(`want prefix "blake3:"`)
	}
	x := s[len(hashPrefix):]
	if len(x) != 2*len(h) {
		return bad(fmt.Sprintf("want %d hex digits, have %d characters", 2*len(h), len(x)))
	}
	for i := 0; i < len(x); i++ {
		if c := x[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return bad(fmt.Sprintf("character %d is not a lowercase hex digit", len(hashPrefix)+i))
		}
	}
	hex.Decode(h[:], []byte(x)) // cannot fail: checked above
	return h, nil
}

// Sum returns the BLAKE3-256 hash of data. It uses github.com/zeebo/blake3,
// which BenchmarkHashZeebo and BenchmarkHashLukechampine show to be the
// faster for plain hashing on amd64.
func Sum(data []byte) Hash {
	return zeebo.Sum256(data)
}

var emptyRoot = Sum(nil)

// GroupError reports that a group could not be verified against the root
// hash: the group's data, or a parent node on the path from the root to the
// group, does not match. On the receiving side it means the slice stream is
// corrupt; on the sending side that the stored content or outboard is.
type GroupError struct {
	// Index is the group that failed. If Node is set it is the first group
	// of the range below the bad parent node, i.e. the next group that
	// would have been handed out.
	Index int64
	// Node is set if the mismatch was in a parent node rather than in the
	// group's data (on the sender: in the outboard, not the content).
	Node bool
}

func (e *GroupError) Error() string {
	if e.Node {
		return fmt.Sprintf("bao: group %d failed verification (bad parent node)", e.Index)
	}
	return fmt.Sprintf("bao: group %d failed verification", e.Index)
}

// NumGroups returns the number of groups of a blob of the given size, which
// is 1 for the empty blob.
func NumGroups(size int64) int64 {
	if size <= 0 {
		return 1
	}
	return (size + GroupSize - 1) / GroupSize
}

// GroupSpan returns the byte range [offset, offset+length) of group i of a
// blob of the given size. i must be in [0, NumGroups(size)).
func GroupSpan(size, i int64) (offset, length int64) {
	offset = i * GroupSize
	return offset, min(GroupSize, size-offset)
}

// OutboardSize returns the size of the outboard of a blob of the given
// size: 8 + 64*(NumGroups(size)-1).
func OutboardSize(size int64) int64 {
	return headerSize + parentSize*(NumGroups(size)-1)
}

// checkRange validates a byte range of a blob.
func checkRange(size, offset, length int64) error {
	switch {
	case size < 0:
		return fmt.Errorf("bao: negative size %d", size)
	case offset < 0 || length < 0 || offset > size || length > size-offset:
		return fmt.Errorf("bao: range [%d, +%d) outside blob of size %d", offset, length, size)
	}
	return nil
}

// SliceGroups returns the groups [first, end) carried by the slice of the
// byte range [offset, offset+length) of a blob of the given size: those
// overlapping the range. An empty range carries no group. It returns an
// error if the range does not lie within the blob.
func SliceGroups(size, offset, length int64) (first, end int64, err error) {
	if err := checkRange(size, offset, length); err != nil {
		return 0, 0, err
	}
	first = offset / GroupSize
	if length == 0 {
		return first, first, nil
	}
	return first, (offset + length + GroupSize - 1) / GroupSize, nil
}

// EncodedSliceSize returns the number of bytes of the slice of the byte
// range [offset, offset+length) of a blob of the given size, header
// included. It returns an error if the range does not lie within the blob.
func EncodedSliceSize(size, offset, length int64) (int64, error) {
	if err := checkRange(size, offset, length); err != nil {
		return 0, err
	}
	var rec func(pos, n int64) int64
	rec = func(pos, n int64) int64 {
		switch {
		case !(pos < offset+length && offset < pos+n):
			return 0
		case n <= GroupSize:
			return n
		case offset <= pos && pos+n <= offset+length:
			return n + parentSize*(NumGroups(n)-1)
		}
		mid := leftLen(n)
		return parentSize + rec(pos, mid) + rec(pos+mid, n-mid)
	}
	return headerSize + rec(0, size), nil
}

// leftLen returns the content length of the left subtree of a subtree of n >
// GroupSize bytes: the largest power of two less than n, as in BLAKE3.
func leftLen(n int64) int64 {
	return 1 << (bits.Len64(uint64(n-1)) - 1)
}

func hashToCV(h *Hash) (cv [8]uint32) {
	for i := range cv {
		cv[i] = binary.LittleEndian.Uint32(h[4*i:])
	}
	return cv
}

func cvToHash(cv *[8]uint32) (h Hash) {
	for i, w := range cv {
		binary.LittleEndian.PutUint32(h[4*i:], w)
	}
	return h
}

func putCV(b []byte, cv *[8]uint32) {
	for i, w := range cv {
		binary.LittleEndian.PutUint32(b[4*i:], w)
	}
}

func getCV(b []byte) (cv [8]uint32) {
	for i := range cv {
		cv[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return cv
}

// groupCV returns the chaining value of the group starting at content
// offset pos whose n bytes are at the start of buf. flags is guts.FlagRoot
// if the group is the whole blob, else 0.
func groupCV(buf *[GroupSize]byte, n int, pos int64, flags uint32) [8]uint32 {
	nd := guts.CompressBuffer(buf, n, &guts.IV, uint64(pos/guts.ChunkSize), 0)
	nd.Flags |= flags
	return guts.ChainingValue(nd)
}

// parentCV returns the chaining value of the parent node with children l, r.
func parentCV(l, r [8]uint32, flags uint32) [8]uint32 {
	return guts.ChainingValue(guts.ParentNode(l, r, &guts.IV, flags))
}
