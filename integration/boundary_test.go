package integration

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/dial"
)

var (
	testPluginsMu sync.Mutex
	testPlugins   = map[string]string{}
)

// testPlugin builds integration/testdata/plugins/<dir> with ldflags into a
// directory of its own as alknet-plugin-<name>, once per variant.
func testPlugin(t *testing.T, dir, name, ldflags string) string {
	t.Helper()
	key := dir + "|" + ldflags
	testPluginsMu.Lock()
	defer testPluginsMu.Unlock()
	if p, ok := testPlugins[key]; ok {
		return p
	}
	out := filepath.Join(t.TempDir(), "alknet-plugin-"+name)
	args := []string{"build", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.Command("go", append(args, "./testdata/plugins/"+dir)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", dir, err, b)
	}
	// t.TempDir is removed with the test: keep the binary elsewhere.
	keep, err := os.MkdirTemp("", "alknet-test-plugin-")
	if err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(keep, filepath.Base(out))
	if err := os.Rename(out, kept); err != nil {
		t.Fatal(err)
	}
	testPlugins[key] = kept
	return kept
}

func rogue(t *testing.T, variant string) string {
	return testPlugin(t, "rogue", "rogue", "-X main.variant="+variant)
}

// A plugin may not declare an operation of the core or of another plugin,
// nor one outside its own namespaces: install refuses it naming both
// owners; a plugin whose running manifest overreaches is refused at
// activation; meanwhile the core's and the echo plugin's operations keep
// answering with their own access control, and removing the refused
// plugin changes nothing.
func TestPluginOwnershipRefused(t *testing.T) {
	node := newCLI(t, nil)
	for variant, want := range map[string]string{
		"node-op":  `plugin rogue declares operation node/info outside its namespaces [rogue] (namespace "node" is owned by the core)`,
		"services": `operation services/list outside its namespaces [rogue] (namespace "services" is owned by the core)`,
		"outside":  `plugin rogue declares operation elsewhere/op outside its namespaces [rogue]`,
	} {
		if msg := node.fail("", "plugin", "install", rogue(t, variant)); !strings.Contains(msg, want) {
			t.Errorf("install of the %s variant: %s\nwant %q", variant, msg, want)
		}
	}
	// echo is installed (bundled) once the node has started.
	node.ok("", "plugin", "install", filepath.Join(binDir, "alknet-plugin-echo"))
	if msg := node.fail("", "plugin", "install", rogue(t, "echo-ns")); !strings.Contains(msg, "plugin rogue claims operation namespace echo, which plugin echo (0.1.0) owns") {
		t.Errorf("install of a plugin claiming echo's namespace: %s", msg)
	}
	if _, err := os.Stat(filepath.Join(node.dataDir, "plugins", "rogue")); err == nil {
		t.Fatal("a refused plugin was copied into the data directory")
	}

	// The sneaky one passes install: it describes itself innocently.
	node.ok("", "plugin", "install", rogue(t, "sneaky"))
	srv := startServe(t, node)
	srv.waitLog("plugin not started", "plugin rogue declares operation node/info outside its namespaces")
	anon := callConn(t, srv, nil)
	ctx := tctx(t, 10*time.Second)
	out, err := anon.Call(ctx, "node/info", nil)
	if err != nil || !strings.Contains(string(out), srv.FP) || strings.Contains(string(out), "rogue plugin") {
		t.Fatalf("node/info: %s %v", out, err)
	}
	if out, err := anon.Call(ctx, "echo/say", "mine"); err != nil || string(out) != `"mine"` {
		t.Fatalf("echo/say: %s %v", out, err)
	}
	var ce *call.Error
	if _, err := anon.Call(ctx, "echo/caps", nil); !asCallError(err, &ce) || ce.Code != call.CodeForbidden {
		t.Fatalf("anonymous echo/caps: %v", err)
	}
	// Nothing of the refused plugin was ever registered.
	if _, err := anon.Call(ctx, "rogue/ok", nil); !asCallError(err, &ce) || ce.Code != call.CodeNotFound {
		t.Fatalf("rogue/ok of the refused plugin: %v", err)
	}
	ops, err := anon.ServicesList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	node.ok("", "plugin", "remove", "rogue")
	srv.waitLog("configuration reloaded")
	if out, err := anon.Call(ctx, "echo/say", "still"); err != nil || string(out) != `"still"` {
		t.Fatalf("echo/say after removing the rogue plugin: %s %v", out, err)
	}
	after, err := anon.ServicesList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := func(specs []call.Spec) (s []string) {
		for _, sp := range specs {
			if !strings.HasPrefix(sp.Name, "rogue/") {
				s = append(s, sp.Name)
			}
		}
		return s
	}
	if fmt.Sprint(names(ops)) != fmt.Sprint(names(after)) || !strings.Contains(fmt.Sprint(names(after)), "services/list") {
		t.Fatalf("removing the refused plugin changed the other operations: %v → %v", names(ops), names(after))
	}
}

// A plugin built to overreach, speaking the wire protocol itself, tries to
// act through a call that has finished, a connection that has closed and a
// handle it never had: the node refuses every one. There is no request
// field in which a plugin could state an identity.
func TestPluginCannotActOutsideItsHandles(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "plugin", "install", testPlugin(t, "prober", "prober", ""))
	srv := startServe(t, node)
	conn := callConn(t, srv, nil)
	ctx := tctx(t, 20*time.Second)
	// A connection the prober keeps the handle of; it is closed at once.
	c, err := dial.Dial(ctx, srv.Addr, dial.Options{ALPN: "alknet/prober", Peer: srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	<-c.Context().Done()
	if _, err := conn.Call(ctx, "prober/mark", nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := conn.Call(ctx, "prober/probe", nil)
		if err != nil {
			t.Fatal(err)
		}
		var report map[string]string
		if err := json.Unmarshal(out, &report); err != nil {
			t.Fatal(err)
		}
		denied := true
		for k, v := range report {
			if k != "dial_own_call" && v != "PermissionDenied" {
				denied = false
			}
		}
		if denied && report["dial_own_call"] == "OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node let the plugin act outside its handles: %v", report)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A reload (SIGHUP) applies capability grants to the next call and stops a
// running plugin that plugins.require_signature now refuses, naming it.
func TestReloadAppliesGrantsAndSignatureRule(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "init", "--show-mnemonic-once")
	tok := adminToken(t, node, "echo:caps")
	node.ok("first-secret\n", "credential", "set", "one")
	node.ok("second-secret\n", "credential", "set", "two")
	cfg := filepath.Join(t.TempDir(), "alknet.toml")
	writeFile(t, cfg, "[plugins.echo.capabilities]\nfirst = \"credential:one\"\n", 0o600)
	srv := startServe(t, node, "--config", cfg)
	conn := tokenConn(t, srv, tok)
	capsNow := func() string {
		out, err := conn.Call(tctx(t, 10*time.Second), "echo/caps", nil)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Capabilities []string `json:"capabilities"`
		}
		_ = json.Unmarshal(out, &r)
		return strings.Join(r.Capabilities, ",")
	}
	if got := capsNow(); got != "first" {
		t.Fatalf("capabilities before the reload: %s", got)
	}
	writeFile(t, cfg, "[plugins.echo.capabilities]\nsecond = \"credential:two\"\n", 0o600)
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog("configuration reloaded")
	if got := capsNow(); got != "second" {
		t.Fatalf("capabilities after the reload: %s", got)
	}

	op := operatorConn(t, srv)
	_, before := nodeInfo(t, op)
	writeFile(t, cfg, "[plugins]\nrequire_signature = true\n", 0o600)
	_ = srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog("plugin stopped: it is not signed as the configuration now requires", "name=echo")
	p := waitPlugin(t, op, "echo", func(p pluginStatus) bool { return p.State == "failed" })
	if deadline := time.Now().Add(10 * time.Second); before["echo"].Pid > 0 {
		for syscall.Kill(before["echo"].Pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("the unsigned plugin process %d still runs", before["echo"].Pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if alpns, _ := nodeInfo(t, op); strings.Contains(fmt.Sprint(alpns), "alknet/echo") {
		t.Fatalf("alknet/echo still offered: %v (%+v)", alpns, p)
	}
}

// Installing an installed version with another binary is refused; with
// --force the node switches to it while streams keep flowing, none fails.
func TestPluginReinstallForceUnderLoad(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	conn := operatorConn(t, srv)
	old := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" })
	// The same version, another build: the bytes differ, the behaviour not.
	rebuilt := testPluginFrom(t, "../plugins/echo/cmd/alknet-plugin-echo", "alknet-plugin-echo", "-X alknet.dev/alknet/plugins/echo.Protocol=2")
	msg := node.fail("", "plugin", "install", rebuilt)
	if !strings.Contains(msg, "echo 0.1.0 is already installed with another binary") || !strings.Contains(msg, "--force") {
		t.Fatalf("reinstall without --force: %s", msg)
	}
	stop := make(chan struct{})
	var load traffic
	load.run(t, stop, 2, "echo during the forced reinstall", func(ctx context.Context) error {
		return echoRoundTrip(ctx, srv, "alknet/echo", []byte("during reinstall"))
	})
	waitTraffic(t, &load, 10)
	if r := node.run("", "plugin", "install", "--force", rebuilt); r.code != 0 || !strings.Contains(r.stdout, "installed echo 0.1.0") || !strings.Contains(r.stderr, ": applied") {
		t.Fatalf("install --force: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The command returns once the new binary serves.
	_, ps := nodeInfo(t, conn)
	if p := ps["echo"]; p.State != "ready" || p.Pid == old.Pid {
		t.Fatalf("right after `plugin install --force` returned, echo is %+v (the old process was %d)", p, old.Pid)
	}
	waitTraffic(t, &load, load.oks.Load()+10)
	close(stop)
	load.wg.Wait()
	if load.errs.Load() != 0 {
		t.Fatalf("%d echo streams failed during the forced reinstall (%d ok)", load.errs.Load(), load.oks.Load())
	}
	list := node.ok("", "plugin", "list")
	sum, err := fileSHA256(rebuilt)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list, sum[:12]) {
		t.Fatalf("plugin list does not show the new binary %s:\n%s", sum[:12], list)
	}
}

// waitTraffic waits until load has n successes.
func waitTraffic(t *testing.T, load *traffic, n int64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for load.oks.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d successful operations (%d failed)", load.oks.Load(), load.errs.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testPluginFrom builds package pkg with ldflags as a binary called name.
func testPluginFrom(t *testing.T, pkg, name, ldflags string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "alknet-test-plugin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if b, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, pkg).CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func fileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}
