// Package integration builds the real binaries and drives them the way a
// user does: real processes, real files, real network on loopback.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// binDir holds the binaries built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "alknet-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "../cmd/...", "../plugins/...")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// transcript collects everything the CLI printed, for secret scans.
type transcript struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (tr *transcript) add(s string) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.buf.WriteString(s)
	tr.buf.WriteByte('\n')
}

func (tr *transcript) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.String()
}

// result is one finished command.
type result struct {
	stdout, stderr string
	code           int
}

// cli runs alknet commands against one data directory.
type cli struct {
	t       *testing.T
	dataDir string
	tr      *transcript
}

func newCLI(t *testing.T, tr *transcript) *cli {
	return &cli{t: t, dataDir: filepath.Join(t.TempDir(), "node"), tr: tr}
}

// run executes alknet with --data-dir prepended, stdin as given, and an
// environment without HOME/XDG surprises.
func (c *cli) run(stdin string, args ...string) result {
	c.t.Helper()
	full := append([]string{"--data-dir", c.dataDir}, args...)
	cmd := exec.Command(filepath.Join(binDir, "alknet"), full...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+c.t.TempDir())
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run alknet %v: %v", args, err)
	}
	c.tr.add(out.String())
	c.tr.add(errb.String())
	return result{out.String(), errb.String(), code}
}

// ok runs a command that must succeed and returns its stdout.
func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	r := c.run(stdin, args...)
	if r.code != 0 {
		c.t.Fatalf("alknet %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// fail runs a command that must fail with exit 1 and one error line.
func (c *cli) fail(stdin string, args ...string) string {
	c.t.Helper()
	r := c.run(stdin, args...)
	if r.code != 1 {
		c.t.Fatalf("alknet %v: exit %d, want 1\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "alknet: ") {
		c.t.Fatalf("alknet %v: last stderr line is not an error line: %q", args, last)
	}
	return last
}

// writeFile writes a file with the given mode (tests of mode checks).
func writeFile(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}
