package fsclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
)

const G = bao.GroupSize

func content(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 1})
	r.Read(b)
	return b
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// drops collects OnDrop reports.
type drops struct {
	mu   sync.Mutex
	list []Dropped
}

func (d *drops) add(x Dropped) {
	d.mu.Lock()
	d.list = append(d.list, x)
	d.mu.Unlock()
}

func (d *drops) get() []Dropped {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Dropped(nil), d.list...)
}

// Put then GetFile over the fake, for sizes around group and part
// boundaries, from one and from three sources.
func TestPutGetRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, G - 1, G, G + 1, 3*G + 5, 3<<20 + 7} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := content(size, uint64(size))
			a := newFake(t, "a")
			h, err := Put(context.Background(), a.open, bytes.NewReader(data), int64(size), "t")
			if err != nil {
				t.Fatal(err)
			}
			if h != bao.Sum(data) {
				t.Fatalf("Put returned %v, want %v", h, bao.Sum(data))
			}
			b, c := newFake(t, "b"), newFake(t, "c")
			b.add(data)
			c.add(data)
			for _, srcs := range [][]Source{{a.source()}, {a.source(), b.source(), c.source()}} {
				out := filepath.Join(t.TempDir(), "out")
				var total, progress int64
				res, err := GetFile(context.Background(), h, srcs, out, GetOptions{PartSize: 2 * G,
					OnStart: func(n int64) { total = n }, OnProgress: func(n int64) { progress += n }})
				if err != nil {
					t.Fatalf("GetFile from %d sources: %v", len(srcs), err)
				}
				if got := readFile(t, out); !bytes.Equal(got, data) {
					t.Fatalf("GetFile from %d sources: %d bytes differ from the %d put", len(srcs), len(got), size)
				}
				if res.Size != int64(size) || res.Fetched != int64(size) || total != int64(size) || progress != int64(size) {
					t.Fatalf("result %+v, OnStart %d, OnProgress total %d; want size %d", res, total, progress, size)
				}
				if _, err := os.Stat(out + ProgressSuffix); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("progress file left after a complete download: %v", err)
				}
			}
		})
	}
}

// The ranges requested are group-aligned parts that cover every group
// exactly once (after the probe of group 0), spread over the sources,
// several in flight.
func TestGetRangesSpread(t *testing.T) {
	data := content(64*G+100, 3)
	var nodes []*fakeNode
	var srcs []Source
	for _, name := range []string{"a", "b", "c"} {
		n := newFake(t, name)
		h := n.add(data)
		_ = h
		nodes = append(nodes, n)
		srcs = append(srcs, n.source())
	}
	h := bao.Sum(data)
	var buf writerAt
	if _, err := Get(context.Background(), h, srcs, &buf, GetOptions{PartSize: 4 * G, PerSource: 2}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.b, data) {
		t.Fatal("Get into a WriterAt: bytes differ")
	}
	covered := make([]int, bao.NumGroups(int64(len(data))))
	var all []wire.Range
	for _, n := range nodes {
		all = append(all, n.requested()...)
	}
	probes := 0
	for _, r := range all {
		if r == (wire.Range{Offset: 0, Length: 1}) {
			probes++
			covered[0]++
			continue
		}
		if r.Offset%G != 0 || r.Length <= 0 || (r.Length%G != 0 && r.Offset+r.Length != int64(len(data))) {
			t.Fatalf("range %+v is not group-aligned", r)
		}
		if r.Length > 4*G {
			t.Fatalf("range %+v is larger than the part size", r)
		}
		for g := r.Offset / G; g < (r.Offset+r.Length+G-1)/G; g++ {
			covered[g]++
		}
	}
	if probes != 1 {
		t.Fatalf("%d probes, want 1", probes)
	}
	for g, c := range covered {
		if c != 1 {
			t.Fatalf("group %d requested %d times, want once (ranges %v)", g, c, all)
		}
	}
	var sent int64
	for _, n := range nodes {
		sent += n.contentSent.Load()
	}
	if sent != int64(len(data)) {
		t.Fatalf("the sources sent %d content bytes, want %d", sent, len(data))
	}
}

type writerAt struct {
	mu sync.Mutex
	b  []byte
}

func (w *writerAt) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := off + int64(len(p)); n > int64(len(w.b)) {
		w.b = append(w.b, make([]byte, n-int64(len(w.b)))...)
	}
	return copy(w.b[off:], p), nil
}

// A source that sends bad groups is dropped, named with the group, and
// the rest of its part is fetched from another source; no bad byte
// reaches the output.
func TestLyingSourceDropped(t *testing.T) {
	data := content(40*G, 4)
	liar, honest := newFake(t, "liar"), newFake(t, "honest")
	h := liar.add(data)
	honest.add(data)
	liar.lieFrom = 3
	// The honest node answers only once the liar has been caught, so the
	// liar surely serves a part.
	honest.gate = make(chan struct{})
	var d drops
	out := filepath.Join(t.TempDir(), "out")
	res, err := GetFile(context.Background(), h, []Source{liar.source(), honest.source()}, out, GetOptions{PartSize: 8 * G, PerSource: 1,
		OnDrop: func(x Dropped) {
			d.add(x)
			close(honest.gate)
		}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), data) {
		t.Fatal("output differs from the blob")
	}
	got := d.get()
	if len(got) != 1 || got[0].Source != "liar" || got[0].Group < 3 || len(res.Dropped) != 1 {
		t.Fatalf("dropped %v (result %v), want the liar at a group >= 3", got, res.Dropped)
	}
	want := fmt.Sprintf("source liar dropped: group %d failed verification", got[0].Group)
	if got[0].Error() != want {
		t.Fatalf("drop says %q, want %q", got[0].Error(), want)
	}
	// The liar's verified groups (before the bad one) were kept: in all,
	// each group was sent once, plus the one the liar spoiled.
	if sent := liar.contentSent.Load() + honest.contentSent.Load(); sent != int64(len(data))+G {
		t.Fatalf("%d content bytes sent, want %d (each group once, the bad one twice)", sent, len(data)+G)
	}

	// The liar alone: the download fails naming it and the group, and that
	// group's bytes never reach the output.
	out2 := filepath.Join(t.TempDir(), "out")
	_, err = GetFile(context.Background(), h, []Source{liar.source()}, out2, GetOptions{PartSize: 8 * G, PerSource: 1})
	var nse *NoSourceError
	if !errors.As(err, &nse) || len(nse.Dropped) != 1 || nse.Dropped[0].Group != 3 ||
		!strings.Contains(err.Error(), "source liar dropped: group 3 failed verification") {
		t.Fatalf("liar alone: %v", err)
	}
	got2 := readFile(t, out2)
	if !bytes.Equal(got2[:3*G], data[:3*G]) || !bytes.Equal(got2[3*G:4*G], make([]byte, G)) {
		t.Fatal("liar alone: the groups before the bad one are not written, or the bad group's bytes are")
	}
}

// A source that finds its stored copy corrupt resets the stream with
// CodeCorrupt: dropped and named with the group, the download completes
// from the other.
func TestCorruptStoredCopyReset(t *testing.T) {
	data := content(20*G+9, 5)
	bad, good := newFake(t, "bad"), newFake(t, "good")
	h := bad.add(data)
	good.add(data)
	bad.corruptStored(h, 13)
	// The good node holds its one part in flight (the first or second)
	// until the bad one is dropped, so the bad one reaches group 13.
	good.gate = make(chan struct{})
	var d drops
	out := filepath.Join(t.TempDir(), "out")
	if _, err := GetFile(context.Background(), h, []Source{bad.source(), good.source()}, out, GetOptions{PartSize: 4 * G, PerSource: 1,
		OnDrop: func(x Dropped) {
			d.add(x)
			close(good.gate)
		}}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), data) {
		t.Fatal("output differs")
	}
	got := d.get()
	// In process nothing is lost before the reset: the group is exact.
	if len(got) != 1 || got[0].Source != "bad" || got[0].Group != 13 || !got[0].NodeCorrupt ||
		got[0].Error() != "source bad dropped: its stored copy failed verification at group 13 or after (the node stopped there; its log names the group)" {
		t.Fatalf("dropped %v", got)
	}
}

// A source that stops sending is dropped after the stall timeout.
func TestStalledSourceDropped(t *testing.T) {
	data := content(4*G, 6)
	slow, good := newFake(t, "slow"), newFake(t, "good")
	h := slow.add(data)
	good.add(data)
	slow.stall = make(chan struct{})
	defer close(slow.stall)
	var d drops
	var buf writerAt
	if _, err := Get(context.Background(), h, []Source{slow.source(), good.source()}, &buf, GetOptions{StallTimeout: 200 * time.Millisecond, OnDrop: d.add}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.b, data) {
		t.Fatal("output differs")
	}
	if got := d.get(); len(got) != 1 || got[0].Source != "slow" || !strings.Contains(got[0].Error(), "sent nothing for 200ms") {
		t.Fatalf("dropped %v", got)
	}
}

// An interrupted download resumes from its progress file: the rerun
// requests only the groups not recorded as verified.
func TestResumeFetchesOnlyMissingGroups(t *testing.T) {
	data := content(200*G+123, 7)
	a := newFake(t, "a")
	h := a.add(data)
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancel(context.Background())
	var seen int64
	_, err := GetFile(ctx, h, []Source{a.source()}, out, GetOptions{PartSize: 16 * G, PerSource: 2, OnProgress: func(n int64) {
		if seen += n; seen >= int64(len(data))/2 {
			cancel()
		}
	}})
	cancel()
	if err == nil || !strings.Contains(err.Error(), "rerun to resume") {
		t.Fatalf("interrupted get: %v", err)
	}
	pr, err := ReadProgress(readFile(t, out+ProgressSuffix))
	if err != nil {
		t.Fatal(err)
	}
	have := pr.VerifiedBytes()
	if pr.Hash != h || pr.Size != int64(len(data)) || have < int64(len(data))/2 || have == int64(len(data)) {
		t.Fatalf("progress %+v: %d bytes verified of %d", pr, have, len(data))
	}
	// A file that is there with its progress file is not refused: resumed.
	before := a.contentSent.Load()
	res, err := GetFile(context.Background(), h, []Source{a.source()}, out, GetOptions{PartSize: 16 * G})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, out), data) {
		t.Fatal("resumed output differs")
	}
	if sent := a.contentSent.Load() - before; sent != int64(len(data))-have || res.Fetched != sent || res.Resumed != have {
		t.Fatalf("resume: the source sent %d content bytes, result %+v; want exactly the %d missing", sent, res, int64(len(data))-have)
	}
	if _, err := os.Stat(out + ProgressSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("progress file left: %v", err)
	}
	// A complete file without progress is not replaced unless allowed.
	if _, err := GetFile(context.Background(), h, []Source{a.source()}, out, GetOptions{}); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("get over an existing file: %v", err)
	}
	if _, err := GetFile(context.Background(), h, []Source{a.source()}, out, GetOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
}

// A source without the blob is dropped with the node's reason.
func TestNotFound(t *testing.T) {
	a := newFake(t, "a")
	h := bao.Sum([]byte("nowhere"))
	out := filepath.Join(t.TempDir(), "out")
	_, err := GetFile(context.Background(), h, []Source{a.source()}, out, GetOptions{})
	if err == nil || !strings.Contains(err.Error(), "source a dropped: the node refused the get: NOT_FOUND") {
		t.Fatalf("get of a missing blob: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("output created although no source answered: %v", err)
	}
}

func writeTree(t *testing.T, dir string, files map[string]string, modes map[string]os.FileMode) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := modes[p]
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree returns every file under dir with its content and mode.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, _ := d.Info()
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = fmt.Sprintf("%v:%s", info.Mode(), readFile(t, p))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCollectionRoundTrip(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{
		"a.txt":              "alpha\n",
		"empty":              "",
		"sub/b.bin":          string(content(3*G+17, 8)),
		"sub/deeper/c.sh":    "#!/bin/sh\necho c\n",
		"sub/deeper/dup.txt": "alpha\n",
		"x.fsprogress":       "an entry named like a progress file\n",
	}
	writeTree(t, src, files, map[string]os.FileMode{"sub/deeper/c.sh": 0o755, "a.txt": 0o600})
	a := newFake(t, "a")
	var started int
	var sent int64
	h, col, err := PutDir(context.Background(), a.open, src, "tree", PutDirOptions{
		OnStart: func(n int, _ int64) { started = n }, OnProgress: func(n int64) { sent += n }})
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, c := range files {
		total += int64(len(c))
	}
	if started != len(files) || len(col.Entries) != len(files) || sent != total {
		t.Fatalf("PutDir: OnStart %d files, %d entries, %d bytes sent", started, len(col.Entries), sent)
	}
	// One tree, one hash.
	if h2, _, err := PutDir(context.Background(), a.open, src, "", PutDirOptions{}); err != nil || h2 != h {
		t.Fatalf("second PutDir: %v, %v; want the same hash %v", h2, err, h)
	}
	out := filepath.Join(t.TempDir(), "restored")
	res, col2, err := GetDir(context.Background(), h, []Source{a.source()}, out, GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != len(files) || len(col2.Entries) != len(files) {
		t.Fatalf("GetDir wrote %d files", res.Files)
	}
	want, got := readTree(t, src), readTree(t, out)
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("restored tree differs:\nwant %v\ngot  %v", want, got)
	}
	if _, err := os.Stat(out + ProgressSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("progress directory left: %v", err)
	}
	// A non-empty directory is refused unless allowed.
	if _, _, err := GetDir(context.Background(), h, []Source{a.source()}, out, GetOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("GetDir into a non-empty directory: %v", err)
	}
	if _, _, err := GetDir(context.Background(), h, []Source{a.source()}, out, GetOptions{Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	// A blob that is not a collection.
	plain := a.add([]byte("just bytes"))
	if _, _, err := GetDir(context.Background(), plain, []Source{a.source()}, filepath.Join(t.TempDir(), "d"), GetOptions{}); err == nil || !strings.Contains(err.Error(), "not a collection") {
		t.Fatalf("GetDir of a plain blob: %v", err)
	}
}

// An interrupted tree resumes: files complete are not fetched again.
func TestCollectionResume(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"1": string(content(40*G, 9)), "2": string(content(40*G, 10))}, nil)
	a := newFake(t, "a")
	h, _, err := PutDir(context.Background(), a.open, src, "", PutDirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "restored")
	ctx, cancel := context.WithCancel(context.Background())
	var seen int64
	_, _, err = GetDir(ctx, h, []Source{a.source()}, out, GetOptions{PartSize: 4 * G, PerSource: 1, OnProgress: func(n int64) {
		if seen += n; seen >= 60*G {
			cancel()
		}
	}})
	cancel()
	if err == nil {
		t.Fatal("interrupted GetDir succeeded")
	}
	before := a.contentSent.Load()
	res, _, err := GetDir(context.Background(), h, []Source{a.source()}, out, GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	colSize := int64(len(a.blobs[h].data))
	if sent := a.contentSent.Load() - before - colSize; sent != 80*G-res.Resumed || res.Resumed < 60*G {
		t.Fatalf("resumed tree: %d content bytes sent, %d resumed", sent, res.Resumed)
	}
	if fmt.Sprint(readTree(t, src)) != fmt.Sprint(readTree(t, out)) {
		t.Fatal("resumed tree differs")
	}
}

func TestPutDirRefusesLinksAndSpecialFiles(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, map[string]string{"ok.txt": "ok"}, nil)
	if err := os.Symlink("/etc/passwd", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(src, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..", filepath.Join(src, "d", "up")); err != nil {
		t.Fatal(err)
	}
	a := newFake(t, "a")
	_, _, err := PutDir(context.Background(), a.open, src, "", PutDirOptions{})
	if err == nil || !strings.Contains(err.Error(), "link is a symbolic link") || !strings.Contains(err.Error(), "up is a symbolic link") ||
		!strings.Contains(err.Error(), "nothing was sent") {
		t.Fatalf("PutDir with symbolic links: %v", err)
	}
	if a.puts != 0 {
		t.Fatalf("%d puts despite the refusal", a.puts)
	}
}

// Collections whose paths would leave the directory are refused, and
// nothing is written outside it, not through a symbolic link either.
func TestHostileCollectionRefused(t *testing.T) {
	a := newFake(t, "a")
	payload := []byte("pwned\n")
	ph := a.add(payload)
	base := t.TempDir()
	for _, p := range []string{"../evil", "/tmp/evil", "a/../../evil", "a//evil", "./evil", "a\\..\\evil", "evil/", "."} {
		raw, _ := json.Marshal(map[string]any{"alknet_collection": "1", "entries": []map[string]any{
			{"path": p, "hash": ph.String(), "size": len(payload)}}})
		h := a.add(raw)
		out := filepath.Join(base, "out")
		_, _, err := GetDir(context.Background(), h, []Source{a.source()}, out, GetOptions{})
		if err == nil || !strings.Contains(err.Error(), "collection path") {
			t.Fatalf("path %q: %v", p, err)
		}
	}
	// A valid path through a symbolic link that leaves the directory.
	outside := filepath.Join(base, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(base, "out2")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(out, "sub")); err != nil {
		t.Fatal(err)
	}
	raw, _ := (&wire.Collection{Entries: []wire.Entry{{Path: "sub/evil", Hash: ph, Size: int64(len(payload))}}}).Marshal()
	h := a.add(raw)
	if _, _, err := GetDir(context.Background(), h, []Source{a.source()}, out, GetOptions{Overwrite: true}); err == nil {
		t.Fatal("GetDir wrote through a symbolic link leaving the directory")
	}
	var names []string
	for _, d := range []string{base, outside} {
		es, _ := os.ReadDir(d)
		for _, e := range es {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.Contains(n, "evil") {
			t.Fatalf("a file %q was written outside the output directory (%v)", n, names)
		}
	}
}

type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

// A put whose input fails, or ends early, fails at once with the reason
// and the node stores nothing.
func TestPutInputFails(t *testing.T) {
	a := newFake(t, "a")
	broken := errors.New("disk read error")
	_, err := Put(context.Background(), a.open, &failingReader{n: 3 * G, err: broken}, 10*G, "")
	if !errors.Is(err, broken) || !strings.Contains(err.Error(), "after 49152 of 163840 bytes") {
		t.Fatalf("put with a failing input: %v", err)
	}
	_, err = Put(context.Background(), a.open, bytes.NewReader(make([]byte, 100)), 200, "")
	if err == nil || !strings.Contains(err.Error(), "the input ended after 100 of 200 bytes") {
		t.Fatalf("put of a short input: %v", err)
	}
	a.wg.Wait()
	if a.puts != 0 {
		t.Fatalf("%d blobs stored from failed puts", a.puts)
	}
}
