package wire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"alknet.dev/alknet/plugins/fs/bao"
)

func TestRequestRoundTrip(t *testing.T) {
	h := bao.Sum([]byte("x"))
	for _, r := range []Request{
		{Op: OpGet, Hash: &h},
		{Op: OpGet, Hash: &h, Ranges: []Range{{Offset: 0, Length: 1}, {Offset: 1 << 40}}},
		{Op: OpPut, Size: 0},
		{Op: OpPut, Size: 123, Hash: &h, Tag: "release/v1 (final)"},
	} {
		var buf bytes.Buffer
		if err := WriteHeader(&buf, &r); err != nil {
			t.Fatal(err)
		}
		buf.WriteString("body")
		br := bufio.NewReader(&buf)
		got, err := ParseRequest(br)
		if err != nil || !reflect.DeepEqual(*got, r) {
			t.Fatalf("%+v: parsed %+v, %v", r, got, err)
		}
		if rest, _ := io.ReadAll(br); string(rest) != "body" {
			t.Fatalf("%+v: %q after the header, want the body", r, rest)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	h := bao.Sum(nil)
	for _, r := range []Response{
		{Size: 5},
		{Size: 0, Hash: &h},
		{Error: &Error{Code: "NOT_FOUND", Message: "no such blob"}},
	} {
		var buf bytes.Buffer
		if err := WriteHeader(&buf, &r); err != nil {
			t.Fatal(err)
		}
		var got Response
		if err := ReadHeader(bufio.NewReader(&buf), &got); err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("%+v: read %+v, %v", r, got, err)
		}
	}
}

func TestRequestRefused(t *testing.T) {
	h := bao.Sum(nil)
	hs := h.String()
	for in, want := range map[string]string{
		`{"op":"get"}`: "hash is required",
		`{"op":"get","hash":"` + hs + `","size":1}`:                 "belong to a put",
		`{"op":"get","hash":"` + hs + `","ranges":[{"offset":-1}]}`: "not negative",
		`{"op":"put","size":-1}`:                                    "negative",
		`{"op":"put","size":1,"ranges":[{"offset":0}]}`:             "belong to a get",
		`{"op":"put","size":1,"tag":"a\u0001"}`:                     "control characters",
		`{"op":"delete"}`:                                           "unknown op",
		`{"op":"put","size":1,"extra":true}`:                        "unknown field",
		`{"op":"put"} {"op":"put"}`:                                 "more than one",
		`{"op":"get","hash":"blake3:ab"}`:                           "invalid hash",
		`not json`:                                                  "header",
	} {
		_, err := ParseRequest(bufio.NewReader(strings.NewReader(in + "\n")))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", in, err, want)
		}
	}
	var ranges strings.Builder
	ranges.WriteString(`{"op":"get","hash":"` + hs + `","ranges":[`)
	for i := range MaxRanges + 1 {
		if i > 0 {
			ranges.WriteByte(',')
		}
		ranges.WriteString(`{"offset":0}`)
	}
	ranges.WriteString("]}\n")
	if _, err := ParseRequest(bufio.NewReader(strings.NewReader(ranges.String()))); err == nil || !strings.Contains(err.Error(), "ranges") {
		t.Fatalf("%d ranges: %v", MaxRanges+1, err)
	}
}

func TestHeaderBounds(t *testing.T) {
	long := `{"op":"put","size":1,"tag":"` + strings.Repeat("a", MaxHeader) + `"}` + "\n"
	if _, err := ParseRequest(bufio.NewReader(strings.NewReader(long))); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("a header over MaxHeader: %v", err)
	}
	if err := WriteHeader(io.Discard, &Request{Op: OpPut, Tag: strings.Repeat("a", MaxHeader)}); err == nil {
		t.Fatal("WriteHeader wrote a header over MaxHeader")
	}
	// Exactly MaxHeader bytes, newline included, is accepted.
	pad := MaxHeader - len(`{"op":"put","size":1}`) - 1
	exact := `{"op":"put","size":1}` + strings.Repeat(" ", pad) + "\n"
	if _, err := ParseRequest(bufio.NewReader(strings.NewReader(exact))); err != nil {
		t.Fatalf("a header of exactly MaxHeader bytes: %v", err)
	}
	if _, err := ParseRequest(bufio.NewReader(strings.NewReader(`{"op":"put"}`))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a header without its newline: %v", err)
	}
	if _, err := ParseRequest(bufio.NewReader(strings.NewReader(""))); !errors.Is(err, io.EOF) {
		t.Fatalf("no header: %v", err)
	}
}

func TestValidTag(t *testing.T) {
	for _, ok := range []string{"a", "release/v1.2", "with space", "ünïcode", strings.Repeat("x", 255)} {
		if err := ValidTag(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 256), "a\nb", "tab\t", "del\x7f"} {
		if err := ValidTag(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCollectionRoundTrip(t *testing.T) {
	c := &Collection{Entries: []Entry{
		{Path: "z/last.txt", Hash: bao.Sum([]byte("z")), Size: 1},
		{Path: "a.txt", Hash: bao.Sum([]byte("a")), Size: 1, Mode: 0o755},
		{Path: "dir/sub/file", Hash: bao.Sum(nil)},
	}}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseCollection(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Format != CollectionFormat || len(got.Entries) != 3 || got.Entries[0].Path != "a.txt" || got.Entries[2].Path != "z/last.txt" || got.Entries[0].Mode != 0o755 {
		t.Fatalf("parsed %+v", got)
	}
	b2, err := got.Marshal()
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("marshalled again: %s, %v; want %s", b2, err, b)
	}
	// Order does not change the encoding, so one tree gives one hash.
	c.Entries[0], c.Entries[2] = c.Entries[2], c.Entries[0]
	if b3, _ := c.Marshal(); !bytes.Equal(b, b3) {
		t.Fatal("the encoding depends on the order of the entries")
	}
}

func TestCollectionRefused(t *testing.T) {
	h := bao.Sum(nil).String()
	entry := func(path string, extra string) string {
		return `{"path":"` + path + `","hash":"` + h + `","size":0` + extra + `}`
	}
	coll := func(entries ...string) string {
		return `{"alknet_collection":"1","entries":[` + strings.Join(entries, ",") + `]}`
	}
	for in, want := range map[string]string{
		`{"alknet_collection":"2","entries":[]}`: "format",
		coll(entry("/abs", "")):                  "relative",
		coll(entry("a/../b", "")):                "not clean",
		coll(entry("..", "")):                    "not allowed",
		coll(entry(`a\\b`, "")):                  "relative",
		coll(entry("a", ""), entry("a", "")):     "twice",
		coll(entry("a", ""), entry("a/b", "")):   "directory",
		coll(entry("a", `,"mode":4095`)):         "permission bits",
		coll(entry("a", `,"size":-1`)):           "",
		coll(entry("a", `,"owner":"x"`)):         "unknown field",
		coll() + " {}":                           "after the JSON",
		`[]`:                                     "not a collection",
	} {
		_, err := ParseCollection([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", in, err, want)
		}
	}
	if _, err := (&Collection{Entries: []Entry{{Path: "../x"}}}).Marshal(); err == nil {
		t.Fatal("Marshal accepted an invalid path")
	}
}

// FuzzCollection: ParseCollection never panics; what it accepts is valid,
// and marshals to an encoding it parses back to the same collection.
func FuzzCollection(f *testing.F) {
	h := bao.Sum(nil).String()
	f.Add([]byte(`{"alknet_collection":"1","entries":[]}`))
	f.Add([]byte(`{"alknet_collection":"1","entries":[{"path":"a/b","hash":"` + h + `","size":3,"mode":420},{"path":"c","hash":"` + h + `","size":0}]}`))
	f.Add([]byte(`{"alknet_collection":"1","entries":[{"path":"a","hash":"` + h + `","size":0},{"path":"a/b","hash":"` + h + `","size":0}]}`))
	f.Add([]byte(`{"alknet_collection":"1","entries":[{"path":"./a","hash":"` + h + `","size":-1}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"alknet_collection":"1","entries":null} x`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCollection(b)
		if err != nil {
			return
		}
		for _, e := range c.Entries {
			if ValidPath(e.Path) != nil || e.Size < 0 || e.Mode&^0o777 != 0 {
				t.Fatalf("accepted entry %+v", e)
			}
		}
		m, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of an accepted collection: %v", err)
		}
		c2, err := ParseCollection(m)
		if err != nil {
			t.Fatalf("ParseCollection of %s: %v", m, err)
		}
		if len(c2.Entries) != len(c.Entries) {
			t.Fatalf("%d entries, then %d", len(c.Entries), len(c2.Entries))
		}
		for i := 1; i < len(c2.Entries); i++ {
			if c2.Entries[i-1].Path >= c2.Entries[i].Path {
				t.Fatalf("entries not sorted: %q, %q", c2.Entries[i-1].Path, c2.Entries[i].Path)
			}
		}
		m2, err := c2.Marshal()
		if err != nil || !bytes.Equal(m, m2) {
			t.Fatalf("marshalled twice: %s then %s (%v)", m, m2, err)
		}
	})
}
