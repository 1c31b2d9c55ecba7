package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// readmeFiles extracts the files plugins/sdk/README.md shows: each fenced
// block whose preceding line starts with `name`.
func readmeFiles(t *testing.T, readme string) map[string]string {
	t.Helper()
	f, err := os.Open(readme)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string]string{}
	named := regexp.MustCompile("^`([A-Za-z0-9_.]+)`")
	var prev, current string // prev: the first line of the last paragraph
	var block []string
	in, blank := false, true
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && strings.HasPrefix(line, "```"):
			in, block = true, nil
			if m := named.FindStringSubmatch(prev); m != nil {
				current = m[1]
			} else {
				current = ""
			}
		case in && line == "```":
			in = false
			if current != "" {
				files[current] = strings.Join(block, "\n") + "\n"
			}
		case in:
			block = append(block, line)
		case strings.TrimSpace(line) == "":
			blank = true
		default:
			if blank {
				prev = line
			}
			blank = false
		}
	}
	return files
}

// A plugin written, tested and built in a module of its own, outside the
// repository, exactly as plugins/sdk/README.md says, is installed and
// reached through `alknet pipe` and `alknet call`.
func TestOutOfTreePluginFromTheSDKReadme(t *testing.T) {
	root := repoRoot(t)
	files := readmeFiles(t, filepath.Join(root, "plugins", "sdk", "README.md"))
	for _, f := range []string{"go.mod", "main.go", "hello_test.go"} {
		if files[f] == "" {
			t.Fatalf("plugins/sdk/README.md shows no %s", f)
		}
	}
	mod := t.TempDir() // outside the repository's tree
	files["go.mod"] = strings.Replace(files["go.mod"], "=> ../alknet", "=> "+root, 1)
	for name, content := range files {
		writeFile(t, filepath.Join(mod, name), content, 0o644)
	}
	// Start from the repository's checksums so no download is needed for
	// what the repository already uses.
	sums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(mod, "go.sum"), string(sums), 0o644)
	gocmd := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	gocmd("mod", "tidy")
	gocmd("test", "./...")
	gocmd("build", "-o", "alknet-plugin-hello", ".")

	node := newCLI(t, nil)
	node.ok("", "init", "--show-mnemonic-once")
	if out := node.ok("", "plugin", "install", filepath.Join(mod, "alknet-plugin-hello")); !strings.Contains(out, "installed hello 1.0.0") {
		t.Fatalf("install: %s", out)
	}
	srv := startServe(t, node)
	client := newCLI(t, nil)
	out, errs, code := runPipe(t, client, nil, "--alpn", "alknet/hello", "--peer", srv.FP, srv.Addr)
	if code != 0 || !strings.HasPrefix(string(out), "hello 127.0.0.1:") {
		t.Fatalf("alknet pipe to alknet/hello: exit %d %q %s", code, out, errs)
	}
	if got := strings.TrimSpace(client.ok("", "call", "--peer", srv.FP, srv.Addr, "/hello/greet", `"you"`)); got != `"hello you"` {
		t.Fatalf("alknet call /hello/greet: %s", got)
	}
	r := client.run("", "call", "--peer", srv.FP, srv.Addr, "/hello/greet", `""`)
	if r.code != 1 || !strings.Contains(r.stderr, "INVALID_INPUT") || !strings.Contains(r.stderr, "say who to greet") {
		t.Fatalf("an empty name: exit %d %s", r.code, r.stderr)
	}
}
