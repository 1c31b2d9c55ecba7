package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// concurrently runs n alknet commands at once (args(i) for the i-th, its
// stdin from stdin(i)) and returns their results in order.
func concurrently(c *cli, n int, stdin func(int) string, args func(int) []string) []result {
	out := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = c.run(stdin(i), args(i)...)
		}()
	}
	wg.Wait()
	return out
}

func noStdin(int) string { return "" }

// Ten `alknet credential set` at once, each a process with its secret on
// stdin: all ten say "stored" and all ten are stored.
func TestDataDirConcurrentCredentialSet(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "init", "--show-mnemonic-once")
	const n = 10
	rs := concurrently(node, n, func(i int) string { return fmt.Sprintf("secret-%d\n", i) },
		func(i int) []string { return []string{"credential", "set", fmt.Sprintf("name_%d", i)} })
	for i, r := range rs {
		if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("stored credential %q", fmt.Sprintf("name_%d", i))) {
			t.Fatalf("credential set name_%d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
		}
	}
	list := node.ok("", "credential", "list")
	for i := range n {
		if !strings.Contains(list, fmt.Sprintf("name_%d ", i)) {
			t.Errorf("name_%d was reported stored but is not listed:\n%s", i, list)
		}
	}
}

// Ten `alknet peers add` and five `alknet apikey create` at once: every
// one is in auth.json.
func TestDataDirConcurrentPeersAdd(t *testing.T) {
	node := newCLI(t, nil)
	const n, keys = 10, 5
	rs := concurrently(node, n+keys, noStdin, func(i int) []string {
		if i >= n {
			return []string{"apikey", "create", "--scope", "call:invoke"}
		}
		return []string{"peers", "add", fmt.Sprintf("peer-%d", i), "--fingerprint", "ed25519:" + strings.Repeat(fmt.Sprintf("%02x", i), 32), "--scope", "admin"}
	})
	for i, r := range rs {
		if r.code != 0 {
			t.Fatalf("command %d: exit %d\n%s%s", i, r.code, r.stdout, r.stderr)
		}
	}
	var peers []struct {
		PeerID string `json:"peer_id"`
	}
	if err := json.Unmarshal([]byte(node.ok("", "peers", "list", "--json")), &peers); err != nil {
		t.Fatal(err)
	}
	if len(peers) != n {
		t.Fatalf("%d peers listed after %d added: %+v", len(peers), n, peers)
	}
	if got := strings.Count(node.ok("", "apikey", "list"), "call:invoke"); got != keys {
		t.Fatalf("%d API keys listed after %d created", got, keys)
	}
}

// Ten `alknet plugin restart echo` at once: lock.json counts ten restarts.
func TestDataDirConcurrentPluginRestart(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "plugin", "install", filepath.Join(binDir, "alknet-plugin-echo"))
	const n = 10
	for i, r := range concurrently(node, n, noStdin, func(int) []string { return []string{"plugin", "restart", "echo"} }) {
		if r.code != 0 || !strings.Contains(r.stderr, "no running node found; the change applies at its next start") {
			t.Fatalf("plugin restart %d: exit %d\n%s", i, r.code, r.stderr)
		}
	}
	b, err := os.ReadFile(filepath.Join(node.dataDir, "plugins", "lock.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Plugins map[string]struct {
			RestartGeneration int `json:"restart_generation"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatal(err)
	}
	if g := lock.Plugins["echo"].RestartGeneration; g != n {
		t.Fatalf("restart_generation %d after %d restarts", g, n)
	}
}

// A second `alknet serve` on a data directory a node serves is refused,
// naming the serving node's pid; the first node carries on.
func TestDataDirSecondServeRefused(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	pid := srv.cmd.Process.Pid
	second := exec.Command(filepath.Join(binDir, "alknet"), "--data-dir", node.dataDir, "serve", "--listen", "127.0.0.1:0")
	second.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	var out strings.Builder
	second.Stdout, second.Stderr = &out, &out
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- second.Wait() }()
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(out.String(), fmt.Sprintf("in use by the node with pid %d", pid)) || !strings.Contains(out.String(), "--data-dir") {
			t.Fatalf("second serve: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		_ = second.Process.Kill()
		<-exited
		t.Fatalf("a second serve on the same data directory kept running:\n%s", out.String())
	}
	r := node.run("", "peers", "add", "p", "--fingerprint", "ed25519:"+strings.Repeat("ab", 32))
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("asked the running node (pid %d) to reload: applied", pid)) {
		t.Fatalf("peers add with the first node running: %+v", r)
	}
}

// After kill -9 the node's pid stays on disk and may belong to another
// process by now. No command may signal that process; a new node starts.
func TestDataDirKilledNodeNotSignalled(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	_ = srv.cmd.Process.Kill()
	<-srv.exited

	// An unrelated process that got the dead node's pid: its pid is put
	// where a node's pid is recorded (and where older versions kept it).
	other := exec.Command("sleep", "300")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	for _, f := range []string{"alknet.lock", "alknet.pid"} {
		writeFile(t, filepath.Join(node.dataDir, f), fmt.Sprintf("%d\n", other.Process.Pid), 0o600)
	}
	r := node.run("", "peers", "add", "p1", "--fingerprint", "ed25519:"+strings.Repeat("ab", 32))
	if r.code != 0 || !strings.Contains(r.stderr, "no running node found; the change applies at its next start") || strings.Contains(r.stderr, "asked the running node") {
		t.Fatalf("peers add after kill -9: %+v", r)
	}
	r = node.run("", "plugin", "restart", "echo")
	if r.code != 0 || !strings.Contains(r.stderr, "no running node found; the change applies at its next start") {
		t.Fatalf("plugin restart after kill -9: %+v", r)
	}
	// Had either command sent SIGHUP, it would be pending or done before
	// this SIGTERM, and the lower-numbered signal is delivered first.
	_ = other.Process.Signal(syscall.SIGTERM)
	var ee *exec.ExitError
	if err := other.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("the process holding the dead node's pid ended with %v, want SIGTERM: it was signalled", err)
	}

	srv2 := startServe(t, node)
	r = node.run("", "peers", "add", "p2", "--fingerprint", "ed25519:"+strings.Repeat("cd", 32))
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("asked the running node (pid %d) to reload: applied", srv2.cmd.Process.Pid)) {
		t.Fatalf("peers add with the new node: %+v", r)
	}
	// Applied when the command returns: the log line was written before.
	srv2.waitLog("configuration reloaded:", "peers=2")
}

// What writers killed half-way leave — a temporary vault file holding the
// seed in clear, a temporary credential store, an install staging
// directory — is removed when the node starts, and by `vault seal`
// before it seals.
func TestDataDirLeftoversRemovedAtStart(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "init", "--show-mnemonic-once")
	node.ok("key\n", "credential", "set", "k")
	plain, err := os.ReadFile(filepath.Join(node.dataDir, "vault.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vf struct {
		Seed string `json:"seed"`
	}
	if err := json.Unmarshal(plain, &vf); err != nil || len(vf.Seed) < 80 {
		t.Fatalf("plain vault file without a seed: %v", err)
	}
	plant := func() []string {
		stage := filepath.Join(node.dataDir, "plugins", ".staging", ".install.tmp-5577")
		if err := os.MkdirAll(stage, 0o700); err != nil {
			t.Fatal(err)
		}
		return []string{
			writeFile(t, filepath.Join(node.dataDir, ".vault.json.tmp-2207"), string(plain), 0o600),
			writeFile(t, filepath.Join(node.dataDir, ".credentials.json.tmp-91"), "{", 0o600),
			writeFile(t, filepath.Join(node.dataDir, "plugins", ".lock.json.tmp-3"), "{", 0o600),
			writeFile(t, filepath.Join(stage, "candidate"), "binary", 0o700),
			stage,
		}
	}
	gone := func(when string, paths []string) {
		t.Helper()
		for _, p := range paths {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s: %s is still there", when, p)
			}
		}
	}
	planted := plant()
	srv := startServe(t, node)
	srv.waitLog("removed the leftover of an interrupted write: path="+planted[0], "path="+planted[4])
	gone("after alknet serve", planted)
	srv.stop(syscall.SIGTERM)

	planted = plant()
	pass := writeFile(t, filepath.Join(t.TempDir(), "pass"), "correct horse battery staple\n", 0o600)
	node.ok("", "--vault-passphrase-file", pass, "vault", "seal")
	gone("after alknet vault seal", planted)
	if err := filepath.WalkDir(node.dataDir, func(p string, _ fs.DirEntry, err error) error {
		if b, rerr := os.ReadFile(p); rerr == nil && strings.Contains(string(b), vf.Seed) {
			t.Errorf("%s holds the seed in clear after sealing", p)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// killAt starts alknet with args, kills it with SIGKILL after delay (if it
// is still running) and waits for it.
func killAt(t *testing.T, c *cli, delay time.Duration, args ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "alknet"), append([]string{"--data-dir", c.dataDir}, args...)...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	done := make(chan struct{})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(delay):
		_ = cmd.Process.Kill()
		<-done
	}
}

// timed runs a command to completion and returns how long it took.
func timed(c *cli, args ...string) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.ok("", args...)
	return time.Since(start)
}

// tempEntries lists what in the data directory is an interrupted write's
// leftover: temporary files and install staging.
func tempEntries(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), ".tmp-") || filepath.Base(filepath.Dir(p)) == ".staging" {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Commands killed with -9 at random points of `vault seal`, `vault
// unseal`, `vault rotate` and `plugin install` leave the data directory
// usable — the vault opens, the credentials and the plugin store read —
// and, after the next start, without a temporary file.
func TestDataDirKillLoopsLeaveNoTempFiles(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "init", "--show-mnemonic-once")
	fp := strings.TrimSpace(node.ok("", "id"))
	for i := range 3 {
		node.ok(fmt.Sprintf("value-%d\n", i), "credential", "set", fmt.Sprintf("c%d", i))
	}
	pass := writeFile(t, filepath.Join(t.TempDir(), "pass"), "correct horse battery staple\n", 0o600)
	pf := []string{"--vault-passphrase-file", pass}
	echo := filepath.Join(binDir, "alknet-plugin-echo")
	const iterations = 20

	// Each kill lands at a random point of the command's run: its length
	// is measured once, and the kill comes anywhere up to a bit after it.
	loop := func(what string, full time.Duration, before func(), args func(i int) []string) {
		for i := range iterations {
			if before != nil {
				before()
			}
			killAt(t, node, time.Duration(rand.Int64N(int64(full)*5/4+1)), args(i)...)
		}
		// The seed opens and is the node's: derive checks it against the
		// fingerprint in the file's header.
		if pub := strings.TrimSpace(node.ok("", append(pf, "vault", "derive", "m/74'/0'/0'/0'")...)); "ed25519:"+pub != fp {
			t.Fatalf("after killed %s runs: node key ed25519:%s, want %s", what, pub, fp)
		}
	}
	seal := append(pf, "vault", "seal")
	loop("vault seal", timed(node, seal...), nil, func(int) []string { return seal })

	unseal := append(pf, "vault", "unseal")
	loop("vault unseal", timed(node, unseal...), func() {
		if strings.Contains(node.ok("", "vault", "status"), "mode:         plain") {
			node.ok("", seal...)
		}
	}, func(int) []string { return unseal })

	if strings.Contains(node.ok("", "vault", "status"), "mode:         sealed") {
		node.ok("", unseal...)
	}
	rotate := func(i int) []string { return append(pf, "vault", "rotate", "--force", "--to", fmt.Sprint(2+i%4)) }
	loop("vault rotate", timed(node, rotate(1)...), nil, rotate)
	list := node.ok("", "credential", "list")
	for i := range 3 {
		if !strings.Contains(list, fmt.Sprintf("c%d ", i)) {
			t.Fatalf("credential c%d lost by killed rotations:\n%s", i, list)
		}
	}
	install := []string{"plugin", "install", echo}
	loop("plugin install", timed(node, install...), func() {
		if r := node.run("", "plugin", "info", "echo"); r.code == 0 {
			node.ok("", "plugin", "remove", "echo")
		}
	}, func(int) []string { return install })
	node.ok("", "plugin", "list")

	srv := startServe(t, node)
	if code := srv.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exit %d\n%s", code, srv.logs)
	}
	if left := tempEntries(t, node.dataDir); len(left) != 0 {
		t.Fatalf("after the next start the data directory holds %v", left)
	}
}
