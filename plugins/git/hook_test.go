package git

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"

	"alknet.dev/alknet/plugins/sdk"
)

func TestRunHookInput(t *testing.T) {
	dir := t.TempDir()
	rules := filepath.Join(dir, "push-rules.json")
	cfg, err := parseSettings([]byte(`{"repos": [{"name": "team/app", "deny_delete": true}, {"name": "pub/site", "public": true}]}`), dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeRules(rules, cfg); err != nil {
		t.Fatal(err)
	}
	zero := strings.Repeat("0", 40)
	a := strings.Repeat("a", 40)
	for _, tc := range []struct {
		name   string
		args   []string
		stdin  string
		status int
		stderr string
	}{
		{"no rules for the repository", []string{rules, "pub/site"}, a + " " + zero + " refs/heads/x\n", 0, ""},
		{"a deletion under deny_delete", []string{rules, "team/app"}, a + " " + zero + " refs/heads/x\n", 1, "alknet: refs/heads/x refused: deleting branches and tags is not allowed here (deny_delete)"},
		{"a new branch", []string{rules, "team/app"}, zero + " " + a + " refs/heads/x\n\n", 0, ""},
		{"a bad line", []string{rules, "team/app"}, "x y\n", 1, `bad ref update line "x y"`},
		{"a missing rules file", []string{filepath.Join(dir, "none.json"), "team/app"}, "", 1, "cannot read the push rules"},
		{"no arguments", nil, "", 1, "usage"},
	} {
		var errb bytes.Buffer
		if got := runHook(tc.args, strings.NewReader(tc.stdin), &errb); got != tc.status || !strings.Contains(errb.String(), tc.stderr) {
			t.Errorf("%s: status %d, stderr %q; want %d and %q", tc.name, got, errb.String(), tc.status, tc.stderr)
		}
	}
	// A rules file of another format is refused, not misread.
	if err := os.WriteFile(rules, []byte(`{"format": 2, "repos": {}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	if got := runHook([]string{rules, "pub/site"}, strings.NewReader(""), &errb); got != 1 || !strings.Contains(errb.String(), "format 2") {
		t.Errorf("another format: %d %q", got, errb.String())
	}
}

// gitRepo makes a repository with git: main at c1 → c2, and side at c3
// (a child of c1); it returns the directory and the three commits.
func gitRepo(t *testing.T) (string, [3]plumbing.Hash) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	dir := t.TempDir()
	run := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=a", "GIT_AUTHOR_EMAIL=a@example.org",
			"GIT_COMMITTER_NAME=c", "GIT_COMMITTER_EMAIL=c@example.org"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("init", "-q", "-b", "main")
	run("commit", "-q", "--allow-empty", "-m", "1")
	c1 := run("rev-parse", "HEAD")
	run("commit", "-q", "--allow-empty", "-m", "2")
	c2 := run("rev-parse", "HEAD")
	run("checkout", "-q", "-b", "side", c1)
	run("commit", "-q", "--allow-empty", "-m", "3")
	c3 := run("rev-parse", "HEAD")
	return filepath.Join(dir, ".git"), [3]plumbing.Hash{plumbing.NewHash(c1), plumbing.NewHash(c2), plumbing.NewHash(c3)}
}

func TestCheckRules(t *testing.T) {
	dir, c := gitRepo(t)
	objects, err := hookObjects(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	var zero plumbing.Hash
	tree := plumbing.NewHash(strings.Repeat("1", 40)) // not in the repository
	rules := &RepoSettings{Protected: []string{"main", "release/*"}, DenyTagOverwrite: true}
	ffOnly := &RepoSettings{FastForwardOnly: true}
	for _, tc := range []struct {
		name  string
		rules *RepoSettings
		u     refUpdate
		want  string
	}{
		{"fast-forward of a protected branch", rules, refUpdate{c[0], c[1], "refs/heads/main"}, ""},
		{"force push to a protected branch", rules, refUpdate{c[1], c[2], "refs/heads/main"}, "no force push"},
		{"force push matching a pattern", rules, refUpdate{c[1], c[2], "refs/heads/release/2.0"}, `protected = "release/*"`},
		{"a pattern is one level", rules, refUpdate{c[1], c[2], "refs/heads/release/2/x"}, ""},
		{"force push to another branch", rules, refUpdate{c[1], c[2], "refs/heads/topic"}, ""},
		{"deleting a protected branch", rules, refUpdate{c[1], zero, "refs/heads/main"}, "cannot be deleted"},
		{"deleting another branch", rules, refUpdate{c[1], zero, "refs/heads/topic"}, ""},
		{"moving a tag", rules, refUpdate{c[0], c[1], "refs/tags/v1"}, "deny_tag_overwrite"},
		{"a new tag", rules, refUpdate{zero, c[1], "refs/tags/v2"}, ""},
		{"deleting a tag", rules, refUpdate{c[0], zero, "refs/tags/v1"}, ""},
		{"not a commit", rules, refUpdate{c[0], tree, "refs/heads/main"}, "cannot check that the update is a fast-forward"},
		{"fast-forward only", ffOnly, refUpdate{c[1], c[2], "refs/heads/any"}, "fast_forward_only"},
		{"fast-forward only, a fast-forward", ffOnly, refUpdate{c[0], c[2], "refs/heads/any"}, ""},
		{"fast-forward only, other refs", ffOnly, refUpdate{c[1], c[2], "refs/notes/x"}, ""},
		{"deny_delete", &RepoSettings{DenyDelete: true}, refUpdate{c[1], zero, "refs/tags/v1"}, "deny_delete"},
	} {
		if got := check(tc.rules, objects, tc.u); (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
	}
}

func TestHookScript(t *testing.T) {
	s := string(hookScript("/srv/it's/alknet-plugin-git", "/srv/rules.json", "team/app"))
	want := `exec '/srv/it'\''s/alknet-plugin-git' pre-receive '/srv/rules.json' 'team/app'` + "\n"
	if !strings.HasPrefix(s, "#!/bin/sh\n") || !strings.HasSuffix(s, want) {
		t.Fatalf("script:\n%s", s)
	}
	dir := t.TempDir()
	if err := installHook(dir, []byte(s)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "hooks", "pre-receive")
	st1, err := os.Stat(p)
	if err != nil || st1.Mode().Perm() != 0o700 {
		t.Fatalf("hook: %v %v", st1, err)
	}
	if err := installHook(dir, []byte(s)); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(p); !os.SameFile(st1, st2) {
		t.Fatal("an unchanged hook was written again")
	}
}

func TestCopyIfChanged(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "bin", "alknet-plugin-git")
	if err := copyIfChanged(bytes.NewReader([]byte("one")), dst); err != nil {
		t.Fatal(err)
	}
	st1, err := os.Stat(dst)
	if err != nil || st1.Mode().Perm() != 0o700 {
		t.Fatalf("copy: %v %v", st1, err)
	}
	if err := copyIfChanged(bytes.NewReader([]byte("one")), dst); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(dst)
	if st1.Sys().(*syscall.Stat_t).Ino != st2.Sys().(*syscall.Stat_t).Ino {
		t.Fatal("the same bytes were copied again")
	}
	if err := copyIfChanged(bytes.NewReader([]byte("two")), dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "two" {
		t.Fatalf("after a change: %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestGranted(t *testing.T) {
	cfg, err := parseSettings([]byte(`{"repos": [{"name": "pub/site", "public": true}]}`), "/srv")
	if err != nil {
		t.Fatal(err)
	}
	all := &sdk.Identity{ID: "a", Scopes: []string{ScopeRead, ScopeWrite}}
	some := &sdk.Identity{ID: "b", Scopes: []string{ScopeRead}, Resources: map[string][]string{ResourceRepo: {"team/app.git", "/lib/*", "*"}}}
	none := &sdk.Identity{ID: "c", Scopes: []string{ScopeRead}, Resources: map[string][]string{ResourceRepo: {}}}
	for _, tc := range []struct {
		id   *sdk.Identity
		repo string
		read bool
	}{
		{all, "x/y", true}, {some, "team/app", true}, {some, "team/other", false}, {some, "lib/a", true},
		{some, "lib/a/b", false}, {some, "top", true}, {none, "team/app", false}, {none, "pub/site", true}, {nil, "pub/site", true}, {nil, "x", false},
	} {
		if got := canRead(cfg, tc.id, tc.repo); got != tc.read {
			t.Errorf("%v reads %s: %v", tc.id, tc.repo, got)
		}
	}
	if holds(some, ScopeWrite, "team/app") || !holds(all, ScopeWrite, "team/app") {
		t.Error("write follows the scope")
	}
}
