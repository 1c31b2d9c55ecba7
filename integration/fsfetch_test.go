package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// fs/fetch: node B pulls a blob from node A as itself (Host.DialPeer,
// pinned), verifying every group, and stores it; a node that does not
// grant B fs:read is dropped with its refusal, and the fetch fails when no
// source is left.
func TestFSFetchNodeToNode(t *testing.T) {
	c, fp := fsClient(t)
	b := startFSNode(t, c, fp, "")
	grantB := fmt.Sprintf("\n[[auth.peers]]\npeer_id = \"node-b\"\nfingerprints = [%q]\nscopes = [\"fs:read\"]\n", b.srv.FP)
	a := startFSNode(t, c, fp, grantB)
	closed := startFSNode(t, c, fp, "") // lists no node-b

	dir := t.TempDir()
	src := filepath.Join(dir, "blob")
	writeRandom(t, src, 5<<20+77, 31)
	h := a.put(src)
	if hc := closed.put(src); hc != h {
		t.Fatalf("the same file on two nodes: %s and %s", h, hc)
	}

	fetch := func(from ...string) result {
		in := fmt.Sprintf(`{"hash":%q,"from":["%s"],"tag":"fetched"}`, h, strings.Join(from, `","`))
		return c.run("", "call", "--subscribe", "--peer", b.srv.FP, b.srv.Addr, "/fs/fetch", in)
	}
	// The closed node first: it refuses B, is dropped and named; A serves.
	r := fetch(closed.from(), a.from())
	if r.code != 0 || !strings.Contains(r.stdout, `"done":true`) {
		t.Fatalf("fs/fetch: exit %d\nstdout: %s\nstderr: %s\nB's log:\n%s", r.code, r.stdout, r.stderr, b.srv.logs)
	}
	if !strings.Contains(r.stdout, closed.srv.FP+"@"+closed.srv.Addr) || !strings.Contains(r.stdout, "FORBIDDEN") {
		t.Fatalf("the refusing source is not named with its refusal:\n%s", r.stdout)
	}
	st := b.stat(h)
	if !st.Present || st.Size != 5<<20+77 || len(st.Tags) != 1 || st.Tags[0] != "fetched" {
		t.Fatalf("B after the fetch: %+v", st)
	}
	if !sameFiles(t, src, b.blobPath(h)) {
		t.Fatal("B's copy differs from the file put on A")
	}
	b.srv.waitLog("plugin dialed a peer", "alpn=alknet/fs", "for=client")
	// A second fetch finds it stored.
	if r := fetch(a.from()); r.code != 0 || !strings.Contains(r.stdout, `"already":true`) {
		t.Fatalf("fetch of a stored blob: %d %s %s", r.code, r.stdout, r.stderr)
	}
	// Only the refusing node: the fetch fails and says why.
	b.fs("rm", h, "--force")
	r = fetch(closed.from())
	if r.code == 0 || !strings.Contains(r.stderr, "FORBIDDEN") {
		t.Fatalf("fetch from a node that refuses B: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}
