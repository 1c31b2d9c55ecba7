package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/fsclient"
)

// fsNode is a node serving the fs plugin to one client identity with
// scopes fs:read and fs:write.
type fsNode struct {
	t      *testing.T
	node   *cli
	srv    *server
	client *cli
}

// fsClient is a machine with an identity of its own (its vault), which
// fs nodes list as a peer.
func fsClient(t *testing.T) (*cli, string) {
	t.Helper()
	c := newCLI(t, nil)
	c.ok("", "init", "--show-mnemonic-once")
	var id struct {
		Fingerprint string `json:"fingerprint"`
	}
	decodeJSON(t, "id --json", c.ok("", "id", "--json"), &id)
	return c, id.Fingerprint
}

// startFSNode starts a node; settings go under [plugins.fs].
func startFSNode(t *testing.T, client *cli, clientFP, settings string) *fsNode {
	t.Helper()
	if _, err := os.Stat(filepath.Join(binDir, "alknet-plugin-fs")); err != nil {
		t.Fatalf("alknet-plugin-fs was not built: %v", err)
	}
	n := &fsNode{t: t, node: newCLI(t, nil), client: client}
	cfg := fmt.Sprintf("[plugins.fs]\n%s\n\n[[auth.peers]]\npeer_id = \"client\"\nfingerprints = [%q]\nscopes = [\"fs:read\", \"fs:write\"]\n",
		settings, clientFP)
	path := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), cfg, 0o600)
	n.node.ok("", "init", "--show-mnemonic-once")
	n.srv = startServe(t, n.node, "--config", path)
	n.waitReady()
	return n
}

// waitReady polls fs stats until the plugin answers.
func (n *fsNode) waitReady() {
	n.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := n.client.run("", "fs", "stats", "--peer", n.srv.FP, n.srv.Addr)
		if r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("the fs plugin never answered fs stats: %s\n%s", r.stderr, n.srv.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// from is the node as a --from source, pinned.
func (n *fsNode) from() string { return n.srv.FP + "@" + n.srv.Addr }

// fs runs `alknet fs SUB --peer FP ADDR ARGS…` and returns stdout.
func (n *fsNode) fs(sub string, args ...string) string {
	n.t.Helper()
	return n.client.ok("", append([]string{"fs", sub, "--peer", n.srv.FP, n.srv.Addr}, args...)...)
}

func (n *fsNode) put(path string, args ...string) string {
	n.t.Helper()
	return strings.TrimSpace(n.fs("put", append([]string{path}, args...)...))
}

type fsStats struct {
	BytesSent        int64 `json:"bytes_sent"`
	ContentBytesSent int64 `json:"content_bytes_sent"`
	BytesReceived    int64 `json:"bytes_received"`
	Gets             int64 `json:"gets"`
	GetsActive       int64 `json:"gets_active"`
	Puts             int64 `json:"puts"`
	Corrupt          int64 `json:"corrupt"`
}

func (n *fsNode) stats() fsStats {
	n.t.Helper()
	var s fsStats
	decodeJSON(n.t, "fs stats --json", n.fs("stats", "--json"), &s)
	return s
}

type fsGC struct {
	Removed    []string `json:"removed"`
	Kept       int      `json:"kept"`
	BytesFreed int64    `json:"bytes_freed"`
}

func (n *fsNode) gc() fsGC {
	n.t.Helper()
	var g fsGC
	decodeJSON(n.t, "fs gc --json", n.fs("gc", "--json"), &g)
	return g
}

type fsStat struct {
	Hash        string   `json:"hash"`
	Size        int64    `json:"size"`
	Present     bool     `json:"present"`
	Tags        []string `json:"tags"`
	Leased      bool     `json:"leased"`
	Quarantined bool     `json:"quarantined"`
}

func (n *fsNode) stat(h string) fsStat {
	n.t.Helper()
	var s fsStat
	decodeJSON(n.t, "fs stat --json", n.fs("stat", h, "--json"), &s)
	return s
}

// blobPath is where the node stores the content of h.
func (n *fsNode) blobPath(h string) string {
	x := strings.TrimPrefix(h, "blake3:")
	return filepath.Join(n.node.dataDir, "fs", "blobs", x[:2], x)
}

// fsGetJSON is `alknet fs get --json`.
type fsGetJSON struct {
	Hash         string `json:"hash"`
	Output       string `json:"output"`
	Size         int64  `json:"size"`
	Files        int    `json:"files"`
	FetchedBytes int64  `json:"fetched_bytes"`
	ResumedBytes int64  `json:"resumed_bytes"`
	Dropped      []struct {
		Source string `json:"source"`
		Group  *int64 `json:"group"`
		Error  string `json:"error"`
	} `json:"dropped"`
}

func b3sum(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("b3sum", "--no-names", path).Output()
	if err != nil {
		t.Fatalf("b3sum %s: %v (is b3sum installed?)", path, err)
	}
	return strings.TrimSpace(string(out))
}

// sameFiles compares two files byte by byte.
func sameFiles(t *testing.T, a, b string) bool {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}

func fsCmd(t *testing.T, c *cli, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(binDir, "alknet"), append([]string{"--data-dir", c.dataDir, "fs"}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	return cmd
}

// readProgress reads a download's progress file; nil if there is none
// (yet).
func readProgress(t *testing.T, path string) *fsclient.Progress {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := fsclient.ReadProgress(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

// 1 GiB put, then a get killed at half way and run again: the rerun
// fetches only what the killed one had not recorded as verified, and the
// file is byte-identical with the hash b3sum computes.
func TestFSBigGetResume(t *testing.T) {
	c, fp := fsClient(t)
	// A killed client sends no close: its connection ends when it has
	// been silent for limits.idle_timeout, and the gets it held with it.
	a := startFSNode(t, c, fp, "\n[limits]\nidle_timeout = \"2s\"\n")
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	const size = 1 << 30
	writeRandom(t, src, size, 21)
	want := "blake3:" + b3sum(t, src)
	if h := a.put(src, "--tag", "big"); h != want {
		t.Fatalf("fs put printed %q, b3sum says %s", h, want)
	}

	out := filepath.Join(dir, "out")
	get := fsCmd(t, c, "get", want, "--from", a.from(), "-o", out)
	var stderr bytes.Buffer
	get.Stderr = &stderr
	if err := get.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- get.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if p := readProgress(t, out+fsclient.ProgressSuffix); p != nil && p.VerifiedBytes() >= size/2 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("fs get ended before half of the blob was recorded: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("fs get did not pass half way in 2 minutes\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = get.Process.Kill()
	<-exited
	p := readProgress(t, out+fsclient.ProgressSuffix)
	verified := p.VerifiedBytes()
	if p.Hash.String() != want || p.Size != size || verified < size/2 || verified == size {
		t.Fatalf("progress after the kill: %s, %d bytes, %d verified", p.Hash, p.Size, verified)
	}
	remainder := int64(size) - verified

	// The node may still be writing the killed client's streams: measure
	// once it has ended every get, which it must do by itself.
	for deadline := time.Now().Add(20 * time.Second); a.stats().GetsActive != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the node still serves the killed client's gets 20 s later (idle_timeout 2 s)\n%s", a.srv.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := a.stats().ContentBytesSent
	var res fsGetJSON
	decodeJSON(t, "fs get --json", c.ok("", "fs", "get", want, "--from", a.from(), "-o", out, "--json"), &res)
	sent := a.stats().ContentBytesSent - before
	t.Logf("killed at %d of %d bytes verified; the rerun fetched %d, the node sent %d content bytes", verified, size, res.FetchedBytes, sent)
	if sent > remainder+bao.GroupSize {
		t.Fatalf("the rerun made the node send %d content bytes; %d were missing (+ one group allowed)", sent, remainder)
	}
	if res.ResumedBytes != verified || res.FetchedBytes != remainder || res.Size != size || len(res.Dropped) != 0 {
		t.Fatalf("fs get --json: %+v; want %d resumed, %d fetched", res, verified, remainder)
	}
	if _, err := os.Stat(out + fsclient.ProgressSuffix); !os.IsNotExist(err) {
		t.Fatalf("the progress file is left after the download completed: %v", err)
	}
	if got := "blake3:" + b3sum(t, out); got != want {
		t.Fatalf("b3sum of the download %s, want %s", got, want)
	}
	if !sameFiles(t, src, out) {
		t.Fatal("the download differs from the file put")
	}
}

// A byte flipped in the node's stored blob: the get fails naming the
// group, and that group's bytes never reach the output.
func TestFSCorruptStoredBlob(t *testing.T) {
	c, fp := fsClient(t)
	a := startFSNode(t, c, fp, "")
	dir := t.TempDir()
	src := filepath.Join(dir, "blob")
	writeRandom(t, src, 8<<20, 22)
	h := a.put(src)
	// Group 400 is in the last part (of four) the client asks for, so no
	// request follows the one that meets it.
	const bad = 400
	stored := a.blobPath(h)
	if err := os.Chmod(stored, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(stored, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, bad*bao.GroupSize+123); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, bad*bao.GroupSize+123); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out := filepath.Join(dir, "out")
	msg := c.fail("", "fs", "get", h, "--from", a.from(), "-o", out)
	r := c.run("", "fs", "stat", "--peer", a.srv.FP, a.srv.Addr, h, "--json")
	// The node stops at the bad group and resets the stream; the groups it
	// sent just before may be lost with the reset, so the client names
	// the first group it did not receive, in the part of the bad one (384
	// to 511), and the node's log names the bad group itself.
	re := regexp.MustCompile(`source ` + regexp.QuoteMeta(a.srv.Addr) + ` dropped: its stored copy failed verification at group (\d+) or after`)
	m := re.FindStringSubmatch(msg)
	if m == nil || !strings.Contains(msg, "no source left") {
		t.Fatalf("fs get of a corrupted blob: %q, want it to match %q", msg, re)
	}
	if g, _ := strconv.Atoi(m[1]); g < 384 || g > bad {
		t.Fatalf("fs get names group %d; the bad group is %d, in the part [384, 512)", g, bad)
	}
	a.srv.waitLog("blob failed verification", fmt.Sprintf("group=%d", bad), strings.TrimPrefix(h, "blake3:"))
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[bad*bao.GroupSize:(bad+1)*bao.GroupSize], make([]byte, bao.GroupSize)) {
		t.Fatalf("bytes of group %d reached the output", bad)
	}
	if p := readProgress(t, out+fsclient.ProgressSuffix); p == nil || slices.ContainsFunc(p.Verified, func(s fsclient.Span) bool { return s.First <= bad && bad < s.End }) {
		t.Fatalf("progress file %+v records group %d as verified", p, bad)
	}
	// The node found it too: quarantined, and a later get is refused.
	if r.code != 0 || !strings.Contains(r.stdout, `"quarantined": true`) {
		t.Fatalf("fs stat after the corrupt get: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if s := a.stats(); s.Corrupt != 1 {
		t.Fatalf("fs stats: %+v, want corrupt 1", s)
	}
}

// Two sources, one of which corrupts what it sends (the plugin built with
// the CorruptSentGroup knob): the download completes from the other and
// the liar is named.
func TestFSDropsLyingSource(t *testing.T) {
	c, fp := fsClient(t)
	a := startFSNode(t, c, fp, "")
	b := startFSNode(t, c, fp, "")
	liar := testPluginFrom(t, "../plugins/fs/cmd/alknet-plugin-fs", "alknet-plugin-fs", "-X alknet.dev/alknet/plugins/fs.CorruptSentGroup=0")
	conn := operatorConn(t, b.srv)
	old := waitPlugin(t, conn, "fs", func(p pluginStatus) bool { return p.State == "ready" })
	b.node.ok("", "plugin", "install", "--force", liar)
	waitPlugin(t, conn, "fs", func(p pluginStatus) bool { return p.State == "ready" && p.Pid != old.Pid })
	b.waitReady()

	dir := t.TempDir()
	src := filepath.Join(dir, "blob")
	writeRandom(t, src, 6<<20+5, 23)
	h := a.put(src)
	if hb := b.put(src); hb != h {
		t.Fatalf("the same file put on two nodes: %s and %s", h, hb)
	}
	out := filepath.Join(dir, "out")
	// The liar first: the size is asked of it, with group 0.
	r := c.run("", "fs", "get", h, "--from", b.from(), "--from", a.from(), "-o", out, "--json")
	if r.code != 0 {
		t.Fatalf("fs get with one lying source: exit %d\n%s", r.code, r.stderr)
	}
	line := fmt.Sprintf("source %s dropped: group 0 failed verification", b.srv.Addr)
	if !strings.Contains(r.stderr, line) {
		t.Fatalf("stderr does not name the liar (%q):\n%s", line, r.stderr)
	}
	var res fsGetJSON
	decodeJSON(t, "fs get --json", r.stdout, &res)
	if len(res.Dropped) != 1 || res.Dropped[0].Source != b.srv.Addr || res.Dropped[0].Group == nil || *res.Dropped[0].Group != 0 {
		t.Fatalf("fs get --json dropped: %+v", res.Dropped)
	}
	if !sameFiles(t, src, out) {
		t.Fatal("the download differs from the file put")
	}
}

// The same content put twice is stored once; gc removes untagged blobs
// whose lease has passed, never a tagged one, a leased one, or one in
// flight.
func TestFSDedupAndGC(t *testing.T) {
	c, fp := fsClient(t)
	// The shortest lease the plugin takes.
	n := startFSNode(t, c, fp, `lease = "2s"`)
	dir := t.TempDir()
	one, two := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	data := random(t, 1<<20+3)
	writeFile(t, one, string(data), 0o644)
	writeFile(t, two, string(data), 0o644)
	kept := n.put(one, "--tag", "keep")
	if h := n.put(two); h != kept {
		t.Fatalf("the same content put twice: %s then %s", kept, h)
	}
	entries, err := os.ReadDir(filepath.Dir(n.blobPath(kept)))
	if err != nil {
		t.Fatal(err)
	}
	x := strings.TrimPrefix(kept, "blake3:")
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), x) {
			names = append(names, e.Name())
		}
	}
	if fmt.Sprint(names) != fmt.Sprint([]string{x, x + ".obao"}) {
		t.Fatalf("stored as %v, want the content and its outboard once", names)
	}
	var blobs int
	filepath.WalkDir(filepath.Join(n.node.dataDir, "fs", "blobs"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".obao") {
			blobs++
		}
		return nil
	})
	if blobs != 1 {
		t.Fatalf("%d blobs stored after putting one content twice", blobs)
	}

	// Just received, untagged: its lease keeps it from gc.
	loose := filepath.Join(dir, "loose")
	writeRandom(t, loose, 100<<10, 24)
	untagged := n.put(loose)
	if g := n.gc(); slices.Contains(g.Removed, untagged) {
		t.Fatalf("gc removed a blob just put: %+v", g)
	}
	if s := n.stat(untagged); !s.Present || !s.Leased || len(s.Tags) != 0 {
		t.Fatalf("fs stat of a blob just put: %+v", s)
	}

	// A put in flight (its input fed slowly through a pipe) across a gc.
	slow := random(t, 2<<20)
	before := n.stats().BytesReceived
	put := fsCmd(t, c, "put", "--peer", n.srv.FP, n.srv.Addr, "-", "--size", fmt.Sprint(len(slow)))
	stdin, err := put.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	put.Stdout, put.Stderr = &stdout, &stderr
	if err := put.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(slow[:1<<20]); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); n.stats().BytesReceived < before+512<<10; {
		if time.Now().After(deadline) {
			t.Fatal("the node never received the first half of the slow put")
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.gc()
	if _, err := stdin.Write(slow[1<<20:]); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := put.Wait(); err != nil {
		t.Fatalf("the put in flight during gc: %v\n%s", err, stderr.String())
	}
	inflight := strings.TrimSpace(stdout.String())
	if want := bao.Sum(slow).String(); inflight != want {
		t.Fatalf("the slow put printed %q, want %s", inflight, want)
	}
	if s := n.stat(inflight); !s.Present {
		t.Fatalf("the blob put during gc is not stored: %+v", s)
	}

	// Once the lease has passed, gc removes the untagged blobs, not the
	// tagged one.
	removed := map[string]bool{}
	for deadline := time.Now().Add(30 * time.Second); !removed[untagged] || !removed[inflight]; {
		for _, h := range n.gc().Removed {
			removed[h] = true
		}
		if time.Now().After(deadline) {
			t.Fatalf("gc did not remove the untagged blobs once their lease passed: removed %v", removed)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if removed[kept] {
		t.Fatal("gc removed a tagged blob")
	}
	if s := n.stat(kept); !s.Present || !slices.Equal(s.Tags, []string{"keep"}) {
		t.Fatalf("the tagged blob after gc: %+v", s)
	}
	r := c.run("", "fs", "stat", "--peer", n.srv.FP, n.srv.Addr, untagged)
	if r.code != 1 || !strings.Contains(r.stderr, "NOT_FOUND") {
		t.Fatalf("fs stat of a collected blob: exit %d\n%s", r.code, r.stderr)
	}
}

// A directory put as a collection comes back identical (diff -r, and
// the permission bits); a tree with a symbolic link is refused.
func TestFSDirectoryRoundTrip(t *testing.T) {
	c, fp := fsClient(t)
	n := startFSNode(t, c, fp, "")
	tree := filepath.Join(t.TempDir(), "tree")
	files := map[string]os.FileMode{"a/b/x.sh": 0o755, "c/y.bin": 0o644, "empty": 0o600, "with space.txt": 0o640, "d/e/f/g": 0o400}
	for p, mode := range files {
		full := filepath.Join(tree, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch p {
		case "c/y.bin":
			writeRandom(t, full, 300<<10+1, 25)
		case "empty":
			writeFile(t, full, "", mode)
		default:
			writeFile(t, full, "content of "+p+"\n", mode)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
	var put struct {
		Hash       string `json:"hash"`
		Size       int64  `json:"size"`
		Path       string `json:"path"`
		Tag        string `json:"tag"`
		Collection bool   `json:"collection"`
		Files      int    `json:"files"`
	}
	decodeJSON(t, "fs put --json", n.fs("put", tree, "--tag", "tree", "--json"), &put)
	if !put.Collection || put.Files != len(files) || put.Tag != "tree" {
		t.Fatalf("fs put of a directory: %+v", put)
	}
	out := filepath.Join(t.TempDir(), "restored")
	var res fsGetJSON
	decodeJSON(t, "fs get --dir --json", c.ok("", "fs", "get", put.Hash, "--from", n.from(), "--dir", "-o", out, "--json"), &res)
	if res.Files != len(files) || res.Size != put.Size {
		t.Fatalf("fs get --dir: %+v", res)
	}
	if b, err := exec.Command("diff", "-r", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("diff -r: %v\n%s", err, b)
	}
	for p, mode := range files {
		st, err := os.Stat(filepath.Join(out, filepath.FromSlash(p)))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Fatalf("%s restored with mode %v, want %v", p, st.Mode().Perm(), mode)
		}
	}
	// Without --dir the collection's listing is written as it is.
	listing := filepath.Join(t.TempDir(), "listing.json")
	c.ok("", "fs", "get", put.Hash, "--from", n.from(), "-o", listing)
	if b, _ := os.ReadFile(listing); !bytes.Contains(b, []byte(`"alknet_collection":"1"`)) {
		t.Fatalf("the collection blob: %s", b)
	}
	// Into a directory that is not empty: refused.
	if msg := c.fail("", "fs", "get", put.Hash, "--from", n.from(), "--dir", "-o", out); !strings.Contains(msg, "not empty") {
		t.Fatalf("fs get --dir into a non-empty directory: %s", msg)
	}
	// A symbolic link in the tree: nothing is sent.
	if err := os.Symlink("/etc", filepath.Join(tree, "c", "link")); err != nil {
		t.Fatal(err)
	}
	if msg := c.fail("", "fs", "put", "--peer", n.srv.FP, n.srv.Addr, tree); !strings.Contains(msg, "link is a symbolic link") || !strings.Contains(msg, "nothing was sent") {
		t.Fatalf("fs put of a tree with a symbolic link: %s", msg)
	}
}
