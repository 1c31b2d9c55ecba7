package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

// gitNode is a node serving the git plugin (and the SSH plugin on a plain
// TCP listener), with users who reach it with stock git: dev (git:read,
// git:write, git:create), writer (git:read, git:write) and reader
// (git:read), each with a vault of its own for alknet:// URLs and an SSH
// key in the same peer entry for ssh:// URLs. Repository proj has main
// protected.
type gitNode struct {
	t          *testing.T
	node       *cli
	srv        *server
	root       string // the repositories
	plainAddr  string // the SSH plugin's plain TCP listener
	knownHosts string
	users      map[string]*gitUser
}

// gitUser runs git as one identity, in an environment of its own: HOME
// and the data directory are temporary, no system or global git
// configuration is read, and binDir (git-remote-alknet) comes first on
// PATH.
type gitUser struct {
	t    *testing.T
	name string
	cli  *cli
	key  string // the SSH private key
	env  []string
}

func requireGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git not installed (apt-get install git): %v", err)
	}
	for _, b := range []string{"alknet-plugin-git", "git-remote-alknet", "alknet-plugin-ssh"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			t.Fatalf("%s was not built: %v", b, err)
		}
	}
}

// startGit starts the node; settings go under [plugins.git].
func startGit(t *testing.T, settings string) *gitNode {
	t.Helper()
	requireGit(t)
	dir := t.TempDir()
	e := &gitNode{t: t, node: newCLI(t, nil), root: filepath.Join(dir, "repos"), users: map[string]*gitUser{}}
	e.plainAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var peers strings.Builder
	for _, u := range []struct{ name, scopes string }{
		{"dev", `"git:read", "git:write", "git:create"`},
		{"writer", `"git:read", "git:write"`},
		{"reader", `"git:read"`},
	} {
		c := newCLI(t, nil)
		c.ok("", "init", "--show-mnemonic-once")
		var id struct {
			Fingerprint string `json:"fingerprint"`
		}
		decodeJSON(t, "id --json", c.ok("", "id", "--json"), &id)
		key, pub := writeKey(t, dir, "id_"+u.name)
		home := t.TempDir()
		e.users[u.name] = &gitUser{t: t, name: u.name, cli: c, key: key, env: append(os.Environ(),
			"PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"),
			"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
			"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+filepath.Join(home, ".gitconfig"),
			"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=/bin/false", "SSH_AUTH_SOCK=",
			"ALKNET_DATA_DIR="+c.dataDir,
			"GIT_AUTHOR_NAME="+u.name, "GIT_AUTHOR_EMAIL="+u.name+"@example.com",
			"GIT_COMMITTER_NAME="+u.name, "GIT_COMMITTER_EMAIL="+u.name+"@example.com")}
		fmt.Fprintf(&peers, "[[auth.peers]]\npeer_id = %q\nfingerprints = [%q]\nssh_keys = [%q]\nscopes = [%s]\n\n",
			u.name, id.Fingerprint, gossh.FingerprintSHA256(pub), u.scopes)
	}
	cfg := fmt.Sprintf(`[[listeners.plain]]
addr = %q
alpn = "alknet/ssh"

[plugins.git]
root = %q
%s

[[plugins.git.repos]]
name = "proj"
protected = ["main"]

%s`, e.plainAddr, e.root, settings, peers.String())
	cfgPath := writeFile(t, filepath.Join(dir, "alknet.toml"), cfg, 0o600)
	e.node.ok("", "init", "--show-mnemonic-once")
	e.srv = startServe(t, e.node, "--config", cfgPath)
	e.srv.waitLog("git repositories ready")
	hk := strings.TrimSpace(e.node.ok("", "vault", "derive", "m/74'/0'/1'/0'", "--public"))
	raw, err := hex.DecodeString(hk)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := gossh.NewPublicKey(ed25519.PublicKey(raw))
	if err != nil {
		t.Fatal(err)
	}
	e.knownHosts = writeFile(t, filepath.Join(dir, "known_hosts"), "node "+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(pk)))+"\n", 0o600)
	return e
}

// url is the alknet:// URL of repository repo, pinned to the node.
func (e *gitNode) url(repo string) string {
	return fmt.Sprintf("alknet://%s@%s/%s", e.srv.FP, e.srv.Addr, repo)
}

func (e *gitNode) user(name string) *gitUser { return e.users[name] }

// run runs git in dir with extra environment variables and returns its
// combined output and exit status.
func (u *gitUser) run(dir string, env []string, args ...string) (string, int) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(u.env[:len(u.env):len(u.env)], env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), code
}

// git runs git as u in dir; it must succeed.
func (u *gitUser) git(dir string, args ...string) string {
	u.t.Helper()
	out, code := u.run(dir, nil, args...)
	if code != 0 {
		u.t.Fatalf("git %s (as %s in %s): exit %d\n%s", strings.Join(args, " "), u.name, dir, code, out)
	}
	return out
}

// gitFail runs git as u in dir; it must fail, and its output hold every
// one of want.
func (u *gitUser) gitFail(dir string, want []string, args ...string) string {
	u.t.Helper()
	out, code := u.run(dir, nil, args...)
	if code == 0 {
		u.t.Fatalf("git %s (as %s) succeeded, want a failure:\n%s", strings.Join(args, " "), u.name, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			u.t.Fatalf("git %s (as %s): exit %d, output lacks %q:\n%s", strings.Join(args, " "), u.name, code, w, out)
		}
	}
	return out
}

// rev is git rev-parse of what in dir.
func (u *gitUser) rev(dir, what string) string {
	u.t.Helper()
	return strings.TrimSpace(u.git(dir, "rev-parse", what))
}

// commit writes content to file in the work tree dir and commits it.
func (u *gitUser) commit(dir, file, content string) {
	u.t.Helper()
	path := filepath.Join(dir, file)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		u.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		u.t.Fatal(err)
	}
	u.git(dir, "add", file)
	u.git(dir, "commit", "-q", "-m", file+": "+strings.SplitN(content, "\n", 2)[0])
}

// newRepo makes a work tree with n commits on main.
func (u *gitUser) newRepo(n int) string {
	u.t.Helper()
	dir := filepath.Join(u.t.TempDir(), "src")
	u.git(filepath.Dir(dir), "init", "-q", "-b", "main", dir)
	for i := range n {
		u.commit(dir, "README", fmt.Sprintf("version %d\n", i))
	}
	return dir
}

// looseCount is `git count-objects`' count of loose objects in dir.
func (u *gitUser) looseCount(dir string) int {
	u.t.Helper()
	for _, line := range strings.Split(u.git(dir, "count-objects", "-v"), "\n") {
		if v, ok := strings.CutPrefix(line, "count: "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				u.t.Fatal(err)
			}
			return n
		}
	}
	u.t.Fatal("git count-objects -v printed no count")
	return 0
}

// Stock git through git-remote-alknet: a repository created by a push,
// clones, pushes, branches, tags, deletions, the push rules and the
// access rules, incremental, shallow and partial fetches, atomic pushes,
// empty repositories, and the git subcommands of the CLI.
func TestGitOverAlknetURL(t *testing.T) {
	e := startGit(t, "")
	dev := e.user("dev")
	work := t.TempDir()

	// proj comes into being with dev's push (git:create).
	src := dev.newRepo(3)
	out := dev.git(src, "push", e.url("proj"), "main")
	if !strings.Contains(out, "* [new branch]      main -> main") {
		t.Fatalf("first push:\n%s", out)
	}
	e.srv.waitLog("repository created", "repository=proj", "by=push")

	t.Run("clone-push-clone", func(t *testing.T) {
		dev.git(work, "clone", "-q", e.url("proj"), "c1")
		c1 := filepath.Join(work, "c1")
		if got, want := dev.rev(c1, "HEAD"), dev.rev(src, "main"); got != want {
			t.Fatalf("clone: HEAD %s, want %s", got, want)
		}
		dev.commit(c1, "notes.txt", "from c1\n")
		dev.git(c1, "push", "-q")
		dev.git(work, "clone", "-q", e.url("proj"), "c2")
		if got, want := dev.rev(filepath.Join(work, "c2"), "HEAD"), dev.rev(c1, "HEAD"); got != want {
			t.Fatalf("a second clone: HEAD %s, want %s (the push)", got, want)
		}
		ls := dev.git(c1, "ls-remote", e.url("proj"))
		head := dev.rev(c1, "HEAD")
		for _, want := range []string{head + "\tHEAD\n", head + "\trefs/heads/main\n"} {
			if !strings.Contains(ls, want) {
				t.Fatalf("ls-remote lacks %q:\n%s", want, ls)
			}
		}
	})

	t.Run("branch-tag-delete", func(t *testing.T) {
		c1 := filepath.Join(work, "c1")
		dev.git(c1, "tag", "-a", "v1.0", "-m", "release 1.0")
		dev.git(c1, "push", "-q", "origin", "main:feature", "v1.0")
		ls := dev.git(c1, "ls-remote", "origin")
		for _, want := range []string{"\trefs/heads/feature\n", "\trefs/tags/v1.0\n", "\trefs/tags/v1.0^{}\n"} {
			if !strings.Contains(ls, want) {
				t.Fatalf("ls-remote after pushing a branch and a tag lacks %q:\n%s", want, ls)
			}
		}
		// The CLI shows the same references.
		refs := dev.cli.ok("", "git", "refs", e.srv.FP+"@"+e.srv.Addr, "proj")
		if !strings.Contains(refs, "\tHEAD -> refs/heads/main\n") || !strings.Contains(refs, "\trefs/heads/feature\n") {
			t.Fatalf("alknet git refs:\n%s", refs)
		}
		out := dev.git(c1, "push", "origin", ":feature")
		if !strings.Contains(out, "[deleted]") {
			t.Fatalf("delete by push:\n%s", out)
		}
		if ls := dev.git(c1, "ls-remote", "origin"); strings.Contains(ls, "refs/heads/feature") {
			t.Fatalf("the deleted branch is still there:\n%s", ls)
		}
	})

	t.Run("protected-branch", func(t *testing.T) {
		c1 := filepath.Join(work, "c1")
		before := dev.rev(c1, "origin/main")
		dev.git(c1, "reset", "-q", "--hard", "HEAD~1")
		dev.commit(c1, "rewrite.txt", "history rewritten\n")
		dev.gitFail(c1, []string{
			"remote: alknet: refs/heads/main refused: the branch is protected (protected = \"main\"): no force push",
			"remote: alknet: push rules of proj: see [[plugins.git.repos]]",
			"! [remote rejected] main -> main (pre-receive hook declined)",
		}, "push", "--force", "origin", "main")
		// The hook decides for the whole push: the other ref is refused too.
		dev.gitFail(c1, []string{"! [remote rejected] main -> side (pre-receive hook declined)"}, "push", "--force", "origin", "main", "main:side")
		if ls := dev.git(c1, "ls-remote", "origin"); strings.Contains(ls, "refs/heads/side") || !strings.Contains(ls, before+"\trefs/heads/main") {
			t.Fatalf("after the refused push:\n%s", ls)
		}
		dev.git(c1, "reset", "-q", "--hard", "origin/main")
	})

	t.Run("atomic-push", func(t *testing.T) {
		a := dev.newRepo(2)
		dev.git(a, "remote", "add", "origin", e.url("atomic"))
		dev.git(a, "push", "-q", "origin", "main")
		// git refuses deleting the branch HEAD names: with --atomic the
		// other update fails with it.
		dev.gitFail(a, []string{"! [remote rejected] main (deletion of the current branch prohibited)", "! [remote rejected] main -> other (atomic push failure)"},
			"push", "--atomic", "origin", ":main", "main:other")
		if ls := dev.git(a, "ls-remote", "origin"); strings.Contains(ls, "refs/heads/other") || !strings.Contains(ls, "refs/heads/main") {
			t.Fatalf("after the refused atomic push:\n%s", ls)
		}
		dev.commit(a, "more.txt", "more\n")
		dev.git(a, "push", "-q", "--atomic", "origin", "main", "main:other")
		ls := dev.git(a, "ls-remote", "origin")
		if head := dev.rev(a, "HEAD"); !strings.Contains(ls, head+"\trefs/heads/main") || !strings.Contains(ls, head+"\trefs/heads/other") {
			t.Fatalf("after an atomic push of main and other (%s):\n%s", head, ls)
		}
	})

	t.Run("incremental-fetch", func(t *testing.T) {
		// 40 new commits on the node and 40 unknown to it in c2: the
		// fetch brings exactly the 40 commits with their trees and blobs.
		c1, c2 := filepath.Join(work, "c1"), filepath.Join(work, "c2")
		dev.git(c2, "pull", "-q", "--ff-only")
		for i := range 40 {
			dev.commit(c1, "remote.txt", fmt.Sprintf("remote %d\n", i))
			dev.commit(c2, "local.txt", fmt.Sprintf("local %d\n", i))
		}
		dev.git(c1, "push", "-q")
		before := dev.looseCount(c2)
		dev.git(c2, "-c", "fetch.unpackLimit=100000", "fetch", "-q")
		if got := dev.looseCount(c2) - before; got != 120 {
			t.Fatalf("the fetch brought %d objects; want 120 (40 commits, 40 trees, 40 blobs)", got)
		}
		if got, want := dev.rev(c2, "origin/main"), dev.rev(c1, "HEAD"); got != want {
			t.Fatalf("origin/main %s after the fetch, want %s", got, want)
		}
	})

	t.Run("stateless-connect", func(t *testing.T) {
		// Protocol v2 request by request, as over HTTP: a clone, and a
		// fetch that negotiates, on one stream each.
		out, code := dev.run(work, []string{"GIT_TRACE_PACKET=1"}, "-c", "alknet.statelessConnect=true", "clone", e.url("proj"), "stateless")
		if code != 0 || !strings.Contains(out, "clone< version 2") || !strings.Contains(out, "clone< 0002") {
			t.Fatalf("clone through stateless-connect: exit %d\n%s", code, out)
		}
		st, c1 := filepath.Join(work, "stateless"), filepath.Join(work, "c1")
		dev.commit(st, "local.txt", "unknown to the node\n")
		dev.commit(c1, "remote.txt", "new on the node\n")
		dev.git(c1, "push", "-q")
		dev.git(st, "-c", "alknet.statelessConnect=true", "fetch", "-q")
		if got, want := dev.rev(st, "origin/main"), dev.rev(c1, "HEAD"); got != want {
			t.Fatalf("fetch through stateless-connect: origin/main %s, want %s", got, want)
		}
		dev.gitFail(st, []string{"which needs connect"}, "-c", "alknet.statelessConnect=true", "push", "origin", "HEAD:elsewhere")
	})

	t.Run("shallow-then-unshallow", func(t *testing.T) {
		dev.git(work, "clone", "-q", "--depth", "1", e.url("proj"), "shallow")
		sh := filepath.Join(work, "shallow")
		if n := strings.TrimSpace(dev.git(sh, "rev-list", "--count", "HEAD")); n != "1" {
			t.Fatalf("--depth 1: %s commits", n)
		}
		dev.git(sh, "fetch", "-q", "--unshallow")
		full := strings.TrimSpace(dev.git(filepath.Join(work, "c1"), "rev-list", "--count", "origin/main"))
		if n := strings.TrimSpace(dev.git(sh, "rev-list", "--count", "HEAD")); n != full {
			t.Fatalf("--unshallow: %s commits, want %s", n, full)
		}
		if s := strings.TrimSpace(dev.git(sh, "rev-parse", "--is-shallow-repository")); s != "false" {
			t.Fatalf("still shallow after --unshallow: %s", s)
		}
	})

	t.Run("partial-clone", func(t *testing.T) {
		dev.git(work, "clone", "-q", "--filter=blob:none", e.url("proj"), "partial")
		p := filepath.Join(work, "partial")
		missing := strings.Count(dev.git(p, "rev-list", "--objects", "--all", "--missing=print"), "\n?")
		if missing == 0 {
			t.Fatal("--filter=blob:none: no blob is missing, so the filter did not apply")
		}
		// Old blobs arrive on demand, through the helper again.
		if out := dev.git(p, "log", "-p", "--", "README"); !strings.Contains(out, "+version 0") {
			t.Fatalf("git log -p in the partial clone:\n%s", out)
		}
	})

	t.Run("empty-repository", func(t *testing.T) {
		var created struct {
			Name   string `json:"name"`
			Public bool   `json:"public"`
			Head   string `json:"head"`
			Size   int64  `json:"size"`
		}
		decodeJSON(t, "git create --json", dev.cli.ok("", "git", "create", "--json", "--peer", e.srv.FP, e.srv.Addr, "team/empty"), &created)
		if created.Name != "team/empty" || created.Head != "main" {
			t.Fatalf("git create: %+v", created)
		}
		if r := dev.cli.run("", "git", "create", e.srv.FP+"@"+e.srv.Addr, "team/empty"); r.code != 1 || !strings.Contains(r.stderr, "ALREADY_EXISTS: repository team/empty exists") {
			t.Fatalf("git create of a taken name: exit %d %s", r.code, r.stderr)
		}
		out := dev.git(work, "clone", e.url("team/empty"), "empty")
		if !strings.Contains(out, "You appear to have cloned an empty repository.") {
			t.Fatalf("clone of an empty repository:\n%s", out)
		}
		em := filepath.Join(work, "empty")
		dev.commit(em, "first.txt", "first\n")
		dev.git(em, "push", "-q", "origin", "main")
		var list []struct {
			Name     string `json:"name"`
			Public   bool   `json:"public"`
			Head     string `json:"head"`
			HeadHash string `json:"head_hash"`
			Size     int64  `json:"size"`
		}
		decodeJSON(t, "git list --json", dev.cli.ok("", "git", "list", "--json", e.srv.FP+"@"+e.srv.Addr), &list)
		found := false
		for _, r := range list {
			found = found || r.Name == "team/empty" && r.HeadHash == dev.rev(em, "HEAD")
		}
		if !found || len(list) < 2 {
			t.Fatalf("git list after the push: %+v", list)
		}
		text := dev.cli.ok("", "git", "list", e.srv.FP+"@"+e.srv.Addr)
		if !strings.Contains(text, "proj ") || !strings.Contains(text, "team/empty ") {
			t.Fatalf("git list:\n%s", text)
		}
		var deleted struct {
			Name    string `json:"name"`
			Deleted bool   `json:"deleted"`
		}
		decodeJSON(t, "git delete --json", dev.cli.ok("", "git", "delete", "--json", e.srv.FP+"@"+e.srv.Addr, "team/empty"), &deleted)
		if !deleted.Deleted || deleted.Name != "team/empty" {
			t.Fatalf("git delete: %+v", deleted)
		}
		if r := dev.cli.run("", "git", "delete", e.srv.FP+"@"+e.srv.Addr, "proj"); r.code != 1 || !strings.Contains(r.stderr, "FORBIDDEN: permission denied: push rules protect proj") {
			t.Fatalf("git delete of a protected repository: exit %d %s", r.code, r.stderr)
		}
	})

	t.Run("trust", func(t *testing.T) {
		// Without the fingerprint in the URL, an unknown node is refused
		// with what to do; trust on first use records it.
		w := e.user("writer")
		unpinned := fmt.Sprintf("alknet://%s/proj", e.srv.Addr)
		w.gitFail(work, []string{"cannot verify the node at " + e.srv.Addr, "put its fingerprint in the URL (alknet://" + e.srv.FP + "@"}, "ls-remote", unpinned)
		out, code := w.run(work, []string{"ALKNET_TRUST_ON_FIRST_USE=1"}, "ls-remote", unpinned)
		if code != 0 || !strings.Contains(out, "recorded the node at "+e.srv.Addr+" as "+e.srv.FP) || !strings.Contains(out, "\trefs/heads/main") {
			t.Fatalf("ls-remote with ALKNET_TRUST_ON_FIRST_USE=1: exit %d\n%s", code, out)
		}
		if kp, err := os.ReadFile(filepath.Join(w.cli.dataDir, "known_peers")); err != nil || !strings.Contains(string(kp), e.srv.Addr+" "+e.srv.FP) {
			t.Fatalf("known_peers after trust on first use: %q %v", kp, err)
		}
		w.git(work, "ls-remote", unpinned)
		wrong := "ed25519:" + strings.Repeat("00", 32)
		w.gitFail(work, []string{"HAS CHANGED", "the URL says " + wrong}, "ls-remote", fmt.Sprintf("alknet://%s@%s/proj", wrong, e.srv.Addr))
	})

	t.Run("access", func(t *testing.T) {
		// A push to a new name creates it only with git:create.
		writer, reader := e.user("writer"), e.user("reader")
		wsrc := writer.newRepo(1)
		writer.gitFail(wsrc, []string{"fatal: remote error: permission denied: git:create required to create newrepo"}, "push", e.url("newrepo"), "main")
		if _, err := os.Stat(filepath.Join(e.root, "newrepo.git")); !os.IsNotExist(err) {
			t.Fatalf("a refused push left newrepo.git: %v", err)
		}
		dev.git(wsrc, "push", "-q", e.url("newrepo"), "main")
		writer.git(wsrc, "commit", "-q", "--allow-empty", "-m", "writer's")
		writer.git(wsrc, "push", "-q", e.url("newrepo"), "main")
		// A read-only identity reads, and its push is refused with the reason.
		reader.git(work, "clone", "-q", e.url("newrepo"), "as-reader")
		rd := filepath.Join(work, "as-reader")
		reader.commit(rd, "r.txt", "reader's\n")
		reader.gitFail(rd, []string{"fatal: remote error: permission denied: git:write required to push to newrepo"}, "push", "origin", "main")
		// Names are checked before anything else: .., absolute and odd names.
		for _, bad := range []string{"../etc", "a/../../b", ".hidden", "a//b", "-x", "x.git/y", "a%2fb"} {
			dev.gitFail(work, []string{"fatal: remote error: repository name"}, "ls-remote", e.url(bad))
		}
		dev.gitFail(work, []string{"fatal: remote error: repository not found: none"}, "ls-remote", e.url("none"))
	})
}

// Stock git over SSH, through `alknet pipe` as ProxyCommand and through
// the SSH plugin's plain TCP listener, with protocol v2.
func TestGitOverSSH(t *testing.T) {
	e := startGit(t, "")
	dev := e.user("dev")
	src := dev.newRepo(2)
	dev.git(src, "push", "-q", e.url("proj"), "main")
	host, port, _ := net.SplitHostPort(e.srv.Addr)
	sshBase := fmt.Sprintf("ssh -F /dev/null -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o HostKeyAlias=node -o ConnectTimeout=10",
		dev.key, e.knownHosts)
	proxy := fmt.Sprintf("%s --data-dir %s pipe --alpn alknet/ssh --peer %s %s %s", filepath.Join(binDir, "alknet"), dev.cli.dataDir, e.srv.FP, host, port)
	_, plainPort, _ := net.SplitHostPort(e.plainAddr)
	for _, way := range []struct{ name, sshCommand, url string }{
		{"proxycommand", sshBase + " -o 'ProxyCommand=" + proxy + "'", "ssh://git@node/proj.git"},
		{"proxycommand-scp-syntax", sshBase + " -o 'ProxyCommand=" + proxy + "'", "git@node:proj.git"},
		{"plain-tcp", sshBase, "ssh://git@127.0.0.1:" + plainPort + "/proj.git"},
	} {
		t.Run(way.name, func(t *testing.T) {
			env := []string{"GIT_SSH_COMMAND=" + way.sshCommand, "GIT_TRACE_PACKET=1"}
			dir := t.TempDir()
			out, code := dev.run(dir, env, "-c", "protocol.version=2", "clone", way.url, "c")
			if code != 0 || !strings.Contains(out, "clone< version 2") {
				t.Fatalf("clone over %s: exit %d, want protocol v2 (clone< version 2):\n%s", way.name, code, out)
			}
			c := filepath.Join(dir, "c")
			dev.commit(c, way.name+".txt", way.name+"\n")
			if out, code := dev.run(c, env[:1], "push", "-q", "origin", "main"); code != 0 {
				t.Fatalf("push over %s: exit %d\n%s", way.name, code, out)
			}
			dev.git(src, "pull", "-q", "--ff-only", e.url("proj"), "main")
			dev.commit(src, "from-alknet.txt", way.name+"\n")
			dev.git(src, "push", "-q", e.url("proj"), "main")
			out, code = dev.run(c, env, "-c", "protocol.version=2", "fetch")
			if code != 0 || !strings.Contains(out, "fetch< version 2") {
				t.Fatalf("fetch over %s: exit %d\n%s", way.name, code, out)
			}
			if got, want := dev.rev(c, "origin/main"), dev.rev(src, "HEAD"); got != want {
				t.Fatalf("fetch over %s: origin/main %s, want %s", way.name, got, want)
			}
			// A read-only identity's push over SSH is refused with the reason.
			reader := e.user("reader")
			readerEnv := []string{"GIT_SSH_COMMAND=" + strings.Replace(way.sshCommand, dev.key, reader.key, 1)}
			rdir := t.TempDir()
			if out, code := reader.run(rdir, readerEnv, "clone", "-q", way.url, "r"); code != 0 {
				t.Fatalf("clone as reader over %s: exit %d\n%s", way.name, code, out)
			}
			reader.commit(filepath.Join(rdir, "r"), "reader.txt", "no\n")
			out, code = reader.run(filepath.Join(rdir, "r"), readerEnv, "push", "origin", "main")
			if code == 0 || !strings.Contains(out, "git:write required") {
				t.Fatalf("push as reader over %s: exit %d\n%s", way.name, code, out)
			}
		})
	}
}

// A repository of 5,000 commits and 100 MiB of incompressible blobs
// clones through git-remote-alknet and over SSH, and git fsck --full finds
// nothing wrong; killing the git plugin in the middle of a clone fails
// that clone, the node restarts the plugin and the next clone succeeds.
func TestGitBigRepository(t *testing.T) {
	e := startGit(t, "")
	dev := e.user("dev")
	start := time.Now()
	big := filepath.Join(e.root, "big.git")
	head := makeBigRepo(t, dev, big, 5000, 400, 256<<10)
	t.Logf("generated %s: 5000 commits, 100 MiB of blobs, in %v", big, time.Since(start).Round(time.Millisecond))
	work := t.TempDir()

	start = time.Now()
	dev.git(work, "clone", "-q", e.url("big"), "big")
	t.Logf("clone through git-remote-alknet: %v", time.Since(start).Round(time.Millisecond))
	b := filepath.Join(work, "big")
	if got := dev.rev(b, "HEAD"); got != head {
		t.Fatalf("clone: HEAD %s, want %s", got, head)
	}
	if n := strings.TrimSpace(dev.git(b, "rev-list", "--count", "HEAD")); n != "5000" {
		t.Fatalf("clone: %s commits, want 5000", n)
	}
	start = time.Now()
	if out, code := dev.run(b, nil, "fsck", "--full", "--strict"); code != 0 || strings.TrimSpace(out) != "" {
		t.Fatalf("git fsck --full: exit %d\n%s", code, out)
	}
	t.Logf("fsck --full: %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	_, plainPort, _ := net.SplitHostPort(e.plainAddr)
	ssh := fmt.Sprintf("ssh -F /dev/null -i %s -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o HostKeyAlias=node",
		dev.key, e.knownHosts)
	if out, code := dev.run(work, []string{"GIT_SSH_COMMAND=" + ssh}, "clone", "-q", "--bare", "ssh://git@127.0.0.1:"+plainPort+"/big.git", "big-ssh.git"); code != 0 {
		t.Fatalf("clone over SSH: exit %d\n%s", code, out)
	}
	if got := dev.rev(filepath.Join(work, "big-ssh.git"), "HEAD"); got != head {
		t.Fatalf("clone over SSH: HEAD %s, want %s", got, head)
	}
	t.Logf("bare clone over SSH (plain TCP): %v", time.Since(start).Round(time.Millisecond))

	// Kill -9 the plugin while a clone receives the pack.
	conn := operatorConn(t, e.srv)
	before := waitPlugin(t, conn, "git", func(p pluginStatus) bool { return p.State == "ready" && p.Pid > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "clone", "--bare", "--progress", e.url("big"), "killed.git")
	cmd.Dir, cmd.Env = work, dev.env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var progress bytes.Buffer
	br := bufio.NewReader(io.TeeReader(stderr, &progress))
	for {
		chunk, err := br.ReadString('\r')
		if strings.Contains(chunk, "Receiving objects:") {
			break
		}
		if err != nil {
			t.Fatalf("the clone ended before receiving objects: %v\n%s", err, progress.String())
		}
	}
	if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, br)
	if err := cmd.Wait(); err == nil {
		t.Fatalf("the clone succeeded although the git plugin was killed during it:\n%s", progress.String())
	}
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(progress.String(), "\r", "\n"), "\n") {
		if l != "" && !strings.Contains(l, " objects: ") {
			lines = append(lines, l)
		}
	}
	if !strings.Contains(progress.String(), "the git handler went away") {
		t.Errorf("git's output does not say the node's git handler went away:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("the clone during the kill ended with:\n%s", strings.Join(lines[max(0, len(lines)-4):], "\n"))
	if _, err := os.Stat(filepath.Join(work, "killed.git")); !os.IsNotExist(err) {
		t.Fatalf("git left the failed clone behind: %v", err)
	}
	after := waitPlugin(t, conn, "git", func(p pluginStatus) bool { return p.State == "ready" && p.Restarts >= 1 })
	if after.Pid == before.Pid {
		t.Fatalf("the plugin was not restarted: %+v", after)
	}
	dev.git(work, "clone", "-q", "--bare", e.url("big"), "again.git")
	if got := dev.rev(filepath.Join(work, "again.git"), "HEAD"); got != head {
		t.Fatalf("the clone after the restart: HEAD %s, want %s", got, head)
	}
}

// makeBigRepo writes a bare repository at dir with git fast-import:
// commits commits on main, the first blobs of which each add a file of
// blobSize pseudo-random (incompressible) bytes, every one changing a
// small counter file. It returns main's commit.
func makeBigRepo(t *testing.T, u *gitUser, dir string, commits, blobs, blobSize int) string {
	t.Helper()
	u.git(filepath.Dir(dir), "init", "-q", "--bare", "-b", "main", dir)
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir, cmd.Env = dir, u.env
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(in, 1<<20)
	rng := rand.NewChaCha8([32]byte{'g', 'i', 't'})
	blob := make([]byte, blobSize)
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	for i := range commits {
		msg := fmt.Sprintf("commit %d\n", i)
		fmt.Fprintf(w, "commit refs/heads/main\nmark :%d\ncommitter dev <dev@example.com> %d +0000\ndata %d\n%s", i+1, when+int64(i), len(msg), msg)
		if i > 0 {
			fmt.Fprintf(w, "from :%d\n", i)
		}
		counter := fmt.Sprintf("%d\n", i)
		fmt.Fprintf(w, "M 100644 inline counter.txt\ndata %d\n%s\n", len(counter), counter)
		if i < blobs {
			_, _ = rng.Read(blob)
			fmt.Fprintf(w, "M 100644 inline data/%04d.bin\ndata %d\n", i, len(blob))
			_, _ = w.Write(blob)
			_ = w.WriteByte('\n')
		}
		_ = w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatalf("git fast-import: %v\n%s", err, stderr.String())
	}
	_ = in.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("git fast-import: %v\n%s", err, stderr.String())
	}
	return u.rev(dir, "main")
}

// Bad requests on an alknet/git stream are answered with ERR and end that
// stream only: another request on the same connection goes on.
func TestGitBadRequests(t *testing.T) {
	e := startGit(t, "")
	dev := e.user("dev")
	src := dev.newRepo(1)
	dev.git(src, "push", "-q", e.url("proj"), "main")
	cert := vaultCert(t, dev.cli)
	conn, err := dial.Dial(tctx(t, 10*time.Second), e.srv.Addr, dial.Options{ALPN: "alknet/git", Peer: e.srv.FP, QUIC: true, ClientCert: cert})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	pkt := func(s string) []byte { return fmt.Appendf(nil, "%04x%s", len(s)+4, s) }

	// A good request, left waiting for the client's wants.
	good, err := conn.OpenStream(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := good.Write(pkt("git-upload-pack /proj\x00host=node\x00")); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 4+40)
	if _, err := io.ReadFull(good, first); err != nil {
		t.Fatalf("the advertisement: %v", err)
	}

	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"not a pkt-line", []byte("GET / HTTP/1.1\r\n\r\n"), "ERR expected a git-daemon request pkt-line"},
		{"no repository", pkt("git-upload-pack\x00host=node\x00"), "ERR bad request line"},
		{"unknown service", pkt("git-frobnicate /proj\x00host=node\x00"), `ERR unknown service "git-frobnicate"`},
		{"dot-dot", pkt("git-upload-pack /../etc\x00host=node\x00"), "ERR repository name \"/../etc\": an element may not start with '.' or '-'"},
		{"absolute", pkt("git-upload-pack //etc/passwd\x00host=node\x00"), "ERR repository name \"//etc/passwd\": not an absolute path"},
		{"odd characters", pkt("git-upload-pack /a;rm -rf\x00host=node\x00"), "ERR repository name"},
		{"a flush first", []byte("0000"), "ERR expected a git-daemon request pkt-line, got a special packet"},
	} {
		s, err := conn.OpenStream(tctx(t, 10*time.Second))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, _ = s.Write(c.in)
		_ = s.CloseWrite()
		_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(s)
		if err != nil || len(got) < 4 || !bytes.Contains(got[4:], []byte(c.want)) {
			t.Fatalf("%s: %q %v, want a pkt-line %q and the end of the stream", c.name, got, err, c.want)
		}
	}
	// The good request goes on: a flush says "no wants", upload-pack ends.
	if _, err := good.Write([]byte("0000")); err != nil {
		t.Fatalf("the good stream after the bad ones: %v", err)
	}
	_ = good.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(good); err != nil {
		t.Fatalf("the good stream after the bad ones: %v", err)
	}
	if conn.Context().Err() != nil {
		t.Fatalf("the connection closed: %v", context.Cause(conn.Context()))
	}
	// git shows the node's refusal as a remote error.
	dev.gitFail(t.TempDir(), []string{"fatal: remote error: repository name \"/../etc\""}, "clone", e.url("../etc"))
	e.srv.waitLog("git request refused", `reason="bad request"`)
	if strings.Contains(e.srv.logs.String(), "plugin process exited") {
		t.Fatalf("the plugin restarted:\n%s", e.srv.logs)
	}
}

// vaultCert is the node certificate of c's vault (its identity).
func vaultCert(t *testing.T, c *cli) *tls.Certificate {
	t.Helper()
	f, err := vault.ReadFile(filepath.Join(c.dataDir, vault.FileName))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := f.Seed(nil)
	if err != nil {
		t.Fatal(err)
	}
	v := vault.New()
	v.UnlockSeed(seed)
	key, err := v.NodeKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := identity.RawKeyTLSCertificate(key.Signer())
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}
