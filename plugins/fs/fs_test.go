package fs

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
	"alknet.dev/alknet/plugins/sdk"
)

// callJSON calls op as id and decodes its output.
func callJSON[T any](t *testing.T, e *env, op string, in any, id *sdk.Identity) T {
	t.Helper()
	out, err := e.call(op, in, id)
	if err != nil {
		t.Fatal(err)
	}
	var v T
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// stats calls fs/stats while the counters stand still (no transfer in
// progress) and checks the answer against them.
func stats(t *testing.T, e *env) Stats {
	t.Helper()
	s := callJSON[Stats](t, e, OpStats, nil, reader)
	if s != e.p.snapshot() {
		t.Fatalf("fs/stats %+v, counters %+v", s, e.p.snapshot())
	}
	return s
}

func TestPutGetRoundTrip(t *testing.T) {
	e := start(t, nil)
	for i, n := range []int{0, 1, G, G + 1, 3<<20 + 123} {
		data := content(n, uint64(i))
		var want *bao.Hash
		if i%2 == 0 {
			h := bao.Sum(data)
			want = &h
		}
		resp := e.put(writer, data, want, "")
		if resp.Error != nil || resp.Hash == nil || *resp.Hash != bao.Sum(data) || resp.Size != int64(n) {
			t.Fatalf("put of %d bytes: %+v", n, resp)
		}
		h := *resp.Hash
		for _, p := range []string{e.p.store.Load().blobPath(h), e.p.store.Load().obaoPath(h)} {
			st, err := os.Stat(p)
			if err != nil || st.Mode().Perm() != 0o444 {
				t.Fatalf("%s: %v %v, want mode 0444", p, st, err)
			}
		}
		got, rest, err := e.get(reader, h)
		if err != nil || got.Error != nil || got.Size != int64(n) {
			t.Fatalf("get of %d bytes: %+v %v", n, got, err)
		}
		verifyRanges(t, data, rest)
	}
	if files := tmpFiles(t, e.root); len(files) != 0 {
		t.Fatalf("temporary files left: %v", files)
	}
	s := stats(t, e)
	if s.Puts != 5 || s.Gets != 5 || s.BytesReceived != 3<<20+123+2*G+2 || s.Corrupt != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestGetRanges(t *testing.T) {
	e := start(t, nil)
	size := int64(10*G + 100)
	data := content(int(size), 9)
	h := e.mustPut(data, "")
	cases := [][]wire.Range{
		{{Offset: 0, Length: 1}},
		{{Offset: G - 1, Length: 2}},
		{{Offset: 3*G + 5}},                       // to the end
		{{Offset: size}},                          // empty, at the end
		{{Offset: 5 * G, Length: G}, {Offset: 0}}, // several, in order
		{{Offset: size - 1, Length: 1}, {Offset: 2 * G, Length: 3 * G}, {Offset: 7, Length: 9}},
	}
	var wantWire, wantContent int64
	for _, ranges := range cases {
		before := e.p.snapshot()
		resp, rest, err := e.get(reader, h, ranges...)
		if err != nil || resp.Error != nil || resp.Size != size {
			t.Fatalf("get %+v: %+v %v", ranges, resp, err)
		}
		verifyRanges(t, data, rest, ranges...)
		var w, c int64
		for _, g := range ranges {
			n := g.Length
			if n == 0 {
				n = size - g.Offset
			}
			es, _ := bao.EncodedSliceSize(size, g.Offset, n)
			first, end, _ := bao.SliceGroups(size, g.Offset, n)
			w += es
			for i := first; i < end; i++ {
				_, l := bao.GroupSpan(size, i)
				c += l
			}
		}
		after := e.p.snapshot()
		if after.BytesSent-before.BytesSent != w || after.ContentBytesSent-before.ContentBytesSent != c {
			t.Fatalf("get %+v: counted %d wire and %d content bytes, want %d and %d", ranges,
				after.BytesSent-before.BytesSent, after.ContentBytesSent-before.ContentBytesSent, w, c)
		}
		if int64(len(rest)) != w {
			t.Fatalf("get %+v: %d bytes on the wire, counted %d", ranges, len(rest), w)
		}
		wantWire += w
		wantContent += c
	}
	// A resumed download costs at most the remainder plus one group.
	before := e.p.snapshot()
	from := int64(3*G + G/2)
	if _, rest, err := e.get(reader, h, wire.Range{Offset: from}); err != nil {
		t.Fatal(err)
	} else {
		verifyRanges(t, data, rest, wire.Range{Offset: from})
	}
	if sent := e.p.snapshot().ContentBytesSent - before.ContentBytesSent; sent > size-from+G {
		t.Fatalf("resuming at %d sent %d content bytes, more than the remainder %d plus one group", from, sent, size-from)
	}
	s := stats(t, e)
	if s.Gets != int64(len(cases))+1 || s.BytesSent < wantWire || s.ContentBytesSent < wantContent {
		t.Fatalf("stats %+v", s)
	}

	for _, bad := range [][]wire.Range{{{Offset: size + 1}}, {{Offset: 0, Length: size + 1}}, {{Offset: 5, Length: 1}, {Offset: size - 1, Length: 2}}} {
		resp, _, err := e.get(reader, h, bad...)
		if err != nil || resp.Error == nil || resp.Error.Code != "INVALID_INPUT" || !strings.Contains(resp.Error.Message, "outside") {
			t.Fatalf("get %+v: %+v %v", bad, resp, err)
		}
	}
	if s2 := stats(t, e); s2.Gets != s.Gets || s2.BytesSent != s.BytesSent {
		t.Fatalf("refused gets were counted: %+v", s2)
	}
	var unknown bao.Hash
	resp, _, err := e.get(reader, unknown)
	if err != nil || resp.Error == nil || resp.Error.Code != "NOT_FOUND" {
		t.Fatalf("get of an unknown blob: %+v %v", resp, err)
	}
}

func TestDedup(t *testing.T) {
	e := start(t, nil)
	data := content(2*G+7, 3)
	h1 := e.mustPut(data, "")
	h2 := e.mustPut(data, "")
	if h1 != h2 {
		t.Fatal("two puts of the same content answered two hashes")
	}
	if files := blobFiles(t, e.root); len(files) != 1 {
		t.Fatalf("blob files %v, want one", files)
	}
	if files := tmpFiles(t, e.root); len(files) != 0 {
		t.Fatalf("temporary files left: %v", files)
	}
	if s := stats(t, e); s.Puts != 2 || s.BytesReceived != 2*int64(len(data)) {
		t.Fatalf("stats %+v", s)
	}
}

func TestHashMismatchRefused(t *testing.T) {
	e := start(t, nil)
	data := content(G+3, 4)
	wrong := bao.Sum([]byte("something else"))
	resp := e.put(writer, data, &wrong, "t")
	if resp.Error == nil || resp.Error.Code != "INVALID_INPUT" || !strings.Contains(resp.Error.Message, wrong.String()) || resp.Hash != nil {
		t.Fatalf("put with a wrong hash: %+v", resp)
	}
	if files := blobFiles(t, e.root); len(files) != 0 {
		t.Fatalf("blob files after a refused put: %v", files)
	}
	if files := tmpFiles(t, e.root); len(files) != 0 {
		t.Fatalf("temporary files left: %v", files)
	}
	out, err := e.call(OpList, nil, reader)
	if err != nil || string(out) != "[]" {
		t.Fatalf("fs/list after a refused put: %s %v", out, err)
	}
	if s := stats(t, e); s.Puts != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPutStreamEndsEarly(t *testing.T) {
	e := start(t, nil)
	resp, _, err := e.exchange(writer, &wire.Request{Op: wire.OpPut, Size: 100}, make([]byte, 40))
	if err != nil || resp.Error == nil || resp.Error.Code != "INVALID_INPUT" || !strings.Contains(resp.Error.Message, "40 of the 100") {
		t.Fatalf("short put: %+v %v", resp, err)
	}
	if files := blobFiles(t, e.root); len(files) != 0 {
		t.Fatalf("blob files after a short put: %v", files)
	}
}

func TestCorruptContentQuarantined(t *testing.T) {
	e := start(t, nil)
	data := content(5*G, 5)
	h := e.mustPut(data, "kept")
	st := e.p.store.Load()
	flipByte(t, st.blobPath(h), 2*G+100)

	resp, rest, err := e.get(reader, h)
	if code, ok := resetCode(err); !ok || code != wire.CodeCorrupt {
		t.Fatalf("get of a corrupted blob ended with %v (%d bytes), want a reset with code %d", err, len(rest), wire.CodeCorrupt)
	}
	// A reset may overtake what was sent before it (the header too);
	// what arrived verifies up to the bad group, which never does.
	if resp != nil {
		if resp.Size != 5*G {
			t.Fatalf("header %+v", resp)
		}
		got, verr := io.ReadAll(bao.NewSliceVerifier(strings.NewReader(string(rest)), h, 5*G, 0, 5*G))
		if verr == nil || len(got) > 2*G || string(got) != string(data[:len(got)]) {
			t.Fatalf("client got %d verified bytes, %v", len(got), verr)
		}
	}
	s := stats(t, e)
	if s.ContentBytesSent != 2*G || s.Corrupt != 1 || s.Gets != 0 {
		t.Fatalf("stats %+v: want the two good groups sent and one corrupt blob", s)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, `"@message":"blob failed verification"`) || !strings.Contains(logs, `"group":2`) ||
		!strings.Contains(logs, h.String()) || !strings.Contains(logs, `"@level":"error"`) {
		t.Fatalf("log lacks the corruption: %s", logs)
	}
	if _, err := os.Stat(st.quarantinePath(h)); err != nil {
		t.Fatalf("not quarantined: %v", err)
	}
	if _, err := os.Stat(st.blobPath(h)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("still in blobs/: %v", err)
	}
	resp, _, err = e.get(reader, h)
	if err != nil || resp.Error == nil || resp.Error.Code != "NOT_FOUND" || !strings.Contains(resp.Error.Message, "quarantined as corrupted") {
		t.Fatalf("later get: %+v %v", resp, err)
	}
	out, err := e.call(OpStat, HashInput{Hash: h.String()}, reader)
	if err != nil || !strings.Contains(string(out), `"present":false`) || !strings.Contains(string(out), `"quarantined":true`) || !strings.Contains(string(out), `"kept"`) {
		t.Fatalf("fs/stat of the quarantined blob: %s %v", out, err)
	}
	// A put of the same content restores it.
	e.mustPut(data, "")
	if _, rest, err := e.get(reader, h); err != nil {
		t.Fatal(err)
	} else {
		verifyRanges(t, data, rest)
	}
	if s := stats(t, e); s.Corrupt != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCorruptOutboard(t *testing.T) {
	e := start(t, nil)
	data := content(4*G+1, 6)
	h := e.mustPut(data, "")
	st := e.p.store.Load()
	flipByte(t, st.obaoPath(h), 8+64+5) // a parent node below the root
	_, _, err := e.get(reader, h, wire.Range{Offset: 3 * G})
	if code, ok := resetCode(err); !ok || code != wire.CodeCorrupt {
		t.Fatalf("get with a corrupted outboard ended with %v", err)
	}
	if s := stats(t, e); s.Corrupt != 1 || s.ContentBytesSent != 0 {
		t.Fatalf("stats %+v", s)
	}
	if !strings.Contains(e.logs.String(), `"bad":"outboard"`) {
		t.Fatalf("log does not name the outboard: %s", e.logs.String())
	}

	// An outboard of the wrong size is found before anything is sent.
	data2 := content(3*G, 7)
	h2 := e.mustPut(data2, "")
	if err := os.Chmod(st.obaoPath(h2), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(st.obaoPath(h2), 8); err != nil {
		t.Fatal(err)
	}
	resp, _, err := e.get(reader, h2)
	if err != nil || resp.Error == nil || resp.Error.Code != "CORRUPT" {
		t.Fatalf("get with a truncated outboard: %+v %v", resp, err)
	}
	if s := stats(t, e); s.Corrupt != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestCorruptSentGroupKnob(t *testing.T) {
	CorruptSentGroup = "1"
	t.Cleanup(func() { CorruptSentGroup = "" })
	e := start(t, nil)
	data := content(3*G, 8)
	h := e.mustPut(data, "")
	_, rest, err := e.get(reader, h)
	if err != nil {
		t.Fatalf("the sender verified its blob, the get should end cleanly: %v", err)
	}
	_, verr := io.ReadAll(bao.NewSliceVerifier(strings.NewReader(string(rest)), h, 3*G, 0, 3*G))
	var ge *bao.GroupError
	if !errors.As(verr, &ge) || ge.Index != 1 {
		t.Fatalf("client verification: %v, want group 1 to fail", verr)
	}
	if s := stats(t, e); s.Corrupt != 0 || s.ContentBytesSent != 3*G {
		t.Fatalf("stats %+v", s)
	}

	CorruptSentGroup = "x"
	if err := (&Plugin{}).Configure(ctx(t), json.RawMessage(`{"root":"`+t.TempDir()+`"}`), &sdk.Host{}); err == nil || !strings.Contains(err.Error(), "CorruptSentGroup") {
		t.Fatalf("Configure with CorruptSentGroup=x: %v", err)
	}
}

func TestScopes(t *testing.T) {
	e := start(t, nil)
	data := []byte("hello")
	h := e.mustPut(data, "")
	for _, c := range []struct {
		id    *sdk.Identity
		req   *wire.Request
		scope string
	}{
		{nil, &wire.Request{Op: wire.OpGet, Hash: &h}, ScopeRead},
		{&sdk.Identity{ID: "nobody"}, &wire.Request{Op: wire.OpGet, Hash: &h}, ScopeRead},
		{nil, &wire.Request{Op: wire.OpPut, Size: 5}, ScopeWrite},
		{reader, &wire.Request{Op: wire.OpPut, Size: 5}, ScopeWrite},
	} {
		resp, rest, err := e.exchange(c.id, c.req, data)
		if err != nil || resp.Error == nil || resp.Error.Code != "FORBIDDEN" || !strings.Contains(resp.Error.Message, c.scope) || len(rest) != 0 {
			t.Fatalf("%s as %v: %+v %v", c.req.Op, c.id, resp, err)
		}
	}
	if s := stats(t, e); s.Gets != 0 || s.Puts != 1 || s.BytesReceived != 5 {
		t.Fatalf("refused requests were served: %+v", s)
	}
	var se *sdk.Error
	for _, c := range []struct {
		op string
		in any
		id *sdk.Identity
	}{
		{OpList, nil, nil},
		{OpStats, nil, &sdk.Identity{ID: "nobody"}},
		{OpTag, TagInput{Name: "x", Hash: h.String()}, reader},
		{OpGC, nil, reader},
		{OpDelete, DeleteInput{Hash: h.String()}, reader},
	} {
		if _, err := e.call(c.op, c.in, c.id); !errors.As(err, &se) || se.Code != sdk.CodeForbidden {
			t.Fatalf("%s as %v: %v", c.op, c.id, err)
		}
	}
}

func TestRequestHeaderErrors(t *testing.T) {
	e := start(t, nil)
	for _, raw := range []string{"not json\n", `{"op":"get"}` + "\n", `{"op":"put","size":1,"extra":1}` + "\n", `{"op":"get","hash":"blake3:00"}` + "\n"} {
		resp, _, err := e.exchange(writer, []byte(raw), nil)
		if err != nil || resp.Error == nil || resp.Error.Code != "INVALID_INPUT" {
			t.Fatalf("request %q: %+v %v", raw, resp, err)
		}
	}
	e.p.headerTimeout = 100 * time.Millisecond
	s := e.stream(writer)
	defer s.Close()
	if _, err := s.Write([]byte(`{"op":`)); err != nil {
		t.Fatal(err)
	}
	var resp wire.Response
	if err := wire.ReadHeader(bufio.NewReader(s), &resp); err != nil || resp.Error == nil || !strings.Contains(resp.Error.Message, "no request header within") {
		t.Fatalf("slow header: %+v %v", resp, err)
	}
}

func TestLimits(t *testing.T) {
	e := start(t, map[string]any{"max_blob_size": "1KiB", "max_puts": 2})
	resp := e.put(writer, make([]byte, 1025), nil, "")
	if resp.Error == nil || resp.Error.Code != "TOO_LARGE" {
		t.Fatalf("put over max_blob_size: %+v", resp)
	}
	e.mustPut(make([]byte, 1024), "")

	// Two puts in progress take every slot.
	data := [][]byte{content(1000, 1), content(1000, 2)}
	streams := make([]io.ReadWriteCloser, 2)
	for i := range streams {
		s := e.stream(writer)
		var hb strings.Builder
		_ = wire.WriteHeader(&hb, &wire.Request{Op: wire.OpPut, Size: 1000})
		if _, err := s.Write(append([]byte(hb.String()), data[i][:10]...)); err != nil {
			t.Fatal(err)
		}
		streams[i] = s
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.p.putsActive.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the two puts did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp = e.put(writer, []byte("third"), nil, "")
	if resp.Error == nil || resp.Error.Code != "UNAVAILABLE" || !strings.Contains(resp.Error.Message, "max_puts") {
		t.Fatalf("a third put: %+v", resp)
	}
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Add(1)
		go func() { // owner: the test, which waits for it
			defer wg.Done()
			_, _ = s.Write(data[i][10:])
			_ = s.(interface{ CloseWrite() error }).CloseWrite()
		}()
		var resp wire.Response
		if err := wire.ReadHeader(bufio.NewReader(s), &resp); err != nil || resp.Error != nil || *resp.Hash != bao.Sum(data[i]) {
			t.Fatalf("put %d: %+v %v", i, resp, err)
		}
	}
	wg.Wait()
	if files := blobFiles(t, e.root); len(files) != 3 {
		t.Fatalf("blob files %v, want 3", files)
	}
}

func TestGCKeepsTaggedAndLeased(t *testing.T) {
	e := start(t, map[string]any{"lease": "10m"})
	gc := func() GCOutput {
		t.Helper()
		return callJSON[GCOutput](t, e, OpGC, nil, writer)
	}
	a := e.mustPut(content(G+1, 1), "a") // tagged
	b := e.mustPut(content(3*G, 2), "")  // leased until 10m
	e.clock.advance(6 * time.Minute)     //
	c := e.mustPut(content(100, 3), "")  // leased until 16m
	if g := gc(); len(g.Removed) != 0 || g.Kept != 3 {
		t.Fatalf("gc at 6m: %+v", g)
	}
	e.clock.advance(5 * time.Minute) // 11m: b's lease is over
	g := gc()
	if len(g.Removed) != 1 || g.Removed[0] != b.String() || g.Kept != 2 || g.BytesFreed != 3*G+bao.OutboardSize(3*G) {
		t.Fatalf("gc at 11m: %+v, want %s removed", g, b)
	}
	out, err := e.call(OpStat, HashInput{Hash: c.String()}, reader)
	if err != nil || !strings.Contains(string(out), `"leased":true`) {
		t.Fatalf("fs/stat of c: %s %v", out, err)
	}
	var se *sdk.Error
	if _, err := e.call(OpStat, HashInput{Hash: b.String()}, reader); !errors.As(err, &se) || se.Code != sdk.CodeNotFound {
		t.Fatalf("fs/stat of the collected blob: %v", err)
	}
	e.clock.advance(6 * time.Minute) // 17m
	if g := gc(); len(g.Removed) != 1 || g.Removed[0] != c.String() || g.Kept != 1 {
		t.Fatalf("gc at 17m: %+v", g)
	}
	// Untagged, a is collected.
	if _, err := e.call(OpUntag, UntagInput{Name: "a"}, writer); err != nil {
		t.Fatal(err)
	}
	if g := gc(); len(g.Removed) != 1 || g.Removed[0] != a.String() {
		t.Fatalf("gc after untag: %+v", g)
	}
	if files := blobFiles(t, e.root); len(files) != 0 {
		t.Fatalf("left: %v", files)
	}
}

// Leases are kept on disk: a restarted plugin (or the other process of a
// version switch) honours those granted before.
func TestLeaseSurvivesRestart(t *testing.T) {
	root := t.TempDir()
	e := startAt(t, root, map[string]any{"lease": "10m"})
	h := e.mustPut(content(10, 1), "")
	e.p.closeStore()
	st, err := openStore(root, 10*time.Minute, e.clock.now)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if g, err := st.gc(); err != nil || len(g.Removed) != 0 || g.Kept != 1 {
		t.Fatalf("gc right after a restart: %+v %v", g, err)
	}
	e.clock.advance(10 * time.Minute)
	if g, err := st.gc(); err != nil || len(g.Removed) != 1 || g.Removed[0] != h {
		t.Fatalf("gc one lease after a restart: %+v %v", g, err)
	}
}

func TestTagsAndRestart(t *testing.T) {
	root := t.TempDir()
	e := startAt(t, root, nil)
	h1 := e.mustPut([]byte("one"), "first")
	h2 := e.mustPut([]byte("two"), "")
	var se *sdk.Error
	if _, err := e.call(OpTag, TagInput{Name: "second", Hash: h2.String()}, writer); err != nil {
		t.Fatal(err)
	}
	out, err := e.call(OpTag, TagInput{Name: "first", Hash: h2.String()}, writer)
	if err != nil || !strings.Contains(string(out), `"previous":"`+h1.String()) {
		t.Fatalf("retag: %s %v", out, err)
	}
	if _, err := e.call(OpTag, TagInput{Name: "first", Hash: h1.String()}, writer); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(OpTag, TagInput{Name: "x", Hash: bao.Sum([]byte("absent")).String()}, writer); !errors.As(err, &se) || se.Code != sdk.CodeNotFound {
		t.Fatalf("tag of an absent blob: %v", err)
	}
	if _, err := e.call(OpTag, TagInput{Name: "bad\n", Hash: h1.String()}, writer); !errors.As(err, &se) || se.Code != sdk.CodeInvalidInput {
		t.Fatalf("tag with a control character: %v", err)
	}
	if _, err := e.call(OpTag, TagInput{Name: "x", Hash: "sha256:00"}, writer); !errors.As(err, &se) || se.Code != sdk.CodeInvalidInput {
		t.Fatalf("tag with a bad hash: %v", err)
	}
	if _, err := e.call(OpUntag, UntagInput{Name: "nope"}, writer); !errors.As(err, &se) || se.Code != sdk.CodeNotFound {
		t.Fatalf("untag of an unknown tag: %v", err)
	}
	want := `[{"name":"first","hash":"` + h1.String() + `","size":3,"present":true},{"name":"second","hash":"` + h2.String() + `","size":3,"present":true}]`
	if out, err := e.call(OpList, nil, reader); err != nil || string(out) != want {
		t.Fatalf("fs/list: %s %v", out, err)
	}

	// A new process on the same store sees the same tags.
	e.p.closeStore()
	e2 := startAt(t, root, nil)
	if out, err := e2.call(OpList, nil, reader); err != nil || string(out) != want {
		t.Fatalf("fs/list after a restart: %s %v", out, err)
	}

	// Delete: a tagged blob only with force, which removes its tags.
	if _, err := e2.call(OpDelete, DeleteInput{Hash: h2.String()}, writer); !errors.As(err, &se) || se.Code != sdk.CodeInvalidInput || !strings.Contains(se.Message, "second") {
		t.Fatalf("delete of a tagged blob: %v", err)
	}
	out, err = e2.call(OpDelete, DeleteInput{Hash: h2.String(), Force: true}, writer)
	if err != nil || !strings.Contains(string(out), `"untagged":["second"]`) {
		t.Fatalf("forced delete: %s %v", out, err)
	}
	if _, err := e2.call(OpDelete, DeleteInput{Hash: h2.String()}, writer); !errors.As(err, &se) || se.Code != sdk.CodeNotFound {
		t.Fatalf("delete of a deleted blob: %v", err)
	}
	out, err = e2.call(OpStat, HashInput{Hash: h1.String()}, reader)
	if err != nil || string(out) != `{"hash":"`+h1.String()+`","size":3,"present":true,"tags":["first"],"leased":true}` {
		t.Fatalf("fs/stat: %s %v", out, err)
	}
}

func TestStoreClearsTmpOfStoppedProcesses(t *testing.T) {
	root := t.TempDir()
	clock := newClock()
	a, err := openStore(root, time.Minute, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	f, err := a.tempFile("put-*")
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	stale := filepath.Join(root, tmpDir, "deadbeef")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(stale, "put-1"), []byte("x"), 0o600)
	// A second process (a version switch) keeps a's files.
	b, err := openStore(root, time.Minute, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Name()); err != nil {
		t.Fatalf("a running store's temporary file was removed: %v", err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a stale directory was kept: %v", err)
	}
	// Once a is gone (even without closing), a new store clears its files.
	_ = a.tmpLock.Unlock()
	c, err := openStore(root, time.Minute, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a stopped store's temporary file was kept: %v", err)
	}
	b.close()
	c.close()
	entries, _ := os.ReadDir(filepath.Join(root, tmpDir))
	if len(entries) != 0 {
		t.Fatalf("tmp/ after every store closed: %v", entries)
	}
}

func TestSettings(t *testing.T) {
	p := &Plugin{}
	for _, ok := range []string{`{}`, `null`, ``, `{"max_blob_size":"10GiB","max_puts":3,"lease":"30m","root":"/srv/fs"}`, `{"max_blob_size":1048576}`} {
		if err := p.ValidateSettings(json.RawMessage(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for in, want := range map[string]string{
		`{"roots":"/x"}`:              `unknown field "roots"`,
		`{"root":"rel"}`:              "absolute",
		`{"max_blob_size":"10 XB"}`:   "unit",
		`{"max_blob_size":0}`:         "at least 1 byte",
		`{"max_puts":0}`:              "max_puts 0",
		`{"lease":"10"}`:              "Go duration",
		`{"lease":"10ms"}`:            "at least 1s",
		`{"max_puts":"8"}`:            "max_puts",
		`{"lease":"1m","extra":true}`: `unknown field "extra"`,
	} {
		if err := p.ValidateSettings(json.RawMessage(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", in, err, want)
		}
	}
	c, err := parseSettings(json.RawMessage(`{"max_blob_size":"10GiB"}`), "/data/fs")
	if err != nil || c.maxBlobSize != 10<<30 || c.root != "/data/fs" || c.maxPuts != DefaultMaxPuts || c.lease != DefaultLease {
		t.Fatalf("%+v %v", c, err)
	}
	if err := (&Plugin{}).Configure(ctx(t), nil, &sdk.Host{}); err == nil || !strings.Contains(err.Error(), "set root") {
		t.Fatalf("Configure without a state directory: %v", err)
	}
	if !json.Valid([]byte(configSchema)) {
		t.Fatal("the settings schema is not JSON")
	}
}

func TestReconfigure(t *testing.T) {
	e := start(t, map[string]any{"max_puts": 1})
	if err := e.h.Reconfigure(map[string]any{"root": e.root, "max_blob_size": 10}); err != nil {
		t.Fatal(err)
	}
	if resp := e.put(writer, make([]byte, 11), nil, ""); resp.Error == nil || resp.Error.Code != "TOO_LARGE" {
		t.Fatalf("put after lowering max_blob_size: %+v", resp)
	}
	if err := e.p.Configure(ctx(t), json.RawMessage(`{"root":"`+t.TempDir()+`"}`), &sdk.Host{}); !errors.Is(err, sdk.ErrRestartRequired) {
		t.Fatalf("a new root: %v, want a restart", err)
	}
}

// The files of a tagged collection survive gc with it (a tree is put as
// untagged files, then its tagged collection); untagging the collection
// lets them go.
func TestGCKeepsTaggedCollectionMembers(t *testing.T) {
	e := start(t, map[string]any{"lease": "10m"})
	f1 := e.mustPut(content(G+5, 21), "")
	f2 := e.mustPut(content(7, 22), "")
	loose := e.mustPut(content(9, 23), "")
	col := wire.Collection{Entries: []wire.Entry{{Path: "a.bin", Hash: f1, Size: G + 5}, {Path: "d/b.bin", Hash: f2, Size: 7}}}
	b, err := col.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.mustPut(b, "tree")
	e.clock.advance(11 * time.Minute) // every lease is over
	out, err := e.call(OpGC, nil, writer)
	if err != nil {
		t.Fatal(err)
	}
	var g GCOutput
	if err := json.Unmarshal(out, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Removed) != 1 || g.Removed[0] != loose.String() || g.Kept != 3 {
		t.Fatalf("gc with a tagged collection: %+v, want only %s removed", g, loose)
	}
	if _, err := e.call(OpUntag, UntagInput{Name: "tree"}, writer); err != nil {
		t.Fatal(err)
	}
	out, _ = e.call(OpGC, nil, writer)
	if err := json.Unmarshal(out, &g); err != nil || len(g.Removed) != 3 {
		t.Fatalf("gc after untagging the collection: %s %v", out, err)
	}
}

// fs/stats counts a get as active from its request to its end, including
// a get its client abandons half way.
func TestStatsGetsActive(t *testing.T) {
	e := start(t, nil)
	// Larger than the bridge's flow-control windows, so the get stays
	// blocked in its writes until the client reads or goes away.
	h := e.mustPut(content(16<<20, 3), "")
	s := e.stream(reader)
	if err := wire.WriteHeader(s, &wire.Request{Op: wire.OpGet, Hash: &h}); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	var resp wire.Response
	if err := wire.ReadHeader(bufio.NewReader(s), &resp); err != nil || resp.Error != nil {
		t.Fatalf("get: %+v %v", resp, err)
	}
	// The counters move while a get runs: stats would not match them.
	active := func() int64 { return callJSON[Stats](t, e, OpStats, nil, reader).GetsActive }
	if n := active(); n != 1 {
		t.Fatalf("gets_active %d during a get, want 1", n)
	}
	s.Close()
	for deadline := time.Now().Add(10 * time.Second); active() != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the abandoned get is still counted as active")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, _, err := e.get(reader, h); err != nil {
		t.Fatal(err)
	}
	if s := stats(t, e); s.GetsActive != 0 || s.Gets != 1 {
		t.Fatalf("after one whole get and one abandoned: %+v", s)
	}
}
