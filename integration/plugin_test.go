package integration

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

var (
	variantsOnce sync.Once
	variantsDir  string
	variantsErr  error
)

// echoVariant builds the echo plugin with ldflags (version, name, protocol)
// into a directory of its own; variants: "v020", "echo2", "proto99".
func echoVariant(t *testing.T, which string) string {
	t.Helper()
	variantsOnce.Do(func() {
		variantsDir, variantsErr = os.MkdirTemp("", "alknet-plugin-variants-")
		if variantsErr != nil {
			return
		}
		flags := map[string]string{
			"v020":    "-X alknet.dev/alknet/plugins/echo.Version=0.2.0",
			"echo2":   "-X alknet.dev/alknet/plugins/echo.Name=echo2",
			"proto99": "-X alknet.dev/alknet/plugins/echo.Protocol=99",
		}
		for name, ld := range flags {
			dir := filepath.Join(variantsDir, name)
			_ = os.MkdirAll(dir, 0o700)
			bin := filepath.Join(dir, "alknet-plugin-echo")
			if name == "echo2" {
				bin = filepath.Join(dir, "alknet-plugin-echo2")
			}
			out, err := exec.Command("go", "build", "-ldflags", ld, "-o", bin, "../plugins/echo/cmd/alknet-plugin-echo").CombinedOutput()
			if err != nil {
				variantsErr = fmt.Errorf("build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if variantsErr != nil {
		t.Fatal(variantsErr)
	}
	bin := filepath.Join(variantsDir, which, "alknet-plugin-echo")
	if which == "echo2" {
		bin = filepath.Join(variantsDir, which, "alknet-plugin-echo2")
	}
	return bin
}

type pluginStatus struct {
	Name, Version, State string
	Pid, Restarts        int
}

func nodeInfo(t *testing.T, conn *call.Connection) (alpns []string, plugins map[string]pluginStatus) {
	t.Helper()
	out, err := conn.Call(tctx(t, 10*time.Second), "node/info", nil)
	if err != nil {
		t.Fatalf("node/info: %v", err)
	}
	var r struct {
		ALPNs   []string       `json:"alpns"`
		Plugins []pluginStatus `json:"plugins"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	plugins = map[string]pluginStatus{}
	for _, p := range r.Plugins {
		plugins[p.Name] = p
	}
	return r.ALPNs, plugins
}

func waitPlugin(t *testing.T, conn *call.Connection, name string, ok func(pluginStatus) bool) pluginStatus {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, ps := nodeInfo(t, conn)
		if ok(ps[name]) {
			return ps[name]
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin %s never reached the expected state: %+v", name, ps[name])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func echoRoundTrip(ctx context.Context, srv *server, alpn string, payload []byte) error {
	c, err := dial.Dial(ctx, srv.Addr, dial.Options{ALPN: alpn, Peer: srv.FP})
	if err != nil {
		return err
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStream(ctx)
	if err != nil {
		return err
	}
	go func() { _, _ = s.Write(payload); _ = s.CloseWrite() }()
	got, err := io.ReadAll(s)
	if err != nil {
		return err
	}
	if string(got) != string(payload) {
		return fmt.Errorf("echo returned %d bytes of %d", len(got), len(payload))
	}
	return nil
}

// traffic runs op in a loop in n goroutines until stop is closed, counting
// successes and failures (each failure is logged with what).
type traffic struct {
	oks, errs atomic.Int64
	wg        sync.WaitGroup
}

func (tr *traffic) run(t *testing.T, stop <-chan struct{}, n int, what string, op func(context.Context) error) {
	for range n {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := op(ctx); err != nil {
					tr.errs.Add(1)
					t.Logf("%s: %v", what, err)
				} else {
					tr.oks.Add(1)
				}
				cancel()
			}
		}()
	}
}

func adminToken(t *testing.T, node *cli, scopes ...string) string {
	args := []string{"apikey", "create"}
	for _, s := range scopes {
		args = append(args, "--scope", s)
	}
	return strings.TrimSpace(node.ok("", args...))
}

func tokenConn(t *testing.T, srv *server, token string) *call.Connection {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	cert, _ := identity.RawKeyTLSCertificate(k)
	conn, err := call.New(nil).Connect(tctx(t, 10*time.Second), srv.Addr, call.Credentials{TLS: &cert, Peer: srv.FP, AuthToken: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestPluginEnvironmentHasNoCoreVariables: the core runs with a canary
// secret in its environment; the plugin's environment has no such variable
// and nothing outside the allow-list.
func TestPluginEnvironmentHasNoCoreVariables(t *testing.T) {
	t.Setenv("ALKNET_CANARY_SECRET", "canary-7f3a")
	node := newCLI(t, nil)
	tok := adminToken(t, node, "admin")
	srv := startServe(t, node, "--enable-diag")
	conn := tokenConn(t, srv, tok)
	out, err := conn.Call(tctx(t, 10*time.Second), "diag/invoke", map[string]any{"name": "echo/env"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	_ = json.Unmarshal(out, &names)
	allowed := map[string]bool{"PATH": true, "HOME": true, "TMPDIR": true, "LANG": true, "GOMAXPROCS": true}
	if len(names) == 0 {
		t.Fatal("no environment reported")
	}
	for _, n := range names {
		if n == "ALKNET_CANARY_SECRET" || (!allowed[n] && !strings.HasPrefix(n, "PLUGIN_") && n != "ALKNET_PLUGIN") {
			t.Errorf("plugin environment has %s (all: %v)", n, names)
		}
	}
	// echo/env is internal: not callable from the wire.
	if _, err := conn.Call(tctx(t, 10*time.Second), "echo/env", nil); err == nil || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Fatalf("internal echo/env from the wire: %v", err)
	}
}

// A plugin's Go scheduler runs on as many threads as its CPU quota (1 by
// default), whether or not a cgroup enforces the quota.
func TestPluginGOMAXPROCSFollowsCPUQuota(t *testing.T) {
	for _, c := range []struct {
		config string
		want   int
	}{{"", 1}, {"[plugins.echo.limits]\ncpu = 2.5\n", 3}} {
		node := newCLI(t, nil)
		node.ok("", "init", "--show-mnemonic-once")
		cfg := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), c.config, 0o600)
		srv := startServe(t, node, "--config", cfg)
		var st struct {
			GOMAXPROCS int `json:"gomaxprocs"`
		}
		out, err := operatorConn(t, srv).Call(tctx(t, 10*time.Second), "echo/stats", nil)
		if err != nil || json.Unmarshal(out, &st) != nil || st.GOMAXPROCS != c.want {
			t.Errorf("config %q: echo/stats %s %v; want gomaxprocs %d", c.config, out, err, c.want)
		}
		srv.stop(syscall.SIGTERM)
	}
}

// TestPluginCapabilitiesPerCall: a granted credential reaches echo/caps on
// each call (names only are reported); a call denied by scope never reaches
// the plugin.
func TestPluginCapabilitiesPerCall(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "init", "--show-mnemonic-once")
	node.ok("s3cr3t-for-echo", "credential", "set", "echo-key")
	cfg := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), "[plugins.echo.capabilities]\necho_secret = \"credential:echo-key\"\n", 0o600)
	tok := adminToken(t, node, "echo:caps")
	srv := startServe(t, node, "--config", cfg)
	anon := callConn(t, srv, nil)
	before := echoCalls(t, anon)
	if _, err := anon.Call(tctx(t, 10*time.Second), "echo/caps", nil); err == nil || !strings.Contains(err.Error(), "FORBIDDEN") {
		t.Fatalf("echo/caps without scope: %v", err)
	}
	if after := echoCalls(t, anon); after != before+1 { // +1: the echo/stats call itself
		t.Fatalf("denied call reached the plugin: calls %d → %d", before, after)
	}
	out, err := tokenConn(t, srv, tok).Call(tctx(t, 10*time.Second), "echo/caps", nil)
	if err != nil || !strings.Contains(string(out), `"capabilities":["echo_secret"]`) {
		t.Fatalf("echo/caps with scope: %s %v", out, err)
	}
	if strings.Contains(srv.logs.String(), "s3cr3t-for-echo") {
		t.Fatal("capability value in the logs")
	}
}

func echoCalls(t *testing.T, conn *call.Connection) int {
	out, err := conn.Call(tctx(t, 10*time.Second), "echo/stats", nil)
	if err != nil {
		t.Fatal(err)
	}
	var r struct{ Calls int }
	_ = json.Unmarshal(out, &r)
	return r.Calls
}

// TestPluginKillIsolated: kill -9 of the echo plugin during 20 open streams
// ends those streams with close code 2; alknet/call and a second plugin's
// ALPN see no error meanwhile; echo serves again within a second.
func TestPluginKillIsolated(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "plugin", "install", echoVariant(t, "echo2"))
	srv := startServe(t, node)
	conn := operatorConn(t, srv)
	echo := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" })
	waitPlugin(t, conn, "echo2", func(p pluginStatus) bool { return p.State == "ready" })

	c, err := dial.Dial(tctx(t, 10*time.Second), srv.Addr, dial.Options{ALPN: "alknet/echo", Peer: srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	var streams []endpoint.Stream
	for i := range 20 {
		s, err := c.OpenStream(tctx(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("stream %02d", i)
		_, _ = s.Write([]byte(msg))
		if _, err := io.ReadFull(s, make([]byte, len(msg))); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		streams = append(streams, s)
	}
	// Background traffic that must not notice anything.
	stop := make(chan struct{})
	var bg traffic
	bg.run(t, stop, 1, "alknet/call during the crash", func(ctx context.Context) error {
		_, err := conn.Call(ctx, "node/info", nil)
		return err
	})
	bg.run(t, stop, 1, "alknet/echo2 during the crash", func(ctx context.Context) error {
		return echoRoundTrip(ctx, srv, "alknet/echo2", []byte("other plugin"))
	})
	waitTraffic(t, &bg, 10)
	killed := time.Now()
	if err := syscall.Kill(echo.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i, s := range streams {
		_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := s.Read(make([]byte, 1))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("stream %d not ended by the plugin's death: %v", i, err)
		}
	}
	select {
	case <-c.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection not closed after the plugin died")
	}
	streamsEnded := time.Since(killed)
	var ae *quic.ApplicationError
	if cause := context.Cause(c.Context()); !errors.As(cause, &ae) || ae.ErrorCode != 2 {
		t.Fatalf("connection closed with %v, want application code 2", cause)
	}
	// Back within a second.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := echoRoundTrip(ctx, srv, "alknet/echo", []byte("back"))
		cancel()
		if err == nil {
			break
		}
		if time.Since(killed) > time.Second {
			t.Fatalf("echo not serving 1s after kill -9: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("echo serving again %v after kill -9 (streams ended %v after)", time.Since(killed).Round(time.Millisecond), streamsEnded.Round(time.Millisecond))
	waitTraffic(t, &bg, bg.oks.Load()+10)
	close(stop)
	bg.wg.Wait()
	if bg.errs.Load() != 0 || bg.oks.Load() == 0 {
		t.Fatalf("other services saw %d errors (%d ok) during the crash", bg.errs.Load(), bg.oks.Load())
	}
	if p := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" }); p.Restarts != 1 || p.Pid == echo.Pid {
		t.Fatalf("after restart: %+v", p)
	}
}

// TestPluginCrashLoopFailsThenRestart: six crashes in a minute leave the
// plugin failed, as `alknet plugin list` shows; `alknet plugin restart`
// brings it back.
func TestPluginCrashLoopFailsThenRestart(t *testing.T) {
	node := newCLI(t, nil)
	tok := adminToken(t, node, "admin")
	srv := startServe(t, node, "--enable-diag")
	conn := tokenConn(t, srv, tok)
	for i := 1; i <= 6; i++ {
		waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" })
		_, _ = conn.Call(tctx(t, 10*time.Second), "diag/invoke", map[string]any{"name": "echo/crash"})
		waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State != "ready" || p.Restarts >= i })
	}
	waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "failed" })
	list := node.ok("", "plugin", "list")
	if !strings.Contains(list, "failed") {
		t.Fatalf("plugin list does not show failed:\n%s", list)
	}
	if _, err := conn.Call(tctx(t, 10*time.Second), "echo/say", 1); err == nil || !strings.Contains(err.Error(), "plugin echo unavailable") {
		t.Fatalf("call to a failed plugin: %v", err)
	}
	if _, err := conn.Call(tctx(t, 10*time.Second), "node/info", nil); err != nil {
		t.Fatalf("core while echo failed: %v", err)
	}
	node.ok("", "plugin", "restart", "echo")
	waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" })
	if out, err := conn.Call(tctx(t, 10*time.Second), "echo/say", "again"); err != nil || string(out) != `"again"` {
		t.Fatalf("after restart: %s %v", out, err)
	}
	if list := node.ok("", "plugin", "list"); !strings.Contains(list, "ready") {
		t.Fatalf("plugin list after restart:\n%s", list)
	}
}

// TestTamperedPluginRefused: one byte changed after install → refused at
// launch with both digests; the node serves everything else.
func TestTamperedPluginRefused(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "plugin", "install", echoVariant(t, "echo2"))
	bin := filepath.Join(node.dataDir, "plugins", "echo2", "0.1.0", "alknet-plugin-echo2")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(bin, b, 0o700); err != nil {
		t.Fatal(err)
	}
	srv := startServe(t, node)
	srv.waitLog("plugin not started", "does not match its lock entry", bin)
	conn := operatorConn(t, srv)
	_, ps := nodeInfo(t, conn)
	if ps["echo2"].State != "failed" || ps["echo"].State != "ready" {
		t.Fatalf("states: %+v", ps)
	}
	if err := echoRoundTrip(tctx(t, 10*time.Second), srv, "alknet/echo", []byte("fine")); err != nil {
		t.Fatalf("other plugin: %v", err)
	}
	if err := echoRoundTrip(tctx(t, 10*time.Second), srv, "alknet/echo2", []byte("x")); err == nil || !dial.IsNoALPN(err) {
		t.Fatalf("tampered plugin's ALPN: %v", err)
	}
	r := node.run("", "plugin", "verify")
	if r.code != 1 || !strings.Contains(r.stdout, "FAIL echo2 0.1.0") || !strings.Contains(r.stdout, "ok   echo 0.1.0") {
		t.Fatalf("plugin verify: %+v", r)
	}
	lines := srv.logs.String()
	var want string
	for _, l := range strings.Split(lines, "\n") {
		if strings.Contains(l, "does not match its lock entry") {
			want = l
		}
	}
	if strings.Count(want, "sha256") < 1 || !strings.Contains(want, "recorded") {
		t.Fatalf("error lacks both digests: %s", want)
	}
}

// TestCoreKilledLeavesNoPlugin: kill -9 of the core → its plugin processes
// are gone within 2 s.
func TestCoreKilledLeavesNoPlugin(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	conn := operatorConn(t, srv)
	p := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" && p.Pid > 0 })
	_ = conn.Close()
	_ = srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.exited
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(p.Pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d still alive 2s after the core was killed", p.Pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPluginUpgradeUnderLoad: while a client opens new echo streams in a
// loop, `plugin install` of echo 0.2.0 (the highest version: it takes
// over) and then `plugin use echo@0.1.0` switch versions with no failed
// stream; each command returns once the version it asked for serves, and
// the previous process exits after draining.
func TestPluginUpgradeUnderLoad(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	conn := operatorConn(t, srv)
	old := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" })
	if old.Version != "0.1.0" {
		t.Fatalf("bundled echo: %+v", old)
	}
	stop := make(chan struct{})
	var load traffic
	load.run(t, stop, 2, "echo during upgrade", func(ctx context.Context) error {
		return echoRoundTrip(ctx, srv, "alknet/echo", []byte("during upgrade"))
	})
	waitTraffic(t, &load, 10)
	switchTo := func(want string, args ...string) pluginStatus {
		t.Helper()
		r := node.run("", args...)
		if r.code != 0 || !strings.Contains(r.stderr, ": applied") {
			t.Fatalf("alknet %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		// No waiting: the command returned once the version serves.
		_, ps := nodeInfo(t, conn)
		if p := ps["echo"]; p.Version != want || p.State != "ready" {
			t.Fatalf("right after `alknet %s` returned, echo is %+v", strings.Join(args, " "), p)
		}
		waitTraffic(t, &load, load.oks.Load()+10)
		return ps["echo"]
	}
	v2 := switchTo("0.2.0", "plugin", "install", echoVariant(t, "v020"))
	if out, err := conn.Call(tctx(t, 10*time.Second), "echo/say", "v2"); err != nil || string(out) != `"v2"` {
		t.Fatalf("echo/say after upgrade: %s %v", out, err)
	}
	back := switchTo("0.1.0", "plugin", "use", "echo@0.1.0")
	close(stop)
	load.wg.Wait()
	if load.errs.Load() != 0 {
		t.Fatalf("%d failed, %d ok new echo streams during the switches", load.errs.Load(), load.oks.Load())
	}
	for _, p := range []pluginStatus{old, v2} {
		if p.Pid == back.Pid {
			t.Fatalf("process %d still serves after the switches", p.Pid)
		}
		waitExit(t, p.Pid, 15*time.Second)
	}
}

// waitExit waits until process pid is gone (drained and stopped).
func waitExit(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d still running %s after the switch", pid, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPluginProtocolMismatchRefused(t *testing.T) {
	node := newCLI(t, nil)
	msg := node.fail("", "plugin", "install", echoVariant(t, "proto99"))
	if !strings.Contains(msg, "[99]") || !strings.Contains(msg, "[2]") || !strings.Contains(msg, "protocol") {
		t.Fatalf("protocol mismatch: %s", msg)
	}
	if _, err := os.Stat(filepath.Join(node.dataDir, "plugins", "echo")); err == nil {
		t.Fatal("refused plugin was copied into the data directory")
	}
}

func TestPluginInstallListAndURLChecks(t *testing.T) {
	node := newCLI(t, nil)
	out := node.ok("", "plugin", "install", filepath.Join(binDir, "alknet-plugin-echo"))
	if !strings.Contains(out, "installed echo 0.1.0") {
		t.Fatalf("install: %s", out)
	}
	list := node.ok("", "plugin", "list")
	for _, want := range []string{"NAME", "VERSION", "SHA256", "PROTOCOL", "ALPNS", "STATE", "echo", "0.1.0", "[2]", "alknet/echo", "not running"} {
		if !strings.Contains(list, want) {
			t.Fatalf("plugin list lacks %q:\n%s", want, list)
		}
	}
	info := node.ok("", "plugin", "info", "echo")
	if !strings.Contains(info, "echo/say") || !strings.Contains(info, "sha256:") {
		t.Fatalf("plugin info:\n%s", info)
	}
	// A URL with the wrong digest is refused before anything runs: the
	// served "plugin" is a script that would leave a marker if executed.
	marker := filepath.Join(t.TempDir(), "executed")
	script := "#!/bin/sh\ntouch " + marker + "\necho '{}'\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/alknet-plugin-evil") {
			_, _ = io.WriteString(w, script)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	msg := node.fail("", "plugin", "install", srv.URL+"/dl/alknet-plugin-evil", "--sha256", strings.Repeat("ab", 32))
	if !strings.Contains(msg, "sha256 is") || !strings.Contains(msg, "nothing was executed") {
		t.Fatalf("wrong --sha256: %s", msg)
	}
	if msg := node.fail("", "plugin", "install", srv.URL+"/dl/alknet-plugin-evil"); !strings.Contains(msg, "--sha256") {
		t.Fatalf("URL without digest: %s", msg)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the downloaded binary was executed")
	}
}

func TestPluginSignatures(t *testing.T) {
	node := newCLI(t, nil)
	dir := t.TempDir()
	keyFile := writeFile(t, filepath.Join(dir, "publisher.key"), strings.Repeat("42", 32)+"\n", 0o600)
	bin := filepath.Join(binDir, "alknet-plugin-echo")
	sigFile := filepath.Join(dir, "echo.sig")
	out := node.ok("", "plugin", "sign", bin, "--key-file", keyFile, "-o", sigFile)
	publisher := strings.Fields(out)[len(strings.Fields(out))-3]
	if !strings.HasPrefix(publisher, "ed25519:") {
		t.Fatalf("sign output %q", out)
	}
	cfg := writeFile(t, filepath.Join(dir, "alknet.toml"), "[plugins]\nrequire_signature = true\ntrusted_publishers = [\""+publisher+"\"]\n", 0o600)
	if msg := node.fail("", "--config", cfg, "plugin", "install", bin); !strings.Contains(msg, "require_signature") {
		t.Fatalf("unsigned install: %s", msg)
	}
	// A signature by someone else is refused.
	other := writeFile(t, filepath.Join(dir, "other.key"), strings.Repeat("17", 32)+"\n", 0o600)
	otherSig := filepath.Join(dir, "other.sig")
	node.ok("", "plugin", "sign", bin, "--key-file", other, "-o", otherSig)
	if msg := node.fail("", "--config", cfg, "plugin", "install", bin, "--signature", otherSig); !strings.Contains(msg, "trusted_publishers") {
		t.Fatalf("untrusted signer: %s", msg)
	}
	// A signature for another binary is refused.
	if msg := node.fail("", "--config", cfg, "plugin", "install", echoVariant(t, "echo2"), "--signature", sigFile); !strings.Contains(msg, "signature is for sha256") {
		t.Fatalf("signature for another binary: %s", msg)
	}
	node.ok("", "--config", cfg, "plugin", "install", bin, "--signature", sigFile)
	lock, _ := os.ReadFile(filepath.Join(node.dataDir, "plugins", "lock.json"))
	if !strings.Contains(string(lock), `"signer": "`+publisher+`"`) {
		t.Fatalf("signer not recorded:\n%s", lock)
	}
}

// TestHungPluginRestarted: a plugin that stops answering (SIGSTOP) fails
// its health checks and is replaced; its connections are closed with code 2.
func TestHungPluginRestarted(t *testing.T) {
	srv := startServe(t, newCLI(t, nil))
	conn := operatorConn(t, srv)
	p := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" })
	if err := syscall.Kill(p.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(p.Pid, syscall.SIGKILL)
	start := time.Now()
	deadline := time.Now().Add(40 * time.Second)
	for {
		_, ps := nodeInfo(t, conn)
		if q := ps["echo"]; q.State == "ready" && q.Pid != p.Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hung plugin not replaced: %+v\n%s", ps["echo"], srv.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("hung plugin replaced after %v", time.Since(start).Round(time.Second))
	srv.waitLog("plugin health check failed", "does not answer health checks")
	if err := echoRoundTrip(tctx(t, 10*time.Second), srv, "alknet/echo", []byte("alive")); err != nil {
		t.Fatalf("echo after the replacement: %v", err)
	}
}
