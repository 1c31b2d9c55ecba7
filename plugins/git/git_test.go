package git_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/git"
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

// relayEnv makes this test binary a relay instead of running tests: git's
// ext:: transport runs it as "<bin> <socket> <mode> [<service> <repo>]",
// and it joins its stdin and stdout to a stream of the plugin, opened by
// the test (serveSocket) as the identity the socket belongs to.
const relayEnv = "ALKNET_GIT_TEST_RELAY"

func TestMain(m *testing.M) {
	// The repositories' pre-receive hooks run this binary, as they run
	// alknet-plugin-git.
	if len(os.Args) > 1 && os.Args[1] == "pre-receive" {
		git.Main()
	}
	if os.Getenv(relayEnv) == "1" {
		os.Exit(relay(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// relay opens the plugin's stream through the socket, writes the request
// the mode asks for, then copies both ways:
//
//	raw        nothing (git's ext:: %G sends the git-daemon request itself)
//	ssh        the SSH bridge's JSON header
//	ssh-v2     the same with "protocol":"version=2"
//	daemon     a git-daemon request line
//	daemon-v2  the same with the extra parameter version=2
func relay(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "relay: want <socket> <mode> [<service> <repo>]")
		return 2
	}
	c, err := net.Dial("unix", args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return 1
	}
	uc := c.(*net.UnixConn)
	mode := args[1]
	if mode != "raw" {
		if len(args) != 4 {
			fmt.Fprintln(os.Stderr, "relay: want <socket> <mode> <service> <repo>")
			return 2
		}
		service, repo := args[2], args[3]
		switch mode {
		case "ssh", "ssh-v2":
			h := map[string]string{"service": service, "path": repo}
			if mode == "ssh-v2" {
				h["protocol"] = "version=2"
			}
			b, _ := json.Marshal(h)
			_, _ = uc.Write(append(b, '\n'))
		case "daemon", "daemon-v2":
			line := service + " " + repo + "\x00host=node.example\x00"
			if mode == "daemon-v2" {
				line += "\x00version=2\x00"
			}
			_, _ = fmt.Fprintf(uc, "%04x%s", len(line)+4, line)
		default:
			fmt.Fprintln(os.Stderr, "relay: unknown mode", mode)
			return 2
		}
	}
	go func() {
		// Ends with the process.
		_, _ = io.Copy(uc, os.Stdin)
		_ = uc.CloseWrite()
	}()
	_, _ = io.Copy(os.Stdout, uc)
	return 0
}

// logBuffer collects the plugin's JSON log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the log lines whose message is msg, decoded.
func (l *logBuffer) lines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(l.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["@message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// The identities of the tests.
var (
	alice    = &sdk.Identity{ID: "alice", Scopes: []string{git.ScopeRead, git.ScopeWrite, git.ScopeCreate}}
	writer   = &sdk.Identity{ID: "writer", Scopes: []string{git.ScopeRead, git.ScopeWrite}}
	reader   = &sdk.Identity{ID: "reader", Scopes: []string{git.ScopeRead}}
	teamDev  = &sdk.Identity{ID: "team-dev", Scopes: []string{git.ScopeRead, git.ScopeWrite, git.ScopeCreate}, Resources: map[string][]string{git.ResourceRepo: {"team/*"}}}
	operator = &sdk.Identity{ID: "operator", Scopes: []string{git.ScopeAdmin}}
)

type node struct {
	t       *testing.T
	h       *sdktest.Harness
	root    string
	bin     string // this test binary: relay and hook
	sockDir string
	home    string // HOME of the git clients
	logs    *logBuffer

	mu    sync.Mutex
	socks map[string]string // identity → socket
}

// newNode starts the plugin with settings (root is added) and the test
// binary as its hook program.
func newNode(t *testing.T, settings map[string]any) *node {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "gt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	n := &node{t: t, root: t.TempDir(), bin: bin, sockDir: sockDir, home: t.TempDir(), logs: &logBuffer{}, socks: map[string]string{}}
	if settings == nil {
		settings = map[string]any{}
	}
	if _, ok := settings["root"]; !ok {
		settings["root"] = n.root
	} else {
		n.root = settings["root"].(string)
	}
	p := &git.Plugin{HookExecutable: bin, Logger: hclog.New(&hclog.LoggerOptions{Name: "git", Output: n.logs, JSONFormat: true, Level: hclog.Debug})}
	n.h = sdktest.Start(t, p, sdktest.Options{Settings: settings})
	return n
}

// socket returns the socket whose streams reach the plugin as id (nil:
// anonymous).
func (n *node) socket(id *sdk.Identity) string {
	key := "anonymous"
	if id != nil {
		key = id.ID
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.socks[key]; ok {
		return s
	}
	path := filepath.Join(n.sockDir, key+".sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		n.t.Fatal(err)
	}
	var wg sync.WaitGroup
	n.t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		// Owned by the test: ends when the listener closes.
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.serveSocket(c.(*net.UnixConn), id)
			}()
		}
	}()
	n.socks[key] = path
	return path
}

// serveSocket joins a relay's connection to a new stream of the plugin.
func (n *node) serveSocket(uc *net.UnixConn, id *sdk.Identity) {
	defer uc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := n.h.Connect(ctx, sdk.Auth{ALPN: git.ALPN, Identity: id, RemoteAddr: "192.0.2.9:40000", Transport: "quic"})
	if err != nil {
		n.t.Error(err)
		return
	}
	defer conn.Close()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		n.t.Error(err)
		return
	}
	up := make(chan struct{})
	go func() {
		defer close(up)
		_, _ = io.Copy(st, uc)
		_ = st.CloseWrite()
	}()
	_, _ = io.Copy(uc, st)
	_ = uc.CloseWrite()
	<-up
}

// url is a git URL reaching repo as id: git runs the relay through ext::.
func (n *node) url(id *sdk.Identity, mode, repo string) string {
	if mode == "raw" {
		return fmt.Sprintf("ext::%s %s raw %%G%s", n.bin, n.socket(id), repo)
	}
	return fmt.Sprintf("ext::%s %s %s %%S %s", n.bin, n.socket(id), mode, repo)
}

// git runs a git client command in dir.
func (n *node) git(dir string, env []string, args ...string) (string, string, error) {
	n.t.Helper()
	full := append([]string{"-c", "protocol.allow=always", "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false"}, args...)
	cmd := exec.Command("git", full...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.home, "LANG=C", relayEnv + "=1",
		"GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=A U Thor", "GIT_AUTHOR_EMAIL=author@example.org",
		"GIT_COMMITTER_NAME=C O Mitter", "GIT_COMMITTER_EMAIL=committer@example.org"}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), errb.String(), err
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		n.t.Fatalf("git %s: no end after 2 minutes; stderr:\n%s", strings.Join(args, " "), errb.String())
		return "", "", nil
	}
}

// mustGit runs git and fails the test if it fails.
func (n *node) mustGit(dir string, args ...string) string {
	n.t.Helper()
	out, errOut, err := n.git(dir, nil, args...)
	if err != nil {
		n.t.Fatalf("git %s: %v\n%s\nplugin log:\n%s", strings.Join(args, " "), err, errOut, n.logs)
	}
	return out
}

// mustFail runs git, wants it to fail and returns its stderr.
func (n *node) mustFail(dir string, args ...string) string {
	n.t.Helper()
	_, errOut, err := n.git(dir, nil, args...)
	if err == nil {
		n.t.Fatalf("git %s succeeded; want a failure\n%s", strings.Join(args, " "), errOut)
	}
	return errOut
}

// work makes a work tree with one commit on main.
func (n *node) work() string {
	n.t.Helper()
	dir := n.t.TempDir()
	n.mustGit(dir, "init", "-q")
	n.commit(dir, "README", "one\n")
	return dir
}

// commit writes file and commits it; it returns the commit's hash.
func (n *node) commit(dir, file, content string) string {
	n.t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
		n.t.Fatal(err)
	}
	n.mustGit(dir, "add", file)
	n.mustGit(dir, "commit", "-q", "-m", "write "+file)
	return strings.TrimSpace(n.mustGit(dir, "rev-parse", "HEAD"))
}

// refs reads the references of repo through git/refs.
func (n *node) refs(repo string) map[string]string {
	n.t.Helper()
	out, err := n.h.Call(context.Background(), git.OpRefs, map[string]string{"name": repo}, operator)
	if err != nil {
		n.t.Fatalf("git/refs %s: %v", repo, err)
	}
	var refs []git.Ref
	if err := json.Unmarshal(out, &refs); err != nil {
		n.t.Fatal(err)
	}
	m := map[string]string{}
	for _, r := range refs {
		m[r.Name] = r.Hash
	}
	return m
}

func wantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: %q not in:\n%s", what, w, got)
		}
	}
}

func TestCloneFetchPush(t *testing.T) {
	n := newNode(t, nil)
	w := n.work()
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/team/app.git"), "main")
	if st, err := os.Stat(filepath.Join(n.root, "team", "app.git", "HEAD")); err != nil || !st.Mode().IsRegular() {
		t.Fatalf("the repository is not stored at <root>/team/app.git: %v", err)
	}

	// Clone over the SSH bridge's form, as a reader.
	c := filepath.Join(t.TempDir(), "clone")
	n.mustGit("", "clone", "-q", n.url(reader, "ssh", "/team/app.git"), c)
	if b, err := os.ReadFile(filepath.Join(c, "README")); err != nil || string(b) != "one\n" {
		t.Fatalf("cloned README: %q %v", b, err)
	}
	if branch := strings.TrimSpace(n.mustGit(c, "symbolic-ref", "--short", "HEAD")); branch != "main" {
		t.Fatalf("cloned HEAD is %q", branch)
	}

	// An incremental fetch of a second commit, and a push of a reader
	// refused with the reason.
	second := n.commit(w, "NEWS", "two\n")
	n.mustGit(w, "push", "-q", n.url(writer, "ssh", "team/app"), "main")
	n.mustGit(c, "fetch", "-q", n.url(reader, "ssh", "/team/app.git"), "main")
	if got := strings.TrimSpace(n.mustGit(c, "rev-parse", "FETCH_HEAD")); got != second {
		t.Fatalf("fetched %s; want %s", got, second)
	}
	n.commit(c, "mine", "x\n")
	errOut := n.mustFail(c, "push", n.url(reader, "ssh", "/team/app.git"), "HEAD:refs/heads/reader")
	wantContains(t, "push without git:write", errOut, "fatal: remote error: permission denied: git:write required to push to team/app")
	if _, ok := n.refs("team/app")["refs/heads/reader"]; ok {
		t.Fatal("the refused push created a branch")
	}

	// The same repository through git's own git-daemon request line (the
	// form git-remote-alknet uses), and a shallow clone.
	d := filepath.Join(t.TempDir(), "daemon")
	n.mustGit("", "clone", "-q", "--depth", "1", n.url(reader, "raw", "/team/app.git"), d)
	if got := strings.TrimSpace(n.mustGit(d, "rev-parse", "HEAD")); got != second {
		t.Fatalf("cloned %s through the git-daemon form; want %s", got, second)
	}

	// One log line per request, without repository names or git's output.
	if len(n.logs.lines("git request")) < 5 {
		t.Errorf("too few request lines logged:\n%s", n.logs)
	}
	for _, l := range n.logs.lines("git request refused") {
		if l["reason"] != "permission denied" || l["identity"] != "reader" {
			t.Errorf("refusal logged as %v", l)
		}
	}
	for _, l := range append(n.logs.lines("git request"), n.logs.lines("git request refused")...) {
		for k, v := range l {
			if s, ok := v.(string); ok && strings.Contains(s, "team/app") {
				t.Errorf("log line %v names the repository in %s", l["@message"], k)
			}
		}
	}
}

func TestCreateNeedsScope(t *testing.T) {
	n := newNode(t, nil)
	w := n.work()
	errOut := n.mustFail(w, "push", n.url(writer, "ssh", "/team/new.git"), "main")
	wantContains(t, "push to a new name without git:create", errOut, "fatal: remote error: permission denied: git:create required to create team/new")
	if _, err := os.Stat(filepath.Join(n.root, "team", "new.git")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused push left a repository: %v", err)
	}
	errOut = n.mustFail(w, "ls-remote", n.url(writer, "ssh", "/team/new.git"))
	wantContains(t, "fetch of a missing repository", errOut, "fatal: remote error: repository not found: team/new")

	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/team/new.git"), "main")
	if len(n.logs.lines("repository created")) != 1 {
		t.Fatalf("creation not logged:\n%s", n.logs)
	}
	// Once it exists, git:write is enough.
	n.commit(w, "b", "b\n")
	n.mustGit(w, "push", "-q", n.url(writer, "ssh", "/team/new.git"), "main")
}

func TestAnonymousAndPublic(t *testing.T) {
	n := newNode(t, map[string]any{"repos": []map[string]any{{"name": "pub/site", "public": true}}})
	w := n.work()
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/pub/site.git"), "main")
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/team/app.git"), "main")

	n.mustGit("", "clone", "-q", n.url(nil, "daemon", "/pub/site.git"), filepath.Join(t.TempDir(), "site"))
	errOut := n.mustFail("", "clone", "-q", n.url(nil, "daemon", "/team/app.git"), filepath.Join(t.TempDir(), "app"))
	wantContains(t, "anonymous clone of a private repository", errOut,
		"fatal: remote error: permission denied: git:read required to fetch team/app (anonymous callers reach public repositories only")
	errOut = n.mustFail(w, "push", n.url(nil, "daemon", "/pub/site.git"), "main:other")
	wantContains(t, "anonymous push", errOut, "permission denied: git:write required to push to pub/site")
	// An identity without git:read still reads public repositories.
	n.mustGit("", "ls-remote", n.url(&sdk.Identity{ID: "nobody"}, "ssh", "/pub/site.git"))
}

func TestRepositoryGrants(t *testing.T) {
	n := newNode(t, nil)
	w := n.work()
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/other/app.git"), "main")
	n.mustGit(w, "push", "-q", n.url(teamDev, "ssh", "/team/x.git"), "main")
	n.mustGit("", "ls-remote", n.url(teamDev, "ssh", "/team/x.git"))
	errOut := n.mustFail("", "ls-remote", n.url(teamDev, "ssh", "/other/app.git"))
	wantContains(t, "fetch outside the granted repositories", errOut,
		`fatal: remote error: permission denied: other/app is not among the repositories granted to team-dev (resources "git-repo")`)
	errOut = n.mustFail(w, "push", n.url(teamDev, "ssh", "/other/new.git"), "main")
	wantContains(t, "create outside the granted repositories", errOut, "other/new is not among the repositories granted to team-dev")
	// "team/*" is one level.
	errOut = n.mustFail(w, "push", n.url(teamDev, "ssh", "/team/a/b.git"), "main")
	wantContains(t, "create below the granted pattern", errOut, "team/a/b is not among the repositories granted")
}

func TestPushRules(t *testing.T) {
	n := newNode(t, map[string]any{"repos": []map[string]any{
		{"name": "team/app", "protected": []string{"main", "release/*"}, "deny_tag_overwrite": true, "deny_delete": true},
		{"name": "team/ff.git", "fast_forward_only": true},
	}})
	app := n.url(alice, "ssh", "/team/app.git")
	w := n.work()
	c1 := strings.TrimSpace(n.mustGit(w, "rev-parse", "HEAD"))
	n.mustGit(w, "tag", "v1")
	n.mustGit(w, "push", "-q", app, "main", "main:release/1", "main:feature", "v1")
	c2 := n.commit(w, "two", "2\n")
	// A fast-forward of a protected branch: the hook reads the pushed
	// commit from git's quarantine.
	n.mustGit(w, "push", "-q", app, "main", "main:release/1", "main:feature")
	n.mustGit(w, "reset", "-q", "--hard", c1)
	c3 := n.commit(w, "three", "3\n")

	for _, tc := range []struct {
		name   string
		args   []string
		stderr []string
	}{
		{"force push to main", []string{"push", "--force", app, "main"}, []string{
			`remote: alknet: refs/heads/main refused: the branch is protected (protected = "main"): no force push`,
			"pre-receive hook declined",
		}},
		{"force push to release/1", []string{"push", "--force", app, "main:release/1"}, []string{
			`remote: alknet: refs/heads/release/1 refused: the branch is protected (protected = "release/*")`,
		}},
		{"deleting main", []string{"push", app, ":main"}, []string{
			`remote: alknet: refs/heads/main refused: the branch is protected (protected = "main"): it cannot be deleted`,
		}},
		{"deleting a branch", []string{"push", app, ":feature"}, []string{
			"remote: alknet: refs/heads/feature refused: deleting branches and tags is not allowed here (deny_delete)",
		}},
		{"moving a tag", []string{"push", "--force", app, c3 + ":refs/tags/v1"}, []string{
			"remote: alknet: refs/tags/v1 refused: tags cannot be moved here (deny_tag_overwrite)",
		}},
	} {
		wantContains(t, tc.name, n.mustFail(w, tc.args...), tc.stderr...)
	}
	refs := n.refs("team/app")
	for ref, want := range map[string]string{"refs/heads/main": c2, "refs/heads/release/1": c2, "refs/heads/feature": c2, "refs/tags/v1": c1} {
		if refs[ref] != want {
			t.Errorf("%s is %s after the refused pushes; want %s", ref, refs[ref], want)
		}
	}
	// Other branches may be forced, and push options reach the server.
	n.mustGit(w, "push", "-q", "--force", app, "main:feature")
	n.mustGit(w, "push", "-q", "-o", "ci.skip", "-o", "note=x y", app, "main:topic")
	if refs := n.refs("team/app"); refs["refs/heads/feature"] != c3 || refs["refs/heads/topic"] != c3 {
		t.Errorf("feature %s, topic %s; want both %s", refs["refs/heads/feature"], refs["refs/heads/topic"], c3)
	}

	// fast_forward_only: fast-forwards pass, forced updates do not,
	// deletion is allowed (except of the branch HEAD names, which git
	// itself refuses: receive.denyDeleteCurrent).
	ff := n.url(alice, "ssh", "/team/ff")
	n.mustGit(w, "push", "-q", ff, c1+":refs/heads/main", c1+":refs/heads/old")
	n.mustGit(w, "push", "-q", ff, c3+":refs/heads/main")
	wantContains(t, "forced update under fast_forward_only", n.mustFail(w, "push", "--force", ff, c2+":refs/heads/main"),
		"remote: alknet: refs/heads/main refused: only fast-forward updates are allowed here (fast_forward_only)")
	n.mustGit(w, "push", "-q", ff, ":old")
	if refs := n.refs("team/ff"); refs["refs/heads/old"] != "" || refs["refs/heads/main"] != c3 {
		t.Fatalf("team/ff after the pushes: %v", refs)
	}
}

func TestProtocolV2(t *testing.T) {
	n := newNode(t, nil)
	w := n.work()
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/team/app.git"), "main")
	trace := []string{"GIT_TRACE_PACKET=1"}
	for _, tc := range []struct {
		mode string
		v2   bool
	}{{"ssh", false}, {"ssh-v2", true}, {"daemon", false}, {"daemon-v2", true}} {
		dir := filepath.Join(t.TempDir(), tc.mode)
		_, errOut, err := n.git("", trace, "-c", "protocol.version=2", "clone", n.url(reader, tc.mode, "/team/app.git"), dir)
		if err != nil {
			t.Fatalf("%s: clone: %v\n%s", tc.mode, err, errOut)
		}
		if got := strings.Contains(errOut, "< version 2"); got != tc.v2 {
			t.Errorf("%s: server answered protocol v2: %v; want %v", tc.mode, got, tc.v2)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "README")); err != nil || string(b) != "one\n" {
			t.Errorf("%s: README %q %v", tc.mode, b, err)
		}
	}
	// v2 ls-remote with a ref prefix, and a fetch after it.
	out, errOut, err := n.git("", trace, "-c", "protocol.version=2", "ls-remote", n.url(reader, "ssh-v2", "/team/app.git"), "refs/heads/main")
	if err != nil || !strings.Contains(out, "refs/heads/main") || !strings.Contains(errOut, "ls-refs") {
		t.Fatalf("v2 ls-remote: %v\n%s\n%s", err, out, errOut)
	}
}

func TestUploadArchive(t *testing.T) {
	n := newNode(t, nil)
	w := n.work()
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/team/app.git"), "main")
	out := n.mustGit(w, "archive", "--remote="+n.url(reader, "ssh", "/team/app.git"), "--format=tar", "main")
	if !strings.Contains(out, "README") || !strings.Contains(out, "one\n") {
		t.Fatalf("archive does not hold README: %d bytes", len(out))
	}
	errOut := n.mustFail(w, "archive", "--remote="+n.url(&sdk.Identity{ID: "nobody"}, "ssh", "/team/app.git"), "main")
	wantContains(t, "archive without git:read", errOut, "remote error: permission denied: git:read required to archive team/app")
}

func TestBadRepositoryNames(t *testing.T) {
	n := newNode(t, nil)
	// What git shows.
	for _, mode := range []string{"ssh", "daemon"} {
		errOut := n.mustFail("", "ls-remote", n.url(alice, mode, "/team/../../etc"))
		wantContains(t, mode, errOut, `fatal: remote error: repository name "/team/../../etc": an element may not start with '.' or '-'`)
	}
	errOut := n.mustFail("", "ls-remote", n.url(alice, "ssh", "/"+strings.Repeat("a", 201)))
	wantContains(t, "a long name", errOut, "fatal: remote error: repository name longer than 200 bytes")
	// What the stream carries, for both forms.
	for _, name := range []string{"/../etc", "//etc/passwd", "/.hidden", "/team//x", "/a.git/b", "/-x", "~alice/x", "/x y", ""} {
		_, st := n.rawStream(alice, git.ServiceReceivePack, name)
		if l := firstLine(t, st); !strings.HasPrefix(l, "ERR repository name") && !strings.HasPrefix(l, "ERR no repository named") {
			t.Errorf("git-daemon request for %q: %q", name, l)
		}
		h, _ := json.Marshal(map[string]string{"service": git.ServiceReceivePack, "path": name})
		st = n.rawHeader(alice, string(h)+"\n")
		if l := firstLine(t, st); !strings.HasPrefix(l, "ERR repository name") && !strings.HasPrefix(l, "ERR no repository named") {
			t.Errorf("JSON header for %q: %q", name, l)
		}
	}
	if entries, _ := os.ReadDir(n.root); len(entries) > 1 { // the rules file only
		t.Fatalf("bad names left something under the root: %v", entries)
	}
}

// rawStream opens a stream of the plugin as id and writes a git-daemon
// request for service on repo.
func (n *node) rawStream(id *sdk.Identity, service, repo string) (*sdktest.Conn, *sdktest.Stream) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := n.h.Connect(ctx, sdk.Auth{ALPN: git.ALPN, Identity: id, RemoteAddr: "192.0.2.9:40000", Transport: "quic"})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(conn.Close)
	st, err := conn.OpenStream(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	line := service + " " + repo + "\x00host=x\x00"
	if _, err := fmt.Fprintf(st, "%04x%s", len(line)+4, line); err != nil {
		n.t.Fatal(err)
	}
	return conn, st
}

// rawHeader opens a stream of the plugin as id and writes header.
func (n *node) rawHeader(id *sdk.Identity, header string) *sdktest.Stream {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := n.h.Connect(ctx, sdk.Auth{ALPN: git.ALPN, Identity: id, RemoteAddr: "192.0.2.9:40000", Transport: "quic"})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(conn.Close)
	st, err := conn.OpenStream(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := io.WriteString(st, header); err != nil {
		n.t.Fatal(err)
	}
	return st
}

// firstLine reads the first pkt-line of a stream.
func firstLine(t *testing.T, st io.Reader) string {
	t.Helper()
	var hdr [4]byte
	if _, err := io.ReadFull(st, hdr[:]); err != nil {
		t.Fatalf("reading the first pkt-line: %v", err)
	}
	var size int
	if _, err := fmt.Sscanf(string(hdr[:]), "%04x", &size); err != nil {
		t.Fatalf("pkt-line length %q", hdr)
	}
	if size < 4 {
		return string(hdr[:])
	}
	b := make([]byte, size-4)
	if _, err := io.ReadFull(st, b); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestConcurrencyBounds(t *testing.T) {
	n := newNode(t, map[string]any{"max_concurrent": 2, "max_per_identity": 1})
	if _, err := n.h.Call(context.Background(), git.OpCreate, map[string]string{"name": "team/app"}, alice); err != nil {
		t.Fatal(err)
	}
	// upload-pack advertises, then waits for the client's wants: it holds
	// its place until the stream ends.
	_, first := n.rawStream(alice, git.ServiceUploadPack, "/team/app.git")
	if l := firstLine(t, first); strings.HasPrefix(l, "ERR") {
		t.Fatalf("first request: %q", l)
	}
	_, again := n.rawStream(alice, git.ServiceUploadPack, "/team/app.git")
	if l := firstLine(t, again); l != "ERR too many concurrent git requests, try again\n" {
		t.Fatalf("second request of one identity: %q", l)
	}
	_, other := n.rawStream(reader, git.ServiceUploadPack, "/team/app.git")
	if l := firstLine(t, other); strings.HasPrefix(l, "ERR") {
		t.Fatalf("another identity's request: %q", l)
	}
	_, third := n.rawStream(writer, git.ServiceUploadPack, "/team/app.git")
	if l := firstLine(t, third); l != "ERR too many concurrent git requests, try again\n" {
		t.Fatalf("a request over max_concurrent: %q", l)
	}
	// The client's EOF ends upload-pack and frees the place.
	_ = first.CloseWrite()
	if _, err := io.ReadAll(first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's place to be free", func() bool {
		_, st := n.rawStream(alice, git.ServiceUploadPack, "/team/app.git")
		ok := !strings.HasPrefix(firstLine(t, st), "ERR")
		_ = st.CloseWrite()
		_, _ = io.ReadAll(st)
		return ok
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestGitEndsWithItsRequest(t *testing.T) {
	n := newNode(t, map[string]any{"max_per_identity": 1, "request_timeout": "1s"})
	if _, err := n.h.Call(context.Background(), git.OpCreate, map[string]string{"name": "team/app"}, alice); err != nil {
		t.Fatal(err)
	}
	// A client that goes silent: request_timeout ends the request.
	start := time.Now()
	_, st := n.rawStream(alice, git.ServiceReceivePack, "/team/app.git")
	if l := firstLine(t, st); strings.HasPrefix(l, "ERR") {
		t.Fatalf("request: %q", l)
	}
	if _, err := io.ReadAll(st); err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("the request ended after %s; request_timeout is 1s", d)
	}
	waitFor(t, "the timeout to be logged", func() bool { return len(n.logs.lines("git request stopped: request_timeout reached")) == 1 })
	// A client that never sends its request.
	if l := firstLine(t, n.rawHeader(alice, "")); l != "ERR no request within 1s\n" {
		t.Fatalf("a stream without a request: %q", l)
	}

	// A connection that closes mid-request: git is killed and the
	// identity's place freed.
	n2 := newNode(t, map[string]any{"max_per_identity": 1})
	if _, err := n2.h.Call(context.Background(), git.OpCreate, map[string]string{"name": "team/app"}, alice); err != nil {
		t.Fatal(err)
	}
	conn, st := n2.rawStream(alice, git.ServiceUploadPack, "/team/app.git")
	if l := firstLine(t, st); strings.HasPrefix(l, "ERR") {
		t.Fatalf("request: %q", l)
	}
	conn.Close()
	waitFor(t, "the request to end", func() bool { return len(n2.logs.lines("git request")) == 1 })
	_, st = n2.rawStream(alice, git.ServiceUploadPack, "/team/app.git")
	if l := firstLine(t, st); strings.HasPrefix(l, "ERR") {
		t.Fatalf("after the connection closed: %q", l)
	}
}

func TestMaxPushSize(t *testing.T) {
	n := newNode(t, map[string]any{"max_push_size": "4KiB"})
	w := n.work()
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/team/app.git"), "main")
	big := make([]byte, 64<<10)
	_, _ = rand.Read(big) // incompressible
	n.commit(w, "big", string(big))
	errOut := n.mustFail(w, "push", n.url(alice, "ssh", "/team/app.git"), "main")
	wantContains(t, "a push over max_push_size", errOut, "pack exceeds maximum allowed size")
}

func TestBadRequests(t *testing.T) {
	n := newNode(t, nil)
	for _, tc := range []struct{ in, want string }{
		{"{\"service\":\"git-shell\",\"path\":\"/x\"}\n", "ERR unknown service \"git-shell\""},
		{"{\"service\":\"git-upload-pack\",\"path\":\"/x\",\"protocol\":\"version=9\"}\n", "ERR unsupported protocol \"version=9\""},
		{"{not json}\n", "ERR the JSON header line does not parse"},
		{"0000", "ERR expected a git-daemon request pkt-line"},
		{"GET / HTTP/1.1\r\n\r\n", "ERR expected a git-daemon request pkt-line"},
	} {
		st := n.rawHeader(alice, tc.in)
		_ = st.CloseWrite()
		b, _ := io.ReadAll(st)
		if len(b) < 4 || !strings.HasPrefix(string(b[4:]), tc.want) {
			t.Errorf("%q: answered %q; want %q", tc.in, b, tc.want)
		}
	}
}

func TestOperations(t *testing.T) {
	n := newNode(t, map[string]any{"repos": []map[string]any{
		{"name": "pub/site", "public": true},
		{"name": "team/app", "protected": []string{"main"}},
	}})
	ctx := context.Background()
	call := func(op string, in any, id *sdk.Identity) (json.RawMessage, *sdk.Error) {
		out, err := n.h.Call(ctx, op, in, id)
		if err != nil {
			return nil, err.(*sdk.Error)
		}
		return out, nil
	}
	for _, name := range []string{"team/app", "pub/site", "team/ops", "other/x"} {
		if out, err := call(git.OpCreate, map[string]string{"name": name}, alice); err != nil {
			t.Fatalf("create %s: %v", name, err)
		} else if name == "team/app" {
			var info git.RepoInfo
			if err := json.Unmarshal(out, &info); err != nil || info.Name != "team/app" || info.Head != "main" || info.HeadHash != "" {
				t.Fatalf("created: %s %v", out, err)
			}
		}
	}
	for _, tc := range []struct {
		op   string
		in   any
		id   *sdk.Identity
		code sdk.Code
		msg  string
	}{
		{git.OpCreate, map[string]string{"name": "/team/app.git"}, alice, git.CodeAlreadyExists, "repository team/app exists"},
		{git.OpCreate, map[string]string{"name": "x"}, writer, sdk.CodeForbidden, ""},
		{git.OpCreate, map[string]string{"name": "other/y"}, teamDev, sdk.CodeForbidden, "other/y is not among the repositories granted to team-dev"},
		{git.OpCreate, map[string]string{"name": "../x"}, alice, sdk.CodeInvalidInput, "repository name"},
		{git.OpRefs, map[string]string{"name": "team/app"}, nil, sdk.CodeForbidden, "git:read required to read team/app"},
		{git.OpRefs, map[string]string{"name": "team/none"}, reader, sdk.CodeNotFound, "repository not found: team/none"},
		{git.OpDelete, map[string]string{"name": "team/app"}, alice, sdk.CodeForbidden, "push rules protect team/app"},
		{git.OpDelete, map[string]string{"name": "team/ops"}, reader, sdk.CodeForbidden, ""},
		{git.OpDelete, map[string]string{"name": "other/x"}, teamDev, sdk.CodeForbidden, "other/x is not among the repositories granted"},
		{git.OpDelete, map[string]string{"name": "team/none"}, writer, sdk.CodeNotFound, ""},
	} {
		_, err := call(tc.op, tc.in, tc.id)
		if err == nil || err.Code != tc.code || !strings.Contains(err.Message, tc.msg) {
			t.Errorf("%s %v as %v: %v; want %s %q", tc.op, tc.in, tc.id, err, tc.code, tc.msg)
		}
	}

	list := func(id *sdk.Identity) string {
		out, err := call(git.OpList, nil, id)
		if err != nil {
			t.Fatalf("git/list: %v", err)
		}
		var infos []git.RepoInfo
		if err := json.Unmarshal(out, &infos); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, i := range infos {
			names = append(names, fmt.Sprintf("%s:%v", i.Name, i.Public))
		}
		return strings.Join(names, " ")
	}
	for id, want := range map[*sdk.Identity]string{
		nil:      "pub/site:true",
		reader:   "other/x:false pub/site:true team/app:false team/ops:false",
		teamDev:  "pub/site:true team/app:false team/ops:false",
		operator: "other/x:false pub/site:true team/app:false team/ops:false",
	} {
		if got := list(id); got != want {
			t.Errorf("git/list as %v: %s; want %s", id, got, want)
		}
	}

	w := n.work()
	head := strings.TrimSpace(n.mustGit(w, "rev-parse", "HEAD"))
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/pub/site.git"), "main", "main:dev")
	out, err := call(git.OpRefs, map[string]string{"name": "pub/site"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var refs []git.Ref
	_ = json.Unmarshal(out, &refs)
	want := []git.Ref{{Name: "HEAD", Hash: head, Target: "refs/heads/main"}, {Name: "refs/heads/dev", Hash: head}, {Name: "refs/heads/main", Hash: head}}
	if fmt.Sprint(refs) != fmt.Sprint(want) {
		t.Fatalf("git/refs: %v; want %v", refs, want)
	}

	if _, err := call(git.OpDelete, map[string]string{"name": "team/ops"}, writer); err != nil {
		t.Fatalf("delete team/ops: %v", err)
	}
	if _, err := call(git.OpDelete, map[string]string{"name": "team/app"}, operator); err != nil {
		t.Fatalf("admin deletes team/app: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.root, "team")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the emptied directory team stays: %v", err)
	}
	if got := list(reader); got != "other/x:false pub/site:true" {
		t.Fatalf("after deleting: %s", got)
	}
}

func TestFirstPushSetsHead(t *testing.T) {
	n := newNode(t, nil)
	w := n.work()
	n.mustGit(w, "branch", "-m", "main", "master")
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/team/old.git"), "master")
	c := filepath.Join(t.TempDir(), "c")
	n.mustGit("", "clone", "-q", n.url(reader, "ssh", "/team/old.git"), c)
	if branch := strings.TrimSpace(n.mustGit(c, "symbolic-ref", "--short", "HEAD")); branch != "master" {
		t.Fatalf("clone checked out %q; want master", branch)
	}
}

func TestHooksInstalledAtStart(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	root := t.TempDir()
	// A repository made before the plugin ran (say, copied in).
	if out, err := exec.Command("git", "init", "-q", "--bare", filepath.Join(root, "old", "repo.git")).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v %s", err, out)
	}
	n := newNode(t, map[string]any{"root": root, "repos": []map[string]any{{"name": "old/repo", "deny_delete": true}, {"name": "late/repo", "deny_delete": true}}})
	hook := filepath.Join(root, "old", "repo.git", "hooks", "pre-receive")
	b, err := os.ReadFile(hook)
	if err != nil {
		t.Fatalf("no hook installed at start: %v", err)
	}
	wantContains(t, "hook", string(b), "#!/bin/sh\n", "exec '"+n.bin+"' pre-receive '"+filepath.Join(root, "push-rules.json")+"' 'old/repo'")
	if st, err := os.Stat(filepath.Join(root, "push-rules.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("rules file: %v %v", st, err)
	}
	w := n.work()
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/old/repo.git"), "main", "main:x")
	wantContains(t, "deleting under deny_delete", n.mustFail(w, "push", n.url(alice, "ssh", "/old/repo.git"), ":x"), "deny_delete")

	// A repository copied in after the start, with its own idea of where
	// hooks live, gets the plugin's hook at its first push.
	late := filepath.Join(root, "late", "repo.git")
	if out, err := exec.Command("git", "init", "-q", "--bare", late).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v %s", err, out)
	}
	if out, err := exec.Command("git", "--git-dir", late, "config", "core.hooksPath", "/nonexistent").CombinedOutput(); err != nil {
		t.Fatalf("git config: %v %s", err, out)
	}
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/late/repo.git"), "main", "main:x")
	wantContains(t, "deleting in a repository copied in late", n.mustFail(w, "push", n.url(alice, "ssh", "/late/repo.git"), ":x"), "deny_delete")

	// A reload that drops the rule applies to the next push, without
	// rewriting the hook.
	st1, _ := os.Stat(hook)
	if err := n.h.Reconfigure(map[string]any{"root": root}); err != nil {
		t.Fatal(err)
	}
	n.mustGit(w, "push", "-q", n.url(alice, "ssh", "/old/repo.git"), ":x")
	if st2, _ := os.Stat(hook); !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("the hook was rewritten by a reload that changed no path")
	}
}

func TestSettings(t *testing.T) {
	p := &git.Plugin{}
	for _, tc := range []struct{ in, want string }{
		{`{"bogus": 1}`, `unknown field "bogus"`},
		{`{"root": "relative"}`, `root "relative" must be an absolute path`},
		{`{"max_push_size": "0"}`, "max_push_size must be more than 0"},
		{`{"max_push_size": "lots"}`, `size "lots"`},
		{`{"request_timeout": "soon"}`, `request_timeout: "soon" is not a positive duration`},
		{`{"max_concurrent": -1}`, "max_concurrent must be 1 or more"},
		{`{"repos": [{"name": "a"}, {"name": "/a.git"}]}`, `repos lists "a" twice`},
		{`{"repos": [{"name": "../a"}]}`, "repos[0]: repository name"},
		{`{"repos": [{"name": "a", "protected": ["["]}]}`, `protected pattern "["`},
		{`{"repos": [{"name": "a", "protected": ["refs/heads/main"]}]}`, "without refs/heads/"},
		{`{"repos": [{"name": "a", "public": true, "colour": "red"}]}`, `unknown field "colour"`},
	} {
		if err := p.ValidateSettings(json.RawMessage(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.in, err, tc.want)
		}
	}
	if err := p.ValidateSettings(json.RawMessage(`{"root": "/srv/git", "max_push_size": "2GiB", "request_timeout": "1h", "max_concurrent": 32, "max_per_identity": 8,
		"repos": [{"name": "team/app", "public": true, "fast_forward_only": true, "protected": ["main", "release/*"], "deny_tag_overwrite": true, "deny_delete": true}]}`)); err != nil {
		t.Fatalf("good settings: %v", err)
	}
	t.Setenv("PATH", t.TempDir())
	if err := p.ValidateSettings(nil); err == nil || err.Error() != "git not found in PATH: install it (Debian: apt-get install git)" {
		t.Fatalf("without git: %v", err)
	}
	if _, err := sdktest.New(&git.Plugin{HookExecutable: "/bin/false"}, sdktest.Options{Settings: map[string]any{"root": t.TempDir()}}); err == nil ||
		!strings.Contains(err.Error(), "git not found in PATH") {
		t.Fatalf("start without git: %v", err)
	}
}
