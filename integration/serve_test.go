package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// server is a running `alknet serve` process.
type server struct {
	t       *testing.T
	cmd     *exec.Cmd
	cli     *cli
	logs    *transcript
	FP      string
	Addr    string // 127.0.0.1:port (UDP and TCP)
	exited  chan struct{}
	exitErr error
	// configHome is the node's XDG_CONFIG_HOME: its default config file
	// is configHome/alknet/alknet.toml.
	configHome string
}

var dialLine = regexp.MustCompile(`alknet node (\S+)@(\S+)`)

// startServe runs `alknet serve` for c's data dir on 127.0.0.1:0 and waits
// for its dial string.
func startServe(t *testing.T, c *cli, args ...string) *server {
	t.Helper()
	full := append([]string{"--data-dir", c.dataDir, "serve", "--listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(filepath.Join(binDir, "alknet"), full...)
	configHome := t.TempDir()
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+configHome)
	s := &server{t: t, cmd: cmd, cli: c, logs: &transcript{}, exited: make(chan struct{}), configHome: configHome}
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.logs.add(sc.Text())
			if m := dialLine.FindStringSubmatch(sc.Text()); m != nil {
				s.FP, s.Addr = m[1], m[2]
				once.Do(func() { close(ready) })
			}
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.logs.add(sc.Text())
			if c.tr != nil {
				c.tr.add(sc.Text())
			}
		}
	}()
	go func() {
		wg.Wait()
		s.exitErr = cmd.Wait()
		close(s.exited)
	}()
	select {
	case <-ready:
	case <-s.exited:
		t.Fatalf("alknet serve exited: %v\n%s", s.exitErr, s.logs)
	case <-time.After(20 * time.Second):
		t.Fatalf("alknet serve printed no dial string:\n%s", s.logs)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.exited
	})
	return s
}

// stop sends sig and waits for the exit; it returns the exit code.
func (s *server) stop(sig syscall.Signal) int {
	s.t.Helper()
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.t.Fatalf("alknet serve did not exit after %v\n%s", sig, s.logs)
	}
	if ee, ok := s.exitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 0
}

// waitLog waits until the server's logs contain every substring.
func (s *server) waitLog(subs ...string) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		all := s.logs.String()
		missing := ""
		for _, sub := range subs {
			if !strings.Contains(all, sub) {
				missing = sub
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("server logs lack %q:\n%s", missing, all)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pipeCmd prepares `alknet pipe` from client c.
func pipeCmd(t *testing.T, c *cli, args ...string) *exec.Cmd {
	full := append([]string{"--data-dir", c.dataDir, "pipe"}, args...)
	cmd := exec.Command(filepath.Join(binDir, "alknet"), full...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	return cmd
}

// runPipe sends stdin through `alknet pipe` and returns stdout, stderr, code.
func runPipe(t *testing.T, c *cli, stdin []byte, args ...string) ([]byte, string, int) {
	t.Helper()
	cmd := pipeCmd(t, c, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if c.tr != nil {
		c.tr.add(errb.String())
	}
	return out.Bytes(), errb.String(), code
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeAndPipeEcho16MiB(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	if !fingerprintRe.MatchString(srv.FP) {
		t.Fatalf("dial string fingerprint %q", srv.FP)
	}
	// Embedded default: the data dir and vault were created on first run.
	if id := strings.TrimSpace(node.ok("", "id")); id != srv.FP {
		t.Fatalf("alknet id %s, serve printed %s", id, srv.FP)
	}
	payload := random(t, 16<<20)
	client := newCLI(t, nil)
	for _, transport := range [][]string{nil, {"--tcp"}} {
		args := append([]string{"--alpn", "alknet/echo", "--peer", srv.FP}, transport...)
		out, stderr, code := runPipe(t, client, payload, append(args, srv.Addr)...)
		if code != 0 || !bytes.Equal(out, payload) {
			t.Fatalf("pipe %v: exit %d, %d bytes back of %d\n%s", transport, code, len(out), len(payload), stderr)
		}
	}
	srv.waitLog("transport=quic alpn=alknet/echo", "transport=tcp-tls alpn=alknet/echo", "connection closed: remote_addr=127.0.0.1:")
	if code := srv.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
}

func TestUnknownALPNRejectedOthersUnaffected(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	client := newCLI(t, nil)
	// A long-lived echo stream runs across the failed handshake.
	long := pipeCmd(t, client, "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr)
	in, _ := long.StdinPipe()
	outp, _ := long.StdoutPipe()
	if err := long.Start(); err != nil {
		t.Fatal(err)
	}
	_, _ = in.Write([]byte("before "))
	buf := make([]byte, 7)
	if _, err := io.ReadFull(outp, buf); err != nil {
		t.Fatal(err)
	}
	for _, transport := range [][]string{nil, {"--tcp"}} {
		args := append([]string{"--alpn", "alknet/unknown", "--peer", srv.FP}, transport...)
		_, stderr, code := runPipe(t, client, []byte("x"), append(args, srv.Addr)...)
		if code != 1 || !strings.Contains(stderr, "no_application_protocol") {
			t.Fatalf("unknown ALPN %v: exit %d: %s", transport, code, stderr)
		}
	}
	srv.waitLog("connection rejected: remote_addr=127.0.0.1:", "reason=no_application_protocol")
	_, _ = in.Write([]byte("after"))
	_ = in.Close()
	rest, _ := io.ReadAll(outp)
	if string(rest) != "after" {
		t.Fatalf("long stream got %q after the failed handshakes", rest)
	}
	if err := long.Wait(); err != nil {
		t.Fatalf("long pipe: %v", err)
	}
}

func TestPinningAndTrustOnFirstUse(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	client := newCLI(t, nil)
	msg := []byte("pinned")

	if out, stderr, code := runPipe(t, client, msg, "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr); code != 0 || string(out) != "pinned" {
		t.Fatalf("correct pin: %d %s", code, stderr)
	}
	wrong := "ed25519:" + strings.Repeat("ab", 32)
	_, stderr, code := runPipe(t, client, msg, "--alpn", "alknet/echo", "--peer", wrong, srv.Addr)
	if code != 1 || !strings.Contains(stderr, wrong) || !strings.Contains(stderr, srv.FP) {
		t.Fatalf("wrong pin must fail naming both fingerprints: %d %s", code, stderr)
	}
	_, stderr, code = runPipe(t, client, msg, "--alpn", "alknet/echo", srv.Addr)
	if code != 1 || !strings.Contains(stderr, "--peer "+srv.FP) || !strings.Contains(stderr, "--trust-on-first-use") {
		t.Fatalf("no pin must fail closed with the fingerprint: %d %s", code, stderr)
	}
	out, stderr, code := runPipe(t, client, msg, "--alpn", "alknet/echo", "--trust-on-first-use", srv.Addr)
	if code != 0 || string(out) != "pinned" {
		t.Fatalf("trust on first use: %d %s", code, stderr)
	}
	kp, err := os.ReadFile(filepath.Join(client.dataDir, "known_peers"))
	if err != nil || string(kp) != srv.Addr+" "+srv.FP+"\n" {
		t.Fatalf("known_peers %q %v", kp, err)
	}
	// Recorded: no flag needed now.
	if out, stderr, code := runPipe(t, client, msg, "--alpn", "alknet/echo", srv.Addr); code != 0 || string(out) != "pinned" {
		t.Fatalf("known peer: %d %s", code, stderr)
	}
	// Another node takes over the same address: refused, loudly, naming both.
	if c := srv.stop(syscall.SIGTERM); c != 0 {
		t.Fatalf("serve exit %d", c)
	}
	other := newCLI(t, nil)
	srv2 := startServeAt(t, other, srv.Addr)
	_, stderr, code = runPipe(t, client, msg, "--alpn", "alknet/echo", "--trust-on-first-use", srv2.Addr)
	if code != 1 || !strings.Contains(stderr, "HAS CHANGED") || !strings.Contains(stderr, srv.FP) || !strings.Contains(stderr, srv2.FP) {
		t.Fatalf("identity change must be refused naming both: %d %s", code, stderr)
	}
	if kp2, _ := os.ReadFile(filepath.Join(client.dataDir, "known_peers")); !bytes.Equal(kp, kp2) {
		t.Fatal("known_peers changed after a refused identity change")
	}
}

// startServeAt is startServe on a fixed address (to reuse a port).
func startServeAt(t *testing.T, c *cli, addr string, args ...string) *server {
	t.Helper()
	var s *server
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok := func() (ok bool) {
			defer func() {
				if recover() != nil {
					ok = false
				}
			}()
			s = startServe(t, c, append([]string{"--listen", addr}, args...)...)
			return true
		}()
		if ok || time.Now().After(deadline) {
			return s
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestShutdownDrainsAndClosesStuckStreams(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node, "--drain-timeout", "2s")
	client := newCLI(t, nil)

	open := func() (*exec.Cmd, io.WriteCloser, io.Reader, *bytes.Buffer) {
		cmd := pipeCmd(t, client, "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr)
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		_, _ = in.Write([]byte("hello "))
		if _, err := io.ReadFull(out, make([]byte, 6)); err != nil {
			t.Fatal(err)
		}
		return cmd, in, out, &errb
	}
	active, activeIn, activeOut, _ := open()
	stuck, _, stuckOut, stuckErr := open()

	start := time.Now()
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	srv.waitLog("shutting down")
	// The active stream finishes its work within the drain timeout.
	_, _ = activeIn.Write([]byte("world"))
	_ = activeIn.Close()
	rest, _ := io.ReadAll(activeOut)
	if string(rest) != "world" {
		t.Fatalf("active stream during drain: %q", rest)
	}
	if err := active.Wait(); err != nil {
		t.Fatalf("active pipe: %v", err)
	}
	// The stuck one is closed with "shutdown" after the drain timeout.
	_, _ = io.ReadAll(stuckOut)
	err := stuck.Wait()
	if err == nil || !strings.Contains(stuckErr.String(), "shutdown") {
		t.Fatalf("stuck pipe: %v: %s", err, stuckErr.String())
	}
	if code := srv.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exit %d after drain", code)
	}
	if d := time.Since(start); d < 1500*time.Millisecond || d > 8*time.Second {
		t.Fatalf("shutdown with a stuck stream took %v (drain_timeout 2s)", d)
	}
	srv.waitLog("drain timeout: closed remaining connections: count=1", "stopped")
}

func TestReloadAddsAndRemovesPeerAccess(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	client := newCLI(t, nil)
	client.ok("", "init", "--show-mnemonic-once")
	clientFP := strings.TrimSpace(client.ok("", "id"))
	pipeOnce := func() {
		if out, stderr, code := runPipe(t, client, []byte("x"), "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr); code != 0 || string(out) != "x" {
			t.Fatalf("pipe: %d %s", code, stderr)
		}
	}
	pipeOnce()
	srv.waitLog("method=tls id=" + clientFP + " result=anonymous")

	r := node.run("", "peers", "add", "laptop", "--fingerprint", clientFP, "--scope", "admin")
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("asked the running node (pid %d) to reload: applied", srv.cmd.Process.Pid)) {
		t.Fatalf("peers add: %+v", r)
	}
	pipeOnce()
	srv.waitLog("method=tls id=laptop result=accept")
	if list := node.ok("", "peers", "list"); !strings.Contains(list, "laptop") || !strings.Contains(list, clientFP) {
		t.Fatalf("peers list:\n%s", list)
	}

	// In force when the command returns: the next connection is refused.
	node.ok("", "peers", "disable", "laptop")
	pipeOnce()
	srv.waitLog("method=tls id=" + clientFP + " result=reject")
	if msg := node.fail("", "peers", "add", "laptop", "--fingerprint", clientFP); !strings.Contains(msg, "already exists") {
		t.Fatalf("duplicate peer: %s", msg)
	}
}

func TestReloadRejectsBadConfigKeepsOld(t *testing.T) {
	node := newCLI(t, nil)
	cfgPath := filepath.Join(t.TempDir(), "alknet.toml")
	writeFile(t, cfgPath, "[limits]\nmax_connections_per_ip = 10\n", 0o600)
	srv := startServe(t, node, "--config", cfgPath)
	client := newCLI(t, nil)
	writeFile(t, cfgPath, "[limits]\nmax_conections_per_ip = 1\n", 0o600)
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog("reload rejected; keeping the running configuration", "limits.max_conections_per_ip")
	// A command that signals the node reports the rejection, not success.
	r := node.run("", "apikey", "create", "--scope", "call:invoke")
	if want := fmt.Sprintf("asked the running node (pid %d) to reload: rejected, the running configuration stays: ", srv.cmd.Process.Pid); r.code != 0 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "limits.max_conections_per_ip") {
		t.Fatalf("apikey create while the config file is bad: exit %d, stderr %q; want %q and the key", r.code, r.stderr, want)
	}
	if out, stderr, code := runPipe(t, client, []byte("still"), "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr); code != 0 || string(out) != "still" {
		t.Fatalf("after rejected reload: %d %s", code, stderr)
	}
	r = node.run("", "config", "check", cfgPath)
	if r.code != 1 || !strings.Contains(r.stderr, "limits.max_conections_per_ip") {
		t.Fatalf("config check bad file: %+v", r)
	}
	writeFile(t, cfgPath, "[limits]\nmax_connections_per_ip = 1\n", 0o600)
	if out := node.ok("", "config", "check", cfgPath); !strings.Contains(out, "ok") {
		t.Fatalf("config check good file: %s", out)
	}
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog("configuration reloaded")
	// max_connections_per_ip = 1 now applies: a second concurrent connection is refused.
	hold := pipeCmd(t, client, "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr)
	in, _ := hold.StdinPipe()
	out, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	_, _ = in.Write([]byte("a"))
	_, _ = io.ReadFull(out, make([]byte, 1))
	_, stderr, code := runPipe(t, client, []byte("b"), "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr)
	if code == 0 || !strings.Contains(stderr, "too many connections") {
		t.Fatalf("second connection with limit 1: %d %s", code, stderr)
	}
	srv.waitLog("max_connections_per_ip = 1")
	_ = in.Close()
	_ = hold.Wait()
}

// TestLogsNeverHoldSecrets runs a node with an API key, a peer token and a
// vault, drives it, and scans every log and CLI message for them.
func TestLogsNeverHoldSecrets(t *testing.T) {
	tr := &transcript{}
	node := newCLI(t, tr)
	initOut := node.ok("", "init", "--show-mnemonic-once")
	mnemonic := printedMnemonic(initOut)
	token := strings.TrimSpace(node.ok("", "apikey", "create", "--scope", "call:invoke", "--expires", "30d"))
	if !strings.HasPrefix(token, "alk_") || len(token) < 30 {
		t.Fatalf("api key token %q", token)
	}
	peerToken := "peer-token-" + strings.Repeat("9", 24)
	tokFile := writeFile(t, filepath.Join(t.TempDir(), "tok"), peerToken+"\n", 0o600)
	weak := writeFile(t, filepath.Join(t.TempDir(), "weak"), "abc\n", 0o600)
	if msg := node.fail("", "peers", "add", "weak", "--fingerprint", "ed25519:"+strings.Repeat("ef", 32), "--token-file", weak, "--scope", "admin"); !strings.Contains(msg, "bits of entropy; at least 128") {
		t.Fatalf("a 3-character admin token: %s", msg)
	}
	node.ok("", "peers", "add", "ci", "--fingerprint", "ed25519:"+strings.Repeat("cd", 32), "--token-file", tokFile, "--scope", "git:write")
	list := node.ok("", "apikey", "list")
	if !strings.Contains(list, token[:8]) || strings.Contains(list, token) {
		t.Fatalf("apikey list:\n%s", list)
	}
	srv := startServe(t, node, "--log-level", "trace")
	client := newCLI(t, tr)
	client.ok("", "init", "--show-mnemonic-once")
	runPipe(t, client, []byte("x"), "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr)
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog("configuration reloaded")
	node.ok("", "apikey", "revoke", token[:8])
	srv.stop(syscall.SIGTERM)

	all := srv.logs.String() + tr.String()
	all = strings.Replace(all, initOut, "", 1) // the one explicit mnemonic display
	all = strings.Replace(all, token+"\n", "", 1)
	for _, secret := range []string{token, token[8:], peerToken, mnemonic} {
		if strings.Contains(all, secret) {
			t.Errorf("secret %q… appears in logs or CLI output", secret[:6])
		}
	}
	words := strings.Fields(mnemonic)
	for i := 0; i+1 < len(words); i++ {
		if strings.Contains(all, words[i]+" "+words[i+1]) {
			t.Errorf("mnemonic words %q in logs", words[i]+" "+words[i+1])
		}
	}
	if !strings.Contains(all, "prefix="+token[:8]) {
		t.Errorf("the 8-character prefix is not logged:\n%s", all)
	}
	authJSON, _ := os.ReadFile(filepath.Join(node.dataDir, "auth.json"))
	if strings.Contains(string(authJSON), peerToken) || strings.Contains(string(authJSON), token) {
		t.Fatal("auth.json holds a token")
	}
	_ = context.Background
}

// A node started without a config file at the default path takes one
// created later on the next reload (and one removed again: the defaults
// come back), as a user who starts with the defaults expects.
func TestReloadReadsAConfigFileCreatedAfterStart(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	client := newCLI(t, nil)
	echo := func() (string, int) {
		out, stderr, code := runPipe(t, client, []byte("hi"), "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr)
		return string(out) + stderr, code
	}
	if out, code := echo(); code != 0 {
		t.Fatalf("echo before: %d %s", code, out)
	}
	cfg := filepath.Join(srv.configHome, "alknet", "alknet.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, "[plugins.echo]\ndisabled = true\n", 0o600)
	if r := node.run("", "reload"); r.code != 0 || !strings.Contains(r.stderr, "reload: applied") {
		t.Fatalf("alknet reload after creating %s: exit %d\n%s", cfg, r.code, r.stderr)
	}
	if out, code := echo(); code == 0 || !strings.Contains(out, "no_application_protocol") && !strings.Contains(out, "no application protocol") {
		t.Fatalf("echo after disabling it in a new config file: %d %s", code, out)
	}
	srv.waitLog("configuration reloaded", "file="+cfg)
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	if r := node.run("", "reload"); r.code != 0 || !strings.Contains(r.stderr, "reload: applied") {
		t.Fatalf("alknet reload after removing %s: exit %d\n%s", cfg, r.code, r.stderr)
	}
	if out, code := echo(); code != 0 {
		t.Fatalf("echo after removing the config file: %d %s", code, out)
	}
}
