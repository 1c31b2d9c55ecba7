package integration

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// sshEnv is a node serving the SSH plugin and a client with a key.
type sshEnv struct {
	t          *testing.T
	node       *cli
	client     *cli
	srv        *server
	keyFile    string
	knownHosts string
	plainAddr  string
	web        *httptest.Server
	cfgPath    string
}

func requireSSHPlugin(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(binDir, "alknet-plugin-ssh")); err != nil {
		t.Fatalf("alknet-plugin-ssh was not built: %v", err)
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatalf("OpenSSH client not installed (.ci/run installs openssh-client): %v", err)
	}
}

func writeKey(t *testing.T, dir, name string) (string, gossh.PublicKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	writeFile(t, path, string(pem.EncodeToMemory(block)), 0o600)
	sp, _ := gossh.NewPublicKey(pub)
	writeFile(t, path+".pub", string(gossh.MarshalAuthorizedKey(sp)), 0o644)
	return path, sp
}

func startSSH(t *testing.T, extraSettings string) *sshEnv {
	t.Helper()
	requireSSHPlugin(t)
	dir := t.TempDir()
	e := &sshEnv{t: t, node: newCLI(t, nil), client: newCLI(t, nil)}
	var pub gossh.PublicKey
	e.keyFile, pub = writeKey(t, dir, "id_ed25519")
	fp := gossh.FingerprintSHA256(pub)
	e.node.ok("", "peers", "add", "ops", "--ssh-key", fp,
		"--scope", "ssh:exec", "--scope", "ssh:forward", "--scope", "ssh:remote-forward")
	e.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello from the web server\n") }))
	t.Cleanup(e.web.Close)
	webAddr := strings.TrimPrefix(e.web.URL, "http://")
	e.plainAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for _, prog := range []string{"echo", "false", "uptime"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s not in PATH: %v", prog, err)
		}
	}
	// The plugin's settings sit directly under [plugins.ssh], as the
	// handler spec writes them; exec_allow names are resolved in PATH by
	// the plugin.
	cfg := fmt.Sprintf(`[[listeners.plain]]
addr = %q
alpn = "alknet/ssh"

[plugins.ssh]
exec_allow = ["echo", "false", "uptime"]
%s

[[plugins.ssh.forward_rules]]
target = %q
action = "allow"
direction = "local"

[[plugins.ssh.forward_rules]]
target = "127.0.0.1:*"
action = "allow"
direction = "remote"
`, e.plainAddr, extraSettings, webAddr)
	e.cfgPath = writeFile(t, filepath.Join(dir, "alknet.toml"), cfg, 0o600)
	e.node.ok("", "init", "--show-mnemonic-once")
	e.srv = startServe(t, e.node, "--config", e.cfgPath)
	// The node's SSH host key is the vault key at m/74'/0'/1'/0'.
	hexPub := strings.TrimSpace(e.node.ok("", "vault", "derive", "m/74'/0'/1'/0'", "--public"))
	raw, _ := hex.DecodeString(hexPub)
	hk, err := gossh.NewPublicKey(ed25519.PublicKey(raw))
	if err != nil {
		t.Fatal(err)
	}
	e.knownHosts = writeFile(t, filepath.Join(dir, "known_hosts"), "node "+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(hk)))+"\n", 0o600)
	return e
}

// sshArgs are the stock-client options: our key only, strict host key
// checking against the vault-derived key, no config files.
func (e *sshEnv) sshArgs(viaPipe bool) []string {
	args := []string{"-F", "/dev/null", "-i", e.keyFile, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + e.knownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=node",
		"-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"}
	if viaPipe {
		proxy := fmt.Sprintf("%s --data-dir %s pipe --alpn alknet/ssh --peer %s %s", filepath.Join(binDir, "alknet"), e.client.dataDir, e.srv.FP, e.srv.Addr)
		args = append(args, "-o", "ProxyCommand="+proxy)
	}
	return args
}

func (e *sshEnv) ssh(viaPipe bool, extra ...string) (string, string, int) {
	e.t.Helper()
	host, port := "ops@node", []string{}
	if !viaPipe {
		h, p, _ := net.SplitHostPort(e.plainAddr)
		host, port = "ops@"+h, []string{"-p", p}
	}
	args := append(append(e.sshArgs(viaPipe), port...), host)
	args = append(args, extra...)
	cmd := exec.Command("ssh", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { <-ctx.Done(); _ = cmd.Process.Kill() }()
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestSSHExecThroughProxyCommand(t *testing.T) {
	e := startSSH(t, "")
	out, errs, code := e.ssh(true, "uptime")
	if code != 0 || !strings.Contains(out, "load average") {
		t.Fatalf("ssh uptime: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	out, _, code = e.ssh(true, "echo", "hello", "'two words'", "$HOME", "*")
	if code != 0 || out != "hello two words $HOME *\n" {
		t.Fatalf("echo without shell interpretation: exit %d %q", code, out)
	}
	if _, _, code := e.ssh(true, "false"); code != 1 {
		t.Fatalf("false: exit %d, want 1", code)
	}
	_, errs, code = e.ssh(true, "ls", "/")
	if code == 0 || !strings.Contains(errs, "not allowed") {
		t.Fatalf("non-allow-listed command: exit %d %s", code, errs)
	}
	// The git bridge needs git:read / git:write, which ops lacks.
	_, errs, code = e.ssh(true, "git-receive-pack", "'/team/app.git'")
	if code != 1 || !strings.Contains(errs, "permission denied: git:write required") {
		t.Fatalf("git-receive-pack without git:write: exit %d %s", code, errs)
	}
	_, errs, code = e.ssh(true, "git-upload-pack", "'/team/app.git'")
	if code != 1 || !strings.Contains(errs, "permission denied: git:read required") {
		t.Fatalf("git-upload-pack without git:read: exit %d %s", code, errs)
	}
	// An unknown key is refused and logged result=reject.
	stranger, _ := writeKey(t, t.TempDir(), "stranger")
	args := append(e.sshArgs(true), "-i", stranger, "ops@node", "uptime")
	for i, a := range args {
		if a == e.keyFile {
			args[i] = stranger
		}
	}
	if out, err := exec.Command("ssh", args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("unknown key: %v %s", err, out)
	}
	e.srv.waitLog("auth attempt", "method=ssh", "result=reject", "id=ops", "result=accept")
	// The host key stays the same across restarts: strict checking passes again.
	e.srv.stop(syscall.SIGTERM)
	e.srv = startServeAt(t, e.node, e.srv.Addr, "--config", e.cfgPath)
	if out, errs, code := e.ssh(true, "echo", "again"); code != 0 || out != "again\n" {
		t.Fatalf("after restart: exit %d %q %s", code, out, errs)
	}
}

func TestSSHPlainTCPListener(t *testing.T) {
	e := startSSH(t, "")
	out, errs, code := e.ssh(false, "echo", "no", "wrapper")
	if code != 0 || out != "no wrapper\n" {
		t.Fatalf("ssh -p plain port: exit %d %q %s", code, out, errs)
	}
}

// OpenSSH lists chacha20-poly1305, AES-CTR, then AES-GCM; with the node's
// default server preference it gets AES-GCM, and a client that offers
// only AES-CTR still connects with it (as ssh -v reports).
func TestSSHServerCipherPreference(t *testing.T) {
	e := startSSH(t, "")
	h, p, _ := net.SplitHostPort(e.plainAddr)
	negotiated := func(extra ...string) string {
		t.Helper()
		args := append(append(e.sshArgs(false), extra...), "-v", "-p", p, "ops@"+h, "echo", "ok")
		out, err := exec.Command("ssh", args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "\nok\n") && !strings.HasPrefix(string(out), "ok\n") {
			t.Fatalf("ssh %v: %v\n%s", extra, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if _, rest, ok := strings.Cut(line, "kex: server->client cipher: "); ok {
				return strings.Fields(rest)[0]
			}
		}
		t.Fatalf("ssh -v printed no negotiated cipher:\n%s", out)
		return ""
	}
	if c := negotiated(); c != "aes128-gcm@openssh.com" {
		t.Errorf("stock ssh negotiated %s; want aes128-gcm@openssh.com (server preference)", c)
	}
	if c := negotiated("-o", "Ciphers=aes256-ctr,aes128-ctr"); c != "aes128-ctr" {
		t.Errorf("an AES-CTR-only client negotiated %s; want aes128-ctr, the node's first it supports", c)
	}
}

func TestSSHForwarding(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl not installed (.ci/run installs it): %v", err)
	}
	e := startSSH(t, "")
	webAddr := strings.TrimPrefix(e.web.URL, "http://")
	// -L: a local port forwarded to the web server through the node.
	lport := freePort(t)
	fwd := exec.Command("ssh", append(e.sshArgs(true), "-N", "-o", "ExitOnForwardFailure=yes",
		"-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, webAddr), "ops@node")...)
	var fwdErr bytes.Buffer
	fwd.Stderr = &fwdErr
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fwd.Process.Kill(); _ = fwd.Wait() }()
	body := curlRetry(t, "http://127.0.0.1:"+fmt.Sprint(lport)+"/")
	if body != "hello from the web server\n" {
		t.Fatalf("curl through -L: %q (ssh: %s)", body, fwdErr.String())
	}
	// -D: SOCKS through the node; an allowed target works, a denied one not.
	dport := freePort(t)
	socks := exec.Command("ssh", append(e.sshArgs(true), "-N", "-D", fmt.Sprintf("127.0.0.1:%d", dport), "ops@node")...)
	if err := socks.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = socks.Process.Kill(); _ = socks.Wait() }()
	proxy := fmt.Sprintf("127.0.0.1:%d", dport)
	body = curlRetry(t, "--socks5-hostname", proxy, e.web.URL+"/")
	if body != "hello from the web server\n" {
		t.Fatalf("curl through -D: %q", body)
	}
	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "secret") }))
	defer denied.Close()
	if out, err := exec.Command("curl", "-sS", "--max-time", "10", "--socks5-hostname", proxy, denied.URL+"/").CombinedOutput(); err == nil || strings.Contains(string(out), "secret") {
		t.Fatalf("denied target reachable through -D: %v %s", err, out)
	}
	// -R: a port on the node forwarded back to a server on the client side.
	back := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "served from the client side\n")
	}))
	defer back.Close()
	rport := freePort(t)
	rev := exec.Command("ssh", append(e.sshArgs(true), "-N", "-o", "ExitOnForwardFailure=yes",
		"-R", fmt.Sprintf("127.0.0.1:%d:%s", rport, strings.TrimPrefix(back.URL, "http://")), "ops@node")...)
	if err := rev.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rev.Process.Kill(); _ = rev.Wait() }()
	if body := curlRetry(t, fmt.Sprintf("http://127.0.0.1:%d/", rport)); body != "served from the client side\n" {
		t.Fatalf("curl to the -R port on the node: %q", body)
	}
	// -R on an address no remote rule allows: the node refuses it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", append(e.sshArgs(true), "-N", "-o", "ExitOnForwardFailure=yes",
		"-R", fmt.Sprintf("127.0.0.2:%d:%s", freePort(t), strings.TrimPrefix(back.URL, "http://")), "ops@node")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "remote port forwarding failed") {
		t.Fatalf("-R outside the forwarding rules: %v %s", err, out)
	}
	e.srv.waitLog("forward refused", "kind=tcpip-forward")
	if strings.Contains(e.srv.logs.String(), webAddr) {
		t.Fatal("a forwarding destination was logged")
	}
}

func curlRetry(t *testing.T, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := exec.Command("curl", append([]string{"-sS", "--max-time", "5"}, args...)...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("curl %v: %v %s", args, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestSSHBadInputIsolated(t *testing.T) {
	e := startSSH(t, "max_auth_attempts = 2")
	// A session runs while garbage arrives on other connections.
	long := exec.Command("ssh", append(e.sshArgs(true), "ops@node", "echo", "survivor")...)
	var out bytes.Buffer
	long.Stdout = &out
	for range 3 {
		c, err := net.Dial("tcp", e.plainAddr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n\x00\x01garbage"))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.ReadAll(c)
		c.Close()
		// Disconnect in the middle of the key exchange.
		c2, _ := net.Dial("tcp", e.plainAddr)
		_, _ = c2.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
		_, _ = c2.Read(make([]byte, 64))
		c2.Close()
	}
	if err := long.Run(); err != nil || out.String() != "survivor\n" {
		t.Fatalf("parallel session: %v %q", err, out.String())
	}
	// Exceeding max_auth_attempts disconnects.
	var signers []gossh.Signer
	for range 5 {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		s, _ := gossh.NewSignerFromKey(k)
		signers = append(signers, s)
	}
	cfg := &gossh.ClientConfig{User: "ops", Auth: []gossh.AuthMethod{gossh.PublicKeys(signers...)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
	_, err := gossh.Dial("tcp", e.plainAddr, cfg)
	if err == nil || !(strings.Contains(err.Error(), "too many") || strings.Contains(err.Error(), "unable to authenticate") || strings.Contains(err.Error(), "EOF")) {
		t.Fatalf("too many auth attempts: %v", err)
	}
	if !strings.Contains(e.srv.logs.String(), "result=reject") {
		t.Fatal("rejected attempts not logged")
	}
}

func TestSSHPluginCrashIsolated(t *testing.T) {
	e := startSSH(t, "")
	conn := operatorConn(t, e.srv)
	ssh := waitPlugin(t, conn, "ssh", func(p pluginStatus) bool { return p.State == "ready" })
	// A session that would run for a while (a held stdin keeps it open).
	sess := exec.Command("ssh", append(e.sshArgs(true), "-N", "ops@node")...)
	if err := sess.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	e.srv.waitLog("auth attempt", "result=accept") // the session is in
	if err := syscall.Kill(ssh.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = sess.Process.Kill()
		t.Fatal("ssh session did not end when the plugin died")
	}
	if _, err := conn.Call(tctx(t, 10*time.Second), "node/info", nil); err != nil {
		t.Fatalf("alknet/call after the SSH plugin died: %v\nnode logs:\n%s", err, e.srv.logs)
	}
	waitPlugin(t, conn, "ssh", func(p pluginStatus) bool { return p.State == "ready" && p.Pid != ssh.Pid })
	if out, errs, code := e.ssh(true, "echo", "back"); code != 0 || out != "back\n" {
		t.Fatalf("new ssh after restart: exit %d %q %s\nnode logs:\n%s", code, out, errs, e.srv.logs)
	}
}

// A reload that removes a forwarding rule applies to the next connection:
// `ssh -L` to the target it allowed is refused afterwards.
func TestSSHReloadRemovesForwardRule(t *testing.T) {
	e := startSSH(t, "")
	webAddr := strings.TrimPrefix(e.web.URL, "http://")
	forward := func() (*exec.Cmd, int) {
		lport := freePort(t)
		fwd := exec.Command("ssh", append(e.sshArgs(true), "-N", "-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, webAddr), "ops@node")...)
		if err := fwd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = fwd.Process.Kill(); _ = fwd.Wait() })
		return fwd, lport
	}
	_, lport := forward()
	if body := curlRetry(t, fmt.Sprintf("http://127.0.0.1:%d/", lport)); body != "hello from the web server\n" {
		t.Fatalf("curl through -L before the reload: %q", body)
	}
	cfg := readFile(t, e.cfgPath)
	rule := fmt.Sprintf("[[plugins.ssh.forward_rules]]\ntarget = %q\naction = \"allow\"\ndirection = \"local\"\n", webAddr)
	if !strings.Contains(cfg, rule) {
		t.Fatalf("the test's config has no rule for %s:\n%s", webAddr, cfg)
	}
	writeFile(t, e.cfgPath, strings.Replace(cfg, rule, "", 1), 0o600)
	_ = e.srv.cmd.Process.Signal(syscall.SIGHUP)
	e.srv.waitLog("configuration reloaded", "plugin settings applied")
	fwd, lport := forward()
	// ssh listens at once; the node refuses the channel when curl connects.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("curl", "-sS", "--max-time", "5", fmt.Sprintf("http://127.0.0.1:%d/", lport)).CombinedOutput()
		if strings.Contains(string(out), "hello from the web server") {
			t.Fatalf("-L to a target whose rule was removed still works")
		}
		if err != nil && strings.Contains(string(out), "Empty reply") || strings.Contains(string(out), "Recv failure") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("curl through the -L of the reloaded node: %v %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.srv.waitLog("forward refused", "kind=direct-tcpip")
	_ = fwd
}
