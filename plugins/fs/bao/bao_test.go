package bao

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	zeebo "github.com/zeebo/blake3"
	luke "lukechampine.com/blake3"
	lukebao "lukechampine.com/blake3/bao"
)

const G = GroupSize

func content(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 42))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// outboard hashes data through an OutboardWriter in writes of random size.
func outboard(t testing.TB, data []byte, seed uint64) (Hash, []byte) {
	t.Helper()
	w := NewOutboardWriter()
	r := rand.New(rand.NewPCG(seed, 7))
	for p := data; len(p) > 0; {
		n := min(len(p), 1+r.IntN(3*G))
		if m, err := w.Write(p[:n]); m != n || err != nil {
			t.Fatalf("Write = %d, %v", m, err)
		}
		p = p[n:]
	}
	if w.Size() != int64(len(data)) {
		t.Fatalf("Size = %d, want %d", w.Size(), len(data))
	}
	return w.Sum()
}

func slice(t testing.TB, data, ob []byte, root Hash, offset, length int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteSlice(&buf, bytes.NewReader(data), ob, root, int64(len(data)), offset, length); err != nil {
		t.Fatalf("WriteSlice(%d, %d): %v", offset, length, err)
	}
	return buf.Bytes()
}

// readAll reads v to the end and returns what it yielded and the error
// (nil for io.EOF).
func readAll(v *SliceVerifier) ([]byte, error) {
	var out []byte
	p := make([]byte, 5000) // not a divisor of G
	for {
		n, err := v.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		} else if err != nil {
			return out, err
		}
	}
}

var sizes = []int{0, 1, 1023, 1024, 1025, 16383, 16384, 16385, 2 * G, 3*G + 5, 4 * G, 5*G + 100, 3<<20 + 7}

func TestRoundTrip(t *testing.T) {
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			data := content(n, uint64(n))
			size := int64(n)
			root, ob := outboard(t, data, 1)
			if want := Hash(zeebo.Sum256(data)); root != want {
				t.Fatalf("root %v, want BLAKE3 %v", root, want)
			}
			if Sum(data) != root {
				t.Fatalf("Sum differs from root")
			}
			if int64(len(ob)) != OutboardSize(size) {
				t.Fatalf("outboard %d bytes, want %d", len(ob), OutboardSize(size))
			}
			// The format is lukechampine.com/blake3/bao's with group 4.
			lob, lroot := lukebao.EncodeBuf(data, 4, true)
			if !bytes.Equal(ob, lob) || Hash(lroot) != root {
				t.Fatalf("outboard differs from lukechampine bao")
			}
			if err := Verify(bytes.NewReader(data), ob, root, size); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			s := slice(t, data, ob, root, 0, size)
			if es, _ := EncodedSliceSize(size, 0, size); int64(len(s)) != es || es != size+OutboardSize(size) {
				t.Fatalf("slice %d bytes, EncodedSliceSize %d, want %d", len(s), es, size+OutboardSize(size))
			}
			got, err := readAll(NewSliceVerifier(bytes.NewReader(s), root, size, 0, size))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("SliceVerifier: %d bytes, %v", len(got), err)
			}
			if _, ok := lukebao.VerifySlice(s, 4, 0, uint64(size), root); !ok {
				t.Fatalf("lukechampine bao rejects the slice")
			}
		})
	}
}

func TestOutboardWriterSum(t *testing.T) {
	data := content(5*G+3, 9)
	w := NewOutboardWriter()
	for i, p := range [][]byte{data[:G], data[G : 2*G], data[2*G : 2*G], data[2*G : 3*G+1], data[3*G+1:]} {
		w.Write(p)
		root, ob := w.Sum()
		n := len(data[:w.Size()])
		wantOb, wantRoot := lukebao.EncodeBuf(data[:n], 4, true)
		if root != Hash(wantRoot) || !bytes.Equal(ob, wantOb) {
			t.Fatalf("after write %d (%d bytes): wrong Sum", i, n)
		}
	}
	// byte-at-a-time
	w = NewOutboardWriter()
	for i := range data[:2*G+1] {
		w.Write(data[i : i+1])
	}
	if root, _ := w.Sum(); root != Sum(data[:2*G+1]) {
		t.Fatalf("byte-wise writes: wrong root")
	}
}

func TestB3sum(t *testing.T) {
	b3sum, err := exec.LookPath("b3sum")
	if err != nil {
		t.Skip("b3sum not installed")
	}
	data := content(5*G+123, 3)
	f := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(b3sum, "--no-names", f).Output()
	if err != nil {
		t.Fatal(err)
	}
	root, _ := outboard(t, data, 3)
	if got, want := root.String(), "blake3:"+strings.TrimSpace(string(out)); got != want {
		t.Fatalf("root %s, b3sum %s", got, want)
	}
}

func TestEmpty(t *testing.T) {
	root, ob := NewOutboardWriter().Sum()
	if root != Hash(luke.Sum256(nil)) || len(ob) != 8 {
		t.Fatalf("empty: root %v, outboard %x", root, ob)
	}
	var bad Hash
	var ge *GroupError
	if err := Verify(bytes.NewReader(nil), ob, bad, 0); !errors.As(err, &ge) || ge.Index != 0 {
		t.Fatalf("Verify with wrong root: %v", err)
	}
	if err := WriteSlice(io.Discard, bytes.NewReader(nil), ob, bad, 0, 0, 0); !errors.As(err, &ge) {
		t.Fatalf("WriteSlice with wrong root: %v", err)
	}
	_, err := readAll(NewSliceVerifier(bytes.NewReader(ob), bad, 0, 0, 0))
	if !errors.As(err, &ge) {
		t.Fatalf("SliceVerifier with wrong root: %v", err)
	}
}

// rangeBytes returns the bytes of data[offset:offset+length] in groups
// before k.
func rangeBytes(data []byte, offset, length, k int64) []byte {
	end := min(offset+length, k*G)
	if end < offset {
		return nil
	}
	return data[offset:end]
}

func TestAllGroupRanges(t *testing.T) {
	data := content(5*G+100, 5)
	size := int64(len(data))
	root, ob := outboard(t, data, 5)
	ng := NumGroups(size)
	check := func(offset, length int64) {
		t.Helper()
		s := slice(t, data, ob, root, offset, length)
		if es, err := EncodedSliceSize(size, offset, length); err != nil || es != int64(len(s)) {
			t.Fatalf("[%d,+%d): slice %d bytes, EncodedSliceSize %d, %v", offset, length, len(s), es, err)
		}
		// Same bytes as lukechampine bao's extractor, which takes the
		// groups of the slice only.
		first, end, err := SliceGroups(size, offset, length)
		if err != nil {
			t.Fatal(err)
		}
		var ls bytes.Buffer
		groups := data[first*G : min(end*G, size)]
		if err := lukebao.ExtractSlice(&ls, bytes.NewReader(groups), bytes.NewReader(ob), 4, uint64(offset), uint64(length)); err != nil || !bytes.Equal(ls.Bytes(), s) {
			t.Fatalf("[%d,+%d): differs from lukechampine bao ExtractSlice (%v)", offset, length, err)
		}
		if got, ok := lukebao.VerifySlice(s, 4, uint64(offset), uint64(length), root); !ok || !bytes.Equal(got, data[offset:offset+length]) {
			t.Fatalf("[%d,+%d): lukechampine bao rejects the slice", offset, length)
		}
		r := bytes.NewReader(append(s, "trailer"...))
		got, err := readAll(NewSliceVerifier(r, root, size, offset, length))
		if err != nil || !bytes.Equal(got, data[offset:offset+length]) {
			t.Fatalf("[%d,+%d): SliceVerifier: %d bytes, %v", offset, length, len(got), err)
		}
		if r.Len() != len("trailer") {
			t.Fatalf("[%d,+%d): SliceVerifier left %d bytes, want the trailer", offset, length, r.Len())
		}
	}
	for first := int64(0); first < ng; first++ {
		for last := first; last <= ng; last++ {
			off, _ := GroupSpan(size, first)
			end := min(last*G, size)
			check(off, end-off)
		}
	}
	// unaligned byte ranges
	for _, r := range [][2]int64{{1, 1}, {G - 1, 2}, {100, 3 * G}, {size - 1, 1}, {size, 0}, {7, size - 8}} {
		check(r[0], r[1])
	}
	for _, r := range [][2]int64{{-1, 1}, {0, -1}, {size + 1, 0}, {size - 1, 2}} {
		if err := WriteSlice(io.Discard, bytes.NewReader(data), ob, root, size, r[0], r[1]); err == nil {
			t.Errorf("WriteSlice accepts range %v", r)
		}
		if _, err := readAll(NewSliceVerifier(bytes.NewReader(nil), root, size, r[0], r[1])); err == nil {
			t.Errorf("SliceVerifier accepts range %v", r)
		}
	}
}

// TestCorruptSlice flips bytes of the slice stream: a flip in group k's
// data gives GroupError k after exactly the bytes of the groups before k.
func TestCorruptSlice(t *testing.T) {
	data := content(6*G+100, 6)
	size := int64(len(data))
	root, ob := outboard(t, data, 6)
	for _, r := range [][2]int64{{0, size}, {G, 3 * G}, {2*G + 5, 4*G - 10}} {
		offset, length := r[0], r[1]
		s := slice(t, data, ob, root, offset, length)
		first, end, _ := SliceGroups(size, offset, length)
		for k := first; k < end; k++ {
			// k's data ends where the slice of the range up to the end
			// of group k ends (pre-order).
			gEnd, _ := EncodedSliceSize(size, offset, min((k+1)*G, offset+length)-offset)
			_, gLen := GroupSpan(size, k)
			for _, at := range []int64{gEnd - gLen, gEnd - gLen/2, gEnd - 1} {
				bad := bytes.Clone(s)
				bad[at] ^= 0x20
				got, err := readAll(NewSliceVerifier(bytes.NewReader(bad), root, size, offset, length))
				var ge *GroupError
				if !errors.As(err, &ge) || ge.Index != k || ge.Node {
					t.Fatalf("range %v: flip in group %d: err %v", r, k, err)
				}
				if !bytes.Equal(got, rangeBytes(data, offset, length, k)) {
					t.Fatalf("range %v: flip in group %d: yielded %d bytes", r, k, len(got))
				}
			}
		}
		// Any flip anywhere: a GroupError (or a header error), and only a
		// prefix of whole groups.
		for at := 0; at < len(s); at += 1 + at%61 {
			bad := bytes.Clone(s)
			bad[at] ^= 1
			got, err := readAll(NewSliceVerifier(bytes.NewReader(bad), root, size, offset, length))
			var ge *GroupError
			switch {
			case at < 8:
				if err == nil || len(got) != 0 {
					t.Fatalf("flip in header: %v", err)
				}
			case !errors.As(err, &ge):
				t.Fatalf("range %v: flip at %d: err %v", r, at, err)
			case !bytes.Equal(got, rangeBytes(data, offset, length, ge.Index)):
				t.Fatalf("range %v: flip at %d: %v after %d bytes", r, at, err, len(got))
			}
		}
		// Truncation
		for _, n := range []int{0, 7, 8, 9, len(s) / 2, len(s) - 1} {
			got, err := readAll(NewSliceVerifier(bytes.NewReader(s[:n]), root, size, offset, length))
			if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, data[offset:offset+int64(len(got))]) {
				t.Fatalf("truncated to %d: %v after %d bytes", n, err, len(got))
			}
		}
	}
}

func TestSenderCorruption(t *testing.T) {
	data := content(6*G+100, 8)
	size := int64(len(data))
	root, ob := outboard(t, data, 8)
	good := slice(t, data, ob, root, 0, size)
	var ge *GroupError
	for k := range NumGroups(size) {
		off, n := GroupSpan(size, k)
		bad := bytes.Clone(data)
		bad[off+n/2] ^= 4
		if err := Verify(bytes.NewReader(bad), ob, root, size); !errors.As(err, &ge) || ge.Index != k || ge.Node {
			t.Fatalf("content flip in group %d: Verify: %v", k, err)
		}
		var w bytes.Buffer
		if err := WriteSlice(&w, bytes.NewReader(bad), ob, root, size, 0, size); !errors.As(err, &ge) || ge.Index != k {
			t.Fatalf("content flip in group %d: WriteSlice: %v", k, err)
		}
		// What was sent is a prefix of the good slice that ends before k.
		limit, _ := EncodedSliceSize(size, 0, off)
		if !bytes.HasPrefix(good, w.Bytes()) || int64(w.Len()) > limit {
			t.Fatalf("content flip in group %d: sent %d bytes (max %d)", k, w.Len(), limit)
		}
		got, err := readAll(NewSliceVerifier(&w, root, size, 0, size))
		if !bytes.Equal(got, data[:off]) || !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("content flip in group %d: receiver got %d bytes, %v", k, len(got), err)
		}
	}
	// truncated content
	if err := Verify(bytes.NewReader(data[:size-1]), ob, root, size); !errors.As(err, &ge) || ge.Index != NumGroups(size)-1 {
		t.Fatalf("truncated content: %v", err)
	}
	// outboard corruption: every byte of every parent node
	for at := 8; at < len(ob); at++ {
		bad := bytes.Clone(ob)
		bad[at] ^= 0x80
		err := Verify(bytes.NewReader(data), bad, root, size)
		if !errors.As(err, &ge) {
			t.Fatalf("outboard flip at %d: Verify: %v", at, err)
		}
		if err := WriteSlice(io.Discard, bytes.NewReader(data), bad, root, size, 0, size); !errors.As(err, &ge) {
			t.Fatalf("outboard flip at %d: WriteSlice: %v", at, err)
		}
	}
	for _, bad := range [][]byte{ob[:len(ob)-1], append(bytes.Clone(ob), 0), append([]byte{1}, ob[1:]...)} {
		if err := Verify(bytes.NewReader(data), bad, root, size); err == nil {
			t.Fatalf("bad outboard %d bytes accepted", len(bad))
		}
	}
	// wrong root
	err := Verify(bytes.NewReader(data), ob, Sum([]byte("x")), size)
	if !errors.As(err, &ge) || ge.Index != 0 || !ge.Node || err.Error() != "bao: group 0 failed verification (bad parent node)" {
		t.Fatalf("wrong root: %v", err)
	}
	if err := (&GroupError{Index: 3}).Error(); err != "bao: group 3 failed verification" {
		t.Fatalf("GroupError: %q", err)
	}
}

func TestSizes(t *testing.T) {
	for _, n := range []int64{0, 1, G - 1, G, G + 1, 2 * G, 2*G + 1, 1 << 30, 1<<40 + 3} {
		groups := (n + G - 1) / G
		if n == 0 {
			groups = 1
		}
		if NumGroups(n) != groups {
			t.Errorf("NumGroups(%d) = %d, want %d", n, NumGroups(n), groups)
		}
		want := 8 + 64*(groups-1)
		if OutboardSize(n) != want || int64(lukebao.EncodedSize(int(n), 4, true)) != want {
			t.Errorf("OutboardSize(%d) = %d, want %d", n, OutboardSize(n), want)
		}
		if es, _ := EncodedSliceSize(n, 0, n); es != n+want {
			t.Errorf("EncodedSliceSize(%d, 0, %d) = %d, want %d", n, n, es, n+want)
		}
		if off, l := GroupSpan(n, groups-1); off+l != n || l > G || (n > 0 && l <= 0) {
			t.Errorf("GroupSpan(%d, last) = %d, %d", n, off, l)
		}
	}
	// 64 bytes per 16 KiB group: 0.39 %.
	if r := float64(OutboardSize(1<<30)) / (1 << 30); r < 0.0039 || r > 0.0040 {
		t.Errorf("overhead %.5f", r)
	}
}

func TestParseHash(t *testing.T) {
	h := Sum([]byte("hello"))
	s := h.String()
	if s != "blake3:"+hex.EncodeToString(h[:]) || len(s) != 71 {
		t.Fatalf("String = %q", s)
	}
	if p, err := ParseHash(s); err != nil || p != h {
		t.Fatalf("ParseHash(%q) = %v, %v", s, p, err)
	}
	for _, bad := range []string{"", "blake3:", s[7:], "BLAKE3:" + s[7:], "blake3:" + strings.ToUpper(s[7:]), s + "0", s[:70], "sha256:" + s[7:], s[:20] + "g" + s[21:], " " + s} {
		_, err := ParseHash(bad)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParseHash(%q): %v", bad, err)
		}
	}
	j, err := json.Marshal(map[string]Hash{"h": h})
	if err != nil || string(j) != `{"h":"`+s+`"}` {
		t.Fatalf("json: %s, %v", j, err)
	}
	var u map[string]Hash
	if err := json.Unmarshal(j, &u); err != nil || u["h"] != h {
		t.Fatalf("json: %v, %v", u, err)
	}
	if err := json.Unmarshal([]byte(`{"h":"blake3:"}`), &u); err == nil {
		t.Fatal("json: bad hash accepted")
	}
}

func FuzzParseHash(f *testing.F) {
	f.Add(Sum(nil).String())
	f.Add("blake3:00")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHash(s)
		if err != nil {
			if h != (Hash{}) {
				t.Fatal("non-zero hash with error")
			}
			return
		}
		if h.String() != s {
			t.Fatalf("ParseHash(%q).String() = %q", s, h.String())
		}
	})
}

func FuzzSliceVerifier(f *testing.F) {
	data := content(3*G+5, 11)
	size := int64(len(data))
	root, ob := outboard(f, data, 11)
	for _, r := range [][2]int64{{0, size}, {G, G}, {3 * G, 5}, {1, 1}, {0, 0}} {
		s := slice(f, data, ob, root, r[0], r[1])
		f.Add(s, uint32(r[0]), uint32(r[1]), true)
		f.Add(s[:len(s)/2], uint32(r[0]), uint32(r[1]), false)
	}
	f.Add([]byte("junk"), uint32(0), uint32(1), false)
	f.Fuzz(func(t *testing.T, s []byte, off, ln uint32, fixHeader bool) {
		offset := int64(off) % (size + 1)
		length := int64(ln) % (size - offset + 1)
		if fixHeader && len(s) >= 8 {
			// Let mutations get past the header check.
			binary.LittleEndian.PutUint64(s, uint64(size))
		}
		r := bytes.NewReader(s)
		got, err := readAll(NewSliceVerifier(r, root, size, offset, length))
		want := data[offset : offset+length]
		if !bytes.HasPrefix(want, got) {
			t.Fatalf("yielded %d bytes that are not the content", len(got))
		}
		var ge *GroupError
		switch {
		case err == nil:
			es, _ := EncodedSliceSize(size, offset, length)
			if len(got) != len(want) || int64(len(s)-r.Len()) != es {
				t.Fatalf("success after %d of %d bytes, consumed %d of %d", len(got), len(want), len(s)-r.Len(), es)
			}
			if length > 0 && len(s) == int(es) {
				if _, ok := lukebao.VerifySlice(s, 4, uint64(offset), uint64(length), root); !ok {
					t.Fatalf("lukechampine bao rejects a slice we accept")
				}
			}
		case errors.As(err, &ge):
			if !bytes.Equal(got, rangeBytes(data, offset, length, ge.Index)) {
				t.Fatalf("%v after %d bytes", err, len(got))
			}
		}
		// lukechampine bao trusts the header's size; compare only when it
		// is right.
		if err != nil && length > 0 && len(s) >= 8 && binary.LittleEndian.Uint64(s) == uint64(size) {
			if _, ok := lukebao.VerifySlice(s, 4, uint64(offset), uint64(length), root); ok {
				t.Fatalf("lukechampine bao accepts a slice we reject: %v", err)
			}
		}
	})
}

var benchSizes = []int{1 << 10, 4 << 10, 16 << 10, 64 << 10, 1 << 20, 16 << 20}

func benchHash(b *testing.B, sum func([]byte) [32]byte) {
	for _, n := range benchSizes {
		data := content(n, 1)
		b.Run(fmt.Sprint(n>>10, "KiB"), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				sum(data)
			}
		})
	}
}

func BenchmarkHashZeebo(b *testing.B) { benchHash(b, zeebo.Sum256) }

func BenchmarkHashLukechampine(b *testing.B) { benchHash(b, luke.Sum256) }

func BenchmarkOutboard(b *testing.B) {
	data := content(16<<20, 1)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		w := NewOutboardWriter()
		for p := data; len(p) > 0; p = p[min(len(p), 32<<10):] {
			w.Write(p[:min(len(p), 32<<10)]) // as io.Copy does
		}
		w.Sum()
	}
}

func BenchmarkSliceVerify(b *testing.B) {
	data := content(16<<20, 1)
	size := int64(len(data))
	root, ob := outboard(b, data, 1)
	s := slice(b, data, ob, root, 0, size)
	b.SetBytes(size)
	buf := make([]byte, 32<<10)
	for b.Loop() {
		v := NewSliceVerifier(bytes.NewReader(s), root, size, 0, size)
		if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{v}, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteSlice(b *testing.B) {
	data := content(16<<20, 1)
	size := int64(len(data))
	root, ob := outboard(b, data, 1)
	b.SetBytes(size)
	for b.Loop() {
		if err := WriteSlice(io.Discard, bytes.NewReader(data), ob, root, size, 0, size); err != nil {
			b.Fatal(err)
		}
	}
}
