package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The test binary is git-remote-alknet too: git runs it (through a link of
// that name on PATH) with a fake node that serves each stream with the
// local git's upload-pack or receive-pack on the repositories under
// $fakeNodeRoot, as the Git plugin does.
const fakeNodeRoot = "GIT_REMOTE_ALKNET_TEST_ROOT"

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "git-remote-alknet" {
		h := newHelper(os.Stdin, os.Stdout, os.Stderr)
		h.open = fakeGitNode(os.Getenv(fakeNodeRoot))
		os.Exit(h.run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeGitNode serves a stream as the Git plugin does: it reads the
// request line and runs git's program on the repository with the
// protocol version asked for, joined to the stream; git's exit ends the
// node's side.
func fakeGitNode(root string) opener {
	return func(context.Context, target) (stream, func(), error) {
		toNodeR, toNodeW := io.Pipe()
		toHelperR, toHelperW := io.Pipe()
		go func() {
			// Owned by the helper process, which exits after the node's
			// side has ended.
			defer toHelperW.Close()
			if err := serveFake(root, toNodeR, toHelperW); err != nil {
				fmt.Fprintln(os.Stderr, "fake node:", err)
			}
		}()
		return &pipeStream{r: toHelperR, w: toNodeW}, func() {}, nil
	}
}

func serveFake(root string, in io.Reader, out io.Writer) error {
	pr := &pktReader{r: newBufReader(in)}
	p, _, err := pr.next()
	if err != nil {
		return err
	}
	head, params, _ := strings.Cut(string(p[4:]), "\x00")
	service, path, _ := strings.Cut(head, " ")
	cmd := exec.Command("git", strings.TrimPrefix(service, "git-"), filepath.Join(root, filepath.Clean("/"+path)))
	cmd.Env = os.Environ()
	if i := strings.Index(params, "version="); i >= 0 {
		cmd.Env = append(cmd.Env, "GIT_PROTOCOL=version="+params[i+len("version="):i+len("version=")+1])
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		// Owned by serveFake's process: ends with the helper's side of
		// the stream or git's exit.
		_, _ = io.Copy(stdin, pr.r)
		_ = stdin.Close()
	}()
	return cmd.Wait()
}

// gitEnv is a git without the user's configuration, with the test binary
// as git-remote-alknet.
type gitEnv struct {
	t    *testing.T
	env  []string
	root string // the fake node's repositories
}

func newGitEnv(t *testing.T) *gitEnv {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skipf("git not installed: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(exe, filepath.Join(bin, "git-remote-alknet")); err != nil {
		t.Fatal(err)
	}
	g := &gitEnv{t: t, root: t.TempDir()}
	home := t.TempDir()
	g.env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+home,
		"XDG_CONFIG_HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", fakeNodeRoot+"="+g.root,
		"ALKNET_DATA_DIR="+filepath.Join(home, "alknet"),
		"GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@example.com", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@example.com")
	return g
}

// git runs git in dir and returns its combined output; it fails the test
// unless git exits 0.
func (g *gitEnv) git(dir string, args ...string) string {
	g.t.Helper()
	out, err := g.try(dir, args...)
	if err != nil {
		g.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (g *gitEnv) try(dir string, args ...string) (string, error) {
	return g.tryEnv(nil, dir, args...)
}

// tryEnv is try with further environment variables.
func (g *gitEnv) tryEnv(env []string, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir, cmd.Env = dir, append(g.env[:len(g.env):len(g.env)], env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Real git through the helper, over connect (protocol v2 and v0 fetches,
// pushes, a delete-only push) and over stateless-connect.
func TestRealGitThroughTheHelper(t *testing.T) {
	g := newGitEnv(t)
	g.git(g.root, "init", "-q", "--bare", "-b", "main", "proj.git")
	work := t.TempDir()
	g.git(work, "init", "-q", "-b", "main", "src")
	src := filepath.Join(work, "src")
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(src, "f"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		g.git(src, "add", "f")
		g.git(src, "commit", "-q", "-m", fmt.Sprint("c", i))
	}
	const url = "alknet://node.example/proj.git"
	g.git(src, "push", url, "main", "main:topic")

	// A clone over connect speaks v2 (git's default) ...
	out := g.git(work, "clone", url, "v2")
	if log := g.git(filepath.Join(work, "v2"), "log", "--oneline"); strings.Count(log, "\n") != 3 {
		t.Fatalf("clone: log %q\n%s", log, out)
	}
	trace, err := g.tryEnv([]string{"GIT_TRACE_PACKET=1"}, work, "ls-remote", url)
	for _, want := range []string{"ls-remote< version 2", "refs/heads/main", "refs/heads/topic"} {
		if !strings.Contains(trace, want) {
			t.Fatalf("ls-remote lacks %s: %v\n%s", want, err, trace)
		}
	}
	// ... and v0 when git is told so.
	trace, err = g.tryEnv([]string{"GIT_TRACE_PACKET=1"}, work, "-c", "protocol.version=0", "clone", url, "v0")
	if err != nil || strings.Contains(trace, "version 2") || !strings.Contains(trace, "multi_ack") {
		t.Fatalf("clone with protocol.version=0: %v\n%s", err, trace)
	}
	// stateless-connect, when it is all the helper offers.
	g.git(work, "-c", "alknet.statelessConnect=true", "clone", "-q", url, "stateless")
	g.git(src, "commit", "-q", "--allow-empty", "-m", "more")
	g.git(src, "push", "-q", url, "main")
	g.git(filepath.Join(work, "stateless"), "-c", "alknet.statelessConnect=true", "fetch", "-q")
	if a, b := g.git(src, "rev-parse", "main"), g.git(filepath.Join(work, "stateless"), "rev-parse", "origin/main"); a != b {
		t.Fatalf("stateless fetch: origin/main %s, want %s", b, a)
	}
	// A push that only deletes ends without git closing its side first.
	done := make(chan string, 1)
	go func() {
		// Owned by the test, which waits for done.
		out, err := g.try(src, "push", url, ":topic")
		done <- fmt.Sprint(out, err)
	}()
	select {
	case out := <-done:
		if !strings.Contains(out, "[deleted]") || !strings.HasSuffix(out, "<nil>") {
			t.Fatalf("delete-only push: %s", out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a delete-only push did not end")
	}
}

func newBufReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }
