package ssh_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
	"alknet.dev/alknet/plugins/ssh"
)

// remoteAddr is the client address the fake node reports; a TEST-NET
// address, so it can never be mistaken for a forwarding destination in
// the logs.
const remoteAddr = "192.0.2.7:40000"

var allScopes = []string{ssh.ScopeExec, ssh.ScopeShell, ssh.ScopeForward, ssh.ScopeRemoteForward, ssh.ScopeSFTP, ssh.ScopeGitRead, ssh.ScopeGitWrite}

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

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type fixture struct {
	t       *testing.T
	h       *sdktest.Harness
	conn    *source // the default client address
	seed    []byte
	alice   gossh.Signer // authorized_keys, every scope
	bob     gossh.Signer // authorized_keys, no scope
	logs    *logBuffer
	dir     string
	handler *ssh.Plugin
	peers   []sdktest.Peer // the node's [[auth.peers]]
}

// stream opens a stream of the fixture's connection to the plugin.
func (f *fixture) stream() *sdktest.Stream {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := f.conn.OpenStream(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// hostKeyGrant grants a fresh host key seed.
func hostKeyGrant() map[string][]byte {
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	return map[string][]byte{ssh.CapHostKey: seed}
}

func newSigner(t *testing.T) gossh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeAuthorizedKeys(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not found: %v", name, err)
	}
	p, err = filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newFixture starts the plugin in-process with default test settings,
// changed by edit, and connects as the node would for an alknet/ssh
// connection granted the host key seed.
func newFixture(t *testing.T, edit func(dir string, settings map[string]any)) *fixture {
	t.Helper()
	return newPeerFixture(t, nil, edit)
}

// newPeerFixture is newFixture for a node whose [[auth.peers]] are peers.
func newPeerFixture(t *testing.T, peers []sdktest.Peer, edit func(dir string, settings map[string]any)) *fixture {
	t.Helper()
	f := &fixture{t: t, alice: newSigner(t), bob: newSigner(t), logs: &logBuffer{}, dir: t.TempDir(), peers: peers}
	aliceFile := filepath.Join(f.dir, "alice_keys")
	bobFile := filepath.Join(f.dir, "bob_keys")
	writeAuthorizedKeys(t, aliceFile, "# alice's laptop", strings.TrimSpace(string(gossh.MarshalAuthorizedKey(f.alice.PublicKey())))+" alice@laptop")
	writeAuthorizedKeys(t, bobFile, string(gossh.MarshalAuthorizedKey(f.bob.PublicKey())))
	settings := map[string]any{
		"exec_allow": map[string]string{
			"echo": lookPath(t, "echo"), "false": lookPath(t, "false"),
			"cat": lookPath(t, "cat"), "sleep": lookPath(t, "sleep"),
		},
		"authorized_keys": []map[string]any{
			{"file": aliceFile, "identity": "alice", "scopes": allScopes},
			{"file": bobFile, "identity": "bob"},
		},
		"forward_rules": []map[string]any{{"target": "127.0.0.1:*", "action": "allow", "direction": "remote"}},
	}
	if edit != nil {
		edit(f.dir, settings)
	}
	f.handler = &ssh.Plugin{Logger: hclog.New(&hclog.LoggerOptions{Name: "ssh", Output: f.logs, JSONFormat: true, Level: hclog.Debug})}
	f.seed = make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(f.seed)
	f.h = sdktest.Start(t, f.handler, sdktest.Options{Settings: settings, Capabilities: map[string][]byte{ssh.CapHostKey: f.seed}, Peers: f.peers})
	f.conn = f.connectFrom(remoteAddr, "quic")
	return f
}

// streamConn adapts an sdktest stream to the net.Conn gossh wants.
type streamConn struct{ s *sdktest.Stream }

func (c streamConn) Read(b []byte) (int, error)  { return c.s.Read(b) }
func (c streamConn) Write(b []byte) (int, error) { return c.s.Write(b) }
func (c streamConn) Close() error                { return c.s.CloseWrite() }
func (c streamConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
}
func (c streamConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4433}
}
func (c streamConn) SetDeadline(time.Time) error      { return nil }
func (c streamConn) SetReadDeadline(time.Time) error  { return nil }
func (c streamConn) SetWriteDeadline(time.Time) error { return nil }

// dial opens a stream and runs an SSH client handshake on it.
func (f *fixture) dial(signers ...gossh.Signer) (*gossh.Client, gossh.PublicKey, error) {
	return f.dialWith(nil, signers...)
}

// dialWith dials offering only ciphers (nil: x/crypto/ssh's defaults).
func (f *fixture) dialWith(ciphers []string, signers ...gossh.Signer) (*gossh.Client, gossh.PublicKey, error) {
	st := f.stream()
	var hostKey gossh.PublicKey
	cfg := &gossh.ClientConfig{
		Config: gossh.Config{Ciphers: ciphers},
		User:   "anyone",
		Auth:   []gossh.AuthMethod{gossh.PublicKeys(signers...)},
		HostKeyCallback: func(_ string, _ net.Addr, k gossh.PublicKey) error {
			hostKey = k
			return nil
		},
	}
	c, chans, reqs, err := gossh.NewClientConn(streamConn{st}, "node:4433", cfg)
	if err != nil {
		return nil, hostKey, err
	}
	client := gossh.NewClient(c, chans, reqs)
	f.t.Cleanup(func() { _ = client.Close() })
	return client, hostKey, nil
}

func (f *fixture) mustDial(signers ...gossh.Signer) *gossh.Client {
	f.t.Helper()
	c, _, err := f.dial(signers...)
	if err != nil {
		f.t.Fatalf("ssh handshake: %v", err)
	}
	return c
}

// run executes cmd and returns stdout, stderr and the exit status.
func run(t *testing.T, c *gossh.Client, cmd string, stdin io.Reader) (string, string, int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, stdin
	err = s.Run(cmd)
	var ee *gossh.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitStatus()
	}
	t.Fatalf("%s: %v", cmd, err)
	return "", "", -1
}

func TestManifest(t *testing.T) {
	info := (&ssh.Plugin{}).Info()
	if info.Name != "ssh" || info.Version != "0.1.0" || len(info.ALPNs) != 1 || info.ALPNs[0] != "alknet/ssh" {
		t.Fatalf("info %+v", info)
	}
	if len(info.Capabilities) != 1 || info.Capabilities[0].Name != "ssh_host_key" || !info.Capabilities[0].Required {
		t.Fatalf("capabilities %+v", info.Capabilities)
	}
	// The node's view of the operation: admin only, not remote-safe.
	h := sdktest.Start(t, &ssh.Plugin{}, sdktest.Options{Capabilities: hostKeyGrant()})
	admin := &sdk.Identity{ID: "op", Scopes: []string{"admin"}}
	out, err := h.Call(context.Background(), "services/schema", map[string]string{"name": "ssh/sessions"}, admin)
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		OpType        string `json:"op_type"`
		RemoteSafe    bool   `json:"remote_safe"`
		Provenance    string `json:"provenance"`
		AccessControl struct {
			RequiredScopes []string `json:"required_scopes"`
		} `json:"access_control"`
	}
	if err := json.Unmarshal(out, &spec); err != nil || spec.OpType != "query" || spec.RemoteSafe || spec.Provenance != "plugin:ssh" ||
		!slices.Equal(spec.AccessControl.RequiredScopes, []string{"admin"}) {
		t.Fatalf("ssh/sessions spec: %s %v", out, err)
	}
	// Without the host key grant the node does not start the plugin.
	if _, err := sdktest.New(&ssh.Plugin{}, sdktest.Options{}); err == nil || !strings.Contains(err.Error(), "needs capability \"ssh_host_key\"") {
		t.Fatalf("started without a host key: %v", err)
	}
}

func TestHostKeyFromCapability(t *testing.T) {
	f := newFixture(t, nil)
	_, hostKey, err := f.dial(f.alice)
	if err != nil {
		t.Fatal(err)
	}
	want, err := gossh.NewPublicKey(ed25519.NewKeyFromSeed(f.seed).Public())
	if err != nil {
		t.Fatal(err)
	}
	if gossh.FingerprintSHA256(hostKey) != gossh.FingerprintSHA256(want) {
		t.Fatalf("client saw host key %s; the granted seed is %s", gossh.FingerprintSHA256(hostKey), gossh.FingerprintSHA256(want))
	}
	if strings.Contains(f.logs.String(), fmt.Sprintf("%x", f.seed)) {
		t.Fatal("the host key seed appears in the logs")
	}
}

func TestHostKeyFile(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(priv, "host")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o644); err != nil {
		t.Fatal(err)
	}
	// Readable by others: refused, with the fix in the message.
	if _, err := sdktest.New(&ssh.Plugin{}, sdktest.Options{Settings: map[string]any{"host_key_file": path}, Capabilities: hostKeyGrant()}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a 0644 host key was accepted: %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(_ string, s map[string]any) { s["host_key_file"] = path })
	_, hostKey, err := f.dial(f.alice)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := gossh.NewPublicKey(priv.Public())
	if gossh.FingerprintSHA256(hostKey) != gossh.FingerprintSHA256(want) {
		t.Fatal("host_key_file did not override the ssh_host_key capability")
	}
}

// addIdentity adds an authorized_keys entry for a new key with scopes
// (inside a newFixture edit function) and returns the key.
func addIdentity(t *testing.T, dir string, settings map[string]any, id string, scopes ...string) gossh.Signer {
	t.Helper()
	k := newSigner(t)
	file := filepath.Join(dir, id+"_keys")
	writeAuthorizedKeys(t, file, string(gossh.MarshalAuthorizedKey(k.PublicKey())))
	settings["authorized_keys"] = append(settings["authorized_keys"].([]map[string]any),
		map[string]any{"file": file, "identity": id, "scopes": scopes})
	return k
}

func TestSettingsErrors(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	writeAuthorizedKeys(t, keys, "")
	for _, tc := range []struct {
		settings map[string]any
		want     string
	}{
		// Former names are unknown keys now, named in the error.
		{map[string]any{"exec": map[string]string{"ls": "/bin/ls"}}, `"exec"`},
		{map[string]any{"forward_allow": []string{"127.0.0.1:22"}}, `"forward_allow"`},
		{map[string]any{"remote_forward_allow": []string{"127.0.0.1:*"}}, `"remote_forward_allow"`},
		{map[string]any{"authorized_keys": []map[string]any{{"file": keys, "identity": "x", "scope": []string{"a"}}}}, `"scope"`},
		{map[string]any{"forward_rules": []map[string]any{{"target": "127.0.0.1:22", "action": "allow", "dir": "local"}}}, `"dir"`},
		{map[string]any{"exec_allow": map[string]string{"ls": "ls"}}, "exec_allow.ls"},
		{map[string]any{"exec_allow": map[string]string{"nope": "/nonexistent/program"}}, "exec_allow.nope"},
		{map[string]any{"exec_allow": []string{"echo", "alknet-no-such-program"}}, `"alknet-no-such-program"`},
		{map[string]any{"exec_allow": []string{"/bin/ls"}}, `"/bin/ls"`},
		{map[string]any{"exec_allow": []string{"two words"}}, `"two words"`},
		{map[string]any{"exec_allow": "uptime"}, "exec_allow"},
		{map[string]any{"exec_allow": []int{1}}, "exec_allow"},
		{map[string]any{"shell": "sh"}, "shell"},
		{map[string]any{"allow_shell": true, "shell": "/nonexistent/shell"}, "shell"},
		{map[string]any{"allow_shell": "yes"}, "allow_shell"},
		{map[string]any{"forward_rules": []map[string]any{{"target": "localhost", "action": "allow"}}}, "forward_rules[0]"},
		{map[string]any{"forward_rules": []map[string]any{{"target": "127.0.0.1:1", "action": "allow"}, {"target": "*:*"}}}, "forward_rules[1]: action is required"},
		{map[string]any{"forward_rules": []map[string]any{{"target": "*:*", "action": "allow", "direction": "up"}}}, "forward_rules[0]"},
		{map[string]any{"authorized_keys": []map[string]any{{"file": filepath.Join(dir, "missing"), "identity": "x"}}}, "authorized_keys[0]"},
		{map[string]any{"authorized_keys": []map[string]any{{"file": keys}}}, "identity is required"},
		{map[string]any{"cert_authorities": []map[string]any{{"public_key": "not a key"}}}, "cert_authorities[0]"},
		{map[string]any{"max_auth_attempts": 0}, "max_auth_attempts"},
		{map[string]any{"handshake_timeout": "soon"}, "handshake_timeout"},
		{map[string]any{"ciphers": []string{}}, "ciphers: empty"},
		{map[string]any{"ciphers": []string{"aes128-cbc"}}, `"aes128-cbc" is not supported`},
	} {
		_, err := sdktest.New(&ssh.Plugin{}, sdktest.Options{Settings: tc.settings, Capabilities: hostKeyGrant()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("settings %v: error %v; want one naming %s", tc.settings, err, tc.want)
		}
	}
}

// The default ciphers leave out chacha20-poly1305 (slow in x/crypto/ssh
// on amd64), so a client that offers only it is refused, and one that
// offers OpenSSH's default order (chacha20 first) gets AES; settings can
// put it back.
func TestCiphers(t *testing.T) {
	var signer gossh.Signer
	f := newFixture(t, func(dir string, settings map[string]any) {
		signer = addIdentity(t, dir, settings, "laptop", "ssh:exec")
	})
	if _, _, err := f.dialWith([]string{gossh.CipherChaCha20Poly1305}, signer); err == nil || !strings.Contains(err.Error(), "no common algorithm") {
		t.Fatalf("chacha20-only client against the defaults: %v, want no common algorithm", err)
	}
	openssh := ssh.OpenSSHCiphers
	if _, _, err := f.dialWith(openssh, signer); err != nil {
		t.Fatalf("OpenSSH's cipher order against the defaults: %v", err)
	}

	f = newFixture(t, func(dir string, settings map[string]any) {
		signer = addIdentity(t, dir, settings, "laptop", "ssh:exec")
		settings["ciphers"] = []string{gossh.CipherChaCha20Poly1305, gossh.CipherAES128GCM}
	})
	if _, _, err := f.dialWith([]string{gossh.CipherChaCha20Poly1305}, signer); err != nil {
		t.Fatalf("chacha20 client with ciphers set to include it: %v", err)
	}
	if _, _, err := f.dialWith([]string{gossh.CipherAES128CTR}, signer); err == nil {
		t.Fatal("a cipher left out of ciphers was accepted")
	}
}

// recordingConn keeps the first bytes the client reads: the server's
// identification line and KEXINIT.
type recordingConn struct {
	streamConn
	mu   sync.Mutex
	read []byte
}

func (c *recordingConn) Read(b []byte) (int, error) {
	n, err := c.streamConn.Read(b)
	c.mu.Lock()
	if len(c.read) < 64<<10 {
		c.read = append(c.read, b[:n]...)
	}
	c.mu.Unlock()
	return n, err
}

// offered dials with the client cipher list ciphers and returns the
// ciphers the server's KEXINIT offered that client.
func (f *fixture) offered(ciphers []string, signer gossh.Signer) []string {
	f.t.Helper()
	rc := &recordingConn{streamConn: streamConn{f.stream()}}
	cfg := &gossh.ClientConfig{
		Config:          gossh.Config{Ciphers: ciphers},
		User:            "anyone",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
	}
	c, chans, reqs, err := gossh.NewClientConn(rc, "node:4433", cfg)
	if err != nil {
		f.t.Fatalf("client offering %v: %v", ciphers, err)
	}
	_ = gossh.NewClient(c, chans, reqs).Close()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	got, err := ssh.OfferedCiphers(rc.read)
	if err != nil {
		f.t.Fatalf("the server's first bytes: %v", err)
	}
	return got
}

// With prefer_server_ciphers (the default) a client is offered the first
// of the node's ciphers it supports, alone — so OpenSSH's order
// (chacha20, AES-CTR, AES-GCM) ends with AES-GCM; without it, the whole
// list, and the client's order decides.
func TestServerCipherPreference(t *testing.T) {
	var signer gossh.Signer
	f := newFixture(t, func(dir string, settings map[string]any) {
		signer = addIdentity(t, dir, settings, "laptop", "ssh:exec")
	})
	openssh := ssh.OpenSSHCiphers
	if got := f.offered(openssh, signer); !slices.Equal(got, []string{gossh.CipherAES128GCM}) {
		t.Errorf("OpenSSH's order was offered %v; want aes128-gcm@openssh.com alone", got)
	}
	if got := f.offered([]string{gossh.CipherAES256CTR, gossh.CipherAES128CTR}, signer); !slices.Equal(got, []string{gossh.CipherAES128CTR}) {
		t.Errorf("an AES-CTR client was offered %v; want aes128-ctr alone", got)
	}

	f = newFixture(t, func(dir string, settings map[string]any) {
		signer = addIdentity(t, dir, settings, "laptop", "ssh:exec")
		settings["prefer_server_ciphers"] = false
	})
	if got := f.offered(openssh, signer); !slices.Equal(got, ssh.DefaultCiphers) {
		t.Errorf("with prefer_server_ciphers = false, OpenSSH's order was offered %v; want %v", got, ssh.DefaultCiphers)
	}
}

// A client that waits for the server's KEXINIT before sending its own
// (RFC 4253 lets each side send first) is not stuck behind the server's
// read-ahead: after the wait it gets the whole cipher list, and the
// library's usual negotiation.
func TestClientWaitingForServerKexInit(t *testing.T) {
	defer ssh.SetKexInitWait(200 * time.Millisecond)()
	var signer gossh.Signer
	f := newFixture(t, func(dir string, settings map[string]any) {
		signer = addIdentity(t, dir, settings, "laptop", "ssh:exec")
	})
	sc := streamConn{f.stream()}
	const clientVersion = "SSH-2.0-waiter"
	if _, err := sc.Write([]byte(clientVersion + "\r\n")); err != nil {
		t.Fatal(err)
	}
	// Read the server's line and KEXINIT without sending ours.
	var got []byte
	start := time.Now()
	var offered []string
	for offered == nil {
		b := make([]byte, 4096)
		n, err := sc.Read(b)
		if err != nil {
			t.Fatalf("waiting for the server's KEXINIT: %v (after %v)", err, time.Since(start))
		}
		got = append(got, b[:n]...)
		if o, err := ssh.OfferedCiphers(got); err == nil {
			offered = o
		}
	}
	if !slices.Equal(offered, ssh.DefaultCiphers) {
		t.Errorf("a waiting client was offered %v; want the whole list %v", offered, ssh.DefaultCiphers)
	}
	// Now run a real client on what was exchanged so far.
	cfg := &gossh.ClientConfig{
		ClientVersion:   clientVersion,
		User:            "anyone",
		Auth:            []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(),
	}
	c, chans, reqs, err := gossh.NewClientConn(ssh.ReplayConn(sc, []byte(clientVersion+"\r\n"), got), "node:4433", cfg)
	if err != nil {
		t.Fatalf("handshake of a client that waited: %v", err)
	}
	client := gossh.NewClient(c, chans, reqs)
	defer client.Close()
	if out, _, status := run(t, client, "echo waited", nil); out != "waited\n" || status != 0 {
		t.Fatalf("exec: %q %d", out, status)
	}
}

func TestExecAllowList(t *testing.T) {
	lookPath(t, "echo")
	lookPath(t, "true")
	f := newFixture(t, func(_ string, s map[string]any) { s["exec_allow"] = []string{"echo", "true"} })
	c := f.mustDial(f.alice)
	if out, errOut, status := run(t, c, "echo 'by name'", nil); out != "by name\n" || errOut != "" || status != 0 {
		t.Fatalf("echo from the list form: stdout %q stderr %q status %d", out, errOut, status)
	}
	if _, _, status := run(t, c, "true", nil); status != 0 {
		t.Fatalf("true from the list form: status %d", status)
	}
	// Only the exact names: not a path, not another program.
	if _, errOut, status := run(t, c, lookPath(t, "echo")+" hi", nil); status != 127 || !strings.Contains(errOut, "command not allowed") {
		t.Fatalf("a path instead of a listed name: %q %d", errOut, status)
	}
	if _, errOut, status := run(t, c, "cat", nil); status != 127 || !strings.Contains(errOut, "command not allowed: cat") {
		t.Fatalf("a program not in the list: %q %d", errOut, status)
	}
}

func TestExecAllowListed(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)
	// Quotes are honoured; nothing else of a shell happens.
	out, errOut, status := run(t, c, `echo 'hello  world' "$HOME" * '|' x`, nil)
	if out != "hello  world $HOME * | x\n" || errOut != "" || status != 0 {
		t.Fatalf("echo: stdout %q stderr %q status %d", out, errOut, status)
	}
	// stdin reaches the program.
	out, _, status = run(t, c, "cat", strings.NewReader("from stdin"))
	if out != "from stdin" || status != 0 {
		t.Fatalf("cat: %q status %d", out, status)
	}
}

func TestExecExitStatus(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)
	if _, _, status := run(t, c, "false", nil); status != 1 {
		t.Fatalf("false exited %d; want 1", status)
	}
}

// Bulk output arrives whole and before the exit status; a background
// child still holding stdout delays the end of the session by the drain
// time only.
func TestExecOutputAndExit(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) {
		s["exec_allow"] = map[string]string{"head": lookPath(t, "head"), "sh": lookPath(t, "sh"), "cat": lookPath(t, "cat")}
	})
	c := f.mustDial(f.alice)
	const size = 8<<20 + 12345 // several pipe buffers and reads, not a multiple of either
	out, errOut, status := run(t, c, fmt.Sprintf("head -c %d /dev/zero", size), nil)
	if len(out) != size || strings.Trim(out, "\x00") != "" || errOut != "" || status != 0 {
		t.Fatalf("head -c %d: %d bytes of stdout, stderr %q, status %d", size, len(out), errOut, status)
	}
	// Bulk stdin, through cat and back, byte for byte.
	in := make([]byte, size)
	_, _ = rand.Read(in)
	out, errOut, status = run(t, c, "cat", bytes.NewReader(in))
	if out != string(in) || errOut != "" || status != 0 {
		t.Fatalf("cat of %d random bytes: %d bytes back (equal: %v), stderr %q, status %d", size, len(out), out == string(in), errOut, status)
	}

	start := time.Now()
	out, _, status = run(t, c, "sh -c 'sleep 30 & echo started; exit 3'", nil)
	if out != "started\n" || status != 3 {
		t.Fatalf("a program leaving a child behind: stdout %q status %d; want \"started\\n\" and 3", out, status)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("the session ended %v after the program exited; its child held stdout, and the drain is 2s", d)
	}
}

func TestExecNotAllowed(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)

	// The message on stderr and status 127, as a shell reports a command
	// it cannot find (and as OpenSSH's ssh can show them).
	out, errOut, status := run(t, c, "rm -rf /tmp/x", nil)
	if out != "" || strings.TrimSpace(errOut) != "command not allowed: rm" || status != 127 {
		t.Fatalf("command outside the allow-list: stdout %q stderr %q status %d", out, errOut, status)
	}
	// No shell behind the allow-list.
	if _, errOut, status := run(t, c, "sh -c 'exit 3'", nil); status != 127 || !strings.Contains(errOut, "command not allowed: sh") {
		t.Fatalf("sh (not allow-listed): %q %d", errOut, status)
	}
	if _, errOut, status := run(t, c, "echo 'unterminated", nil); status != 127 || !strings.Contains(errOut, "unterminated") {
		t.Fatalf("unparsable command: %q %d", errOut, status)
	}
	if len(f.logs.lines("exec refused")) < 2 {
		t.Fatalf("refusals not logged:\n%s", f.logs)
	}
}

func TestExecNeedsScope(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.bob) // authenticated, but without ssh:exec
	out, errOut, status := run2(c, "echo hi")
	if out != "" || status != 127 || !strings.Contains(errOut, "command not allowed: echo") || !strings.Contains(errOut, "ssh:exec") {
		t.Fatalf("bob ran echo: stdout %q stderr %q status %d", out, errOut, status)
	}
}

// run2 runs cmd on a raw channel (a refused exec ends Session.Run early)
// and returns stdout, stderr and the exit status.
func run2(c *gossh.Client, cmd string) (string, string, int) {
	_, out, errOut, status := request(c, "exec", gossh.Marshal(struct{ Command string }{cmd}))
	return out, errOut, status
}

// request sends one session request on a raw channel and collects the
// reply, stdout, stderr and the exit status (-1 if none).
func request(c *gossh.Client, typ string, payload []byte) (bool, string, string, int) {
	ch, reqs, err := c.OpenChannel("session", nil)
	if err != nil {
		return false, "", err.Error(), -1
	}
	ok, _ := ch.SendRequest(typ, true, payload)
	_ = ch.CloseWrite()
	var errb []byte
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); errb, _ = io.ReadAll(ch.Stderr()) }()
	out, _ := io.ReadAll(ch)
	wg.Wait()
	status := -1
	for r := range reqs {
		if r.Type == "exit-status" {
			var m struct{ Status uint32 }
			_ = gossh.Unmarshal(r.Payload, &m)
			status = int(m.Status)
		}
	}
	return ok, string(out), string(errb), status
}

func TestExecSignal(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	startRunning(t, s, "sleep 30.25")
	if err := s.Signal(gossh.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = s.Wait()
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "TERM" {
		t.Fatalf("sleep after SIGTERM: %v; want exit-signal TERM", err)
	}
}

func TestClientGoneKillsProgram(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	startRunning(t, s, "sleep 31.5")
	_ = c.Close()
	// The connection's goroutines all ended (the line is logged after
	// waiting for them), and the program with them.
	waitFor(t, "the connection to end", func() bool { return len(f.logs.lines("ssh connection closed")) == 1 })
	waitFor(t, "ssh/sessions to be empty", func() bool {
		out, err := f.h.Call(context.Background(), "ssh/sessions", nil, &sdk.Identity{ID: "op", Scopes: []string{"admin"}})
		return err == nil && string(out) == "[]"
	})
	if b, _ := exec.Command("pgrep", "-f", "sleep 31.5").Output(); len(b) > 0 {
		t.Fatalf("the program outlived its connection: pids %s", b)
	}
}

func TestShellWithPTY(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) { s["allow_shell"], s["shell"] = true, lookPath(t, "sh") })
	c := f.mustDial(f.alice)
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm", 40, 100, gossh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	s.Stdout = &out
	in, _ := s.StdinPipe()
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(in, "echo \"cols=$(stty size) term=$TERM sum=$((40+2)) shell=$SHELL\"; exit 7\n")
	err = s.Wait()
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 7 {
		t.Fatalf("shell: %v; output %q", err, out.String())
	}
	if !strings.Contains(out.String(), "cols=40 100 term=xterm sum=42 shell="+lookPath(t, "sh")) {
		t.Fatalf("shell output %q", out.String())
	}
}

func TestShellDefault(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	f := newFixture(t, func(_ string, s map[string]any) { s["allow_shell"] = true })
	ok, out, errOut, status := request(f.mustDial(f.alice), "shell", nil)
	// No terminal: the shell reads its commands from the channel, which
	// request closed at once, so it exits 0 without output.
	if !ok || status != 0 || out != "" || errOut != "" {
		t.Fatalf("default shell: accepted %v, status %d, stdout %q, stderr %q", ok, status, out, errOut)
	}
	s, err := f.mustDial(f.alice).NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var buf bytes.Buffer
	s.Stdout = &buf
	s.Stdin = strings.NewReader("echo \"shell=$SHELL\"\n")
	if err := s.Shell(); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil || buf.String() != "shell=/bin/sh\n" {
		t.Fatalf("allow_shell without shell: %v %q; want /bin/sh", err, buf.String())
	}
}

func TestShellRefused(t *testing.T) {
	shell := func(c *gossh.Client) (string, int) {
		ok, _, errOut, status := request(c, "shell", nil)
		if !ok {
			t.Fatal("shell request failed: OpenSSH would not show why")
		}
		return errOut, status
	}
	f := newFixture(t, nil) // no allow_shell
	if errOut, status := shell(f.mustDial(f.alice)); status != 127 || !strings.Contains(errOut, "shells are not enabled") {
		t.Fatalf("shell without allow_shell: %q %d", errOut, status)
	}
	// shell alone enables nothing (and the node's log says so).
	g := newFixture(t, func(_ string, s map[string]any) { s["shell"] = lookPath(t, "sh") })
	if errOut, status := shell(g.mustDial(g.alice)); status != 127 || !strings.Contains(errOut, "shells are not enabled") {
		t.Fatalf("shell set without allow_shell: %q %d", errOut, status)
	}
	if len(g.logs.lines("shell is set but allow_shell is not: shell requests are refused")) != 1 {
		t.Fatalf("no warning about shell without allow_shell:\n%s", g.logs)
	}
	h := newFixture(t, func(_ string, s map[string]any) { s["allow_shell"] = true })
	if errOut, status := shell(h.mustDial(h.bob)); status != 127 || !strings.Contains(errOut, "lacks scope ssh:shell") {
		t.Fatalf("shell for an identity without ssh:shell: %q %d", errOut, status)
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	f := newFixture(t, nil)
	stranger := newSigner(t)
	_, _, err := f.dial(stranger)
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, _, err := f.dial(f.alice); err != nil {
		t.Fatalf("known key after a rejection: %v", err)
	}
	var rejected, accepted bool
	for _, l := range f.logs.lines("auth attempt") {
		if l["remote_addr"] != remoteAddr || l["method"] != "ssh" {
			t.Fatalf("auth attempt line %v", l)
		}
		switch {
		case l["result"] == "reject" && l["id"] == gossh.FingerprintSHA256(stranger.PublicKey()):
			rejected = true
		case l["result"] == "accept" && l["id"] == "alice":
			accepted = true
		}
	}
	if !rejected || !accepted {
		t.Fatalf("auth attempts not logged as expected:\n%s", f.logs)
	}
}

func TestMaxAuthAttempts(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) { s["max_auth_attempts"] = 2 })
	// Two unknown keys use up the attempts: the server disconnects before
	// the third (valid) key is even offered.
	_, _, err := f.dial(newSigner(t), newSigner(t), f.alice)
	if err == nil || !strings.Contains(err.Error(), "too many authentication failures") {
		t.Fatalf("after max_auth_attempts: %v", err)
	}
	if _, _, err := f.dial(newSigner(t), f.alice); err != nil {
		t.Fatalf("one failure then the right key: %v", err)
	}
}

func TestBadClientsOnlyEndTheirConnection(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) { s["handshake_timeout"] = "1s" })
	good := f.mustDial(f.alice)

	ends := func(name string, st *sdktest.Stream) {
		t.Helper()
		done := make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(st); done <- b }()
		select {
		case b := <-done:
			if !strings.HasPrefix(string(b), "SSH-2.0-alknet") {
				t.Errorf("%s: server sent %q", name, b)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the server kept the connection open", name)
		}
	}
	// Garbage instead of a banner: too long for a version line, and not
	// one anyway (an HTTP request, cut off without waiting for more).
	garbage := f.stream()
	_, _ = garbage.Write(bytes.Repeat([]byte("x"), 600))
	ends("garbage", garbage)
	start := time.Now()
	web := f.stream()
	_, _ = web.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	ends("http", web)
	if time.Since(start) > 900*time.Millisecond {
		t.Errorf("a non-SSH client was kept until the handshake deadline (%v)", time.Since(start))
	}
	// A client that never speaks: the handshake deadline ends it.
	silent := f.stream()
	ends("silent", silent)
	// A banner, then gone in the middle of the key exchange.
	quitter := f.stream()
	_, _ = quitter.Write([]byte("SSH-2.0-quitter\r\n"))
	_ = quitter.CloseWrite()
	ends("mid-kex", quitter)

	// The good connection opened before still works, and new ones too.
	if out, _, status := run(t, good, "echo still here", nil); out != "still here\n" || status != 0 {
		t.Fatalf("parallel session: %q %d", out, status)
	}
	if out, _, _ := run(t, f.mustDial(f.alice), "echo new", nil); out != "new\n" {
		t.Fatalf("new session: %q", out)
	}
}

func TestLocalForward(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "behind the node")
	}))
	defer srv.Close()
	target := srv.Listener.Addr().String()
	denied, _ := net.Listen("tcp", "127.0.0.1:0") // reachable, but not allowed
	defer denied.Close()
	var remoteOnly gossh.Signer
	f := newFixture(t, func(dir string, s map[string]any) {
		s["forward_rules"] = []map[string]any{
			{"target": denied.Addr().String(), "action": "deny"},
			{"target": target, "action": "allow", "direction": "local"},
			{"target": "127.0.0.1:*", "action": "allow", "direction": "remote"},
		}
		remoteOnly = addIdentity(t, dir, s, "carol", ssh.ScopeRemoteForward)
	})
	c := f.mustDial(f.alice)

	hc := &http.Client{Transport: &http.Transport{DialContext: func(_ context.Context, n, a string) (net.Conn, error) { return c.Dial(n, a) }}}
	resp, err := hc.Get("http://" + target + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "behind the node" {
		t.Fatalf("through -L: %q", body)
	}

	if _, err := c.Dial("tcp", denied.Addr().String()); err == nil || !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("-L to a destination a rule denies: %v", err)
	}
	// No rule matches (the 127.0.0.1:* rule is for -R only): denied.
	other, _ := net.Listen("tcp", "127.0.0.1:0")
	defer other.Close()
	if _, err := c.Dial("tcp", other.Addr().String()); err == nil || !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("-L to a destination no local rule matches: %v", err)
	}
	if _, err := f.mustDial(f.bob).Dial("tcp", target); err == nil || !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("-L by an identity without ssh:forward: %v", err)
	}
	// ssh:remote-forward does not allow -L.
	if _, err := f.mustDial(remoteOnly).Dial("tcp", target); err == nil || !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("-L by an identity with only ssh:remote-forward: %v", err)
	}
	if len(f.logs.lines("forward refused")) != 4 {
		t.Fatalf("refusals not logged:\n%s", f.logs)
	}
	// docs/architecture.md D10: destinations never reach the logs.
	for _, dest := range []string{target, denied.Addr().String(), other.Addr().String()} {
		_, port, _ := net.SplitHostPort(dest)
		if strings.Contains(f.logs.String(), ":"+port) {
			t.Fatalf("a forwarding destination (%s) was logged:\n%s", dest, f.logs)
		}
	}
}

func TestRemoteForward(t *testing.T) {
	var forwardOnly, remoteOnly gossh.Signer
	f := newFixture(t, func(dir string, s map[string]any) {
		// The default rule (127.0.0.1:* allowed, remote) after a deny.
		s["forward_rules"] = append([]map[string]any{{"target": "127.0.0.1:1", "action": "deny"}}, s["forward_rules"].([]map[string]any)...)
		forwardOnly = addIdentity(t, dir, s, "dave", ssh.ScopeForward)
		remoteOnly = addIdentity(t, dir, s, "carol", ssh.ScopeRemoteForward)
	})
	c := f.mustDial(f.alice)
	ln, err := c.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("the node did not report the port it chose: %s", addr)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "served by the client")
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "served by the client" {
		t.Fatalf("through -R: %q", body)
	}
	// cancel-tcpip-forward closes the port on the node.
	_ = ln.Close()
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("the port stayed open after cancel-tcpip-forward")
	}

	// No rule matches, a rule denies, or no ssh:remote-forward: refused.
	if _, err := c.Listen("tcp", "127.0.0.2:0"); err == nil {
		t.Fatal("-R on an address no rule allows accepted")
	}
	if _, err := c.Listen("tcp", "127.0.0.1:1"); err == nil {
		t.Fatal("-R on an address a rule denies accepted")
	}
	if _, err := f.mustDial(f.bob).Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatal("-R by an identity without scopes accepted")
	}
	if _, err := f.mustDial(forwardOnly).Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatal("-R by an identity with ssh:forward but not ssh:remote-forward accepted")
	}
	if len(f.logs.lines("forward refused")) != 4 {
		t.Fatalf("refusals not logged:\n%s", f.logs)
	}
	ln3, err := f.mustDial(remoteOnly).Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("-R with ssh:remote-forward only: %v", err)
	}
	_ = ln3.Close()

	// The connection's end closes its listeners.
	c2 := f.mustDial(f.alice)
	ln2, err := c2.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr2 := ln2.Addr().String()
	_ = c2.Close()
	waitFor(t, "the listener to close with its connection", func() bool {
		conn, err := net.DialTimeout("tcp", addr2, time.Second)
		if err == nil {
			_ = conn.Close()
		}
		return err != nil
	})
}

func TestSFTPWithoutHandler(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)
	sftp := gossh.Marshal(struct{ Name string }{"sftp"})
	ok, _, errOut, status := request(c, "subsystem", sftp)
	want := "alknet: the sftp handler is not installed on this node (alknet plugin install alknet-plugin-sftp)"
	if !ok || status != 1 || strings.TrimSpace(errOut) != want {
		t.Fatalf("sftp without the handler: accepted %v, status %d, stderr %q; want status 1 and %q", ok, status, errOut, want)
	}
	// Without ssh:sftp the handler is not even dialled.
	if _, _, errOut, status := request(f.mustDial(f.bob), "subsystem", sftp); status != 1 || !strings.Contains(errOut, "lacks scope ssh:sftp") {
		t.Fatalf("sftp subsystem without ssh:sftp: status %d, stderr %q", status, errOut)
	}
	// Other subsystems do not exist.
	ch, _, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if ok, err := ch.SendRequest("subsystem", true, gossh.Marshal(struct{ Name string }{"netconf"})); ok || err != nil {
		t.Fatalf("unknown subsystem: accepted %v, %v", ok, err)
	}
}

func TestGitWithoutHandler(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)
	_, errOut, status := run(t, c, "git-upload-pack '/team/app.git'", nil)
	want := "alknet: the git handler is not installed on this node (alknet plugin install alknet-plugin-git)"
	if status != 1 || strings.TrimSpace(errOut) != want {
		t.Fatalf("git-upload-pack without the handler: status %d stderr %q", status, errOut)
	}
	if _, errOut, status := run(t, c, "git-receive-pack", nil); status != 128 || !strings.Contains(errOut, "usage") {
		t.Fatalf("git-receive-pack without a repository: %d %q", status, errOut)
	}
}

func TestGitNeedsScopes(t *testing.T) {
	var reader gossh.Signer
	f := newFixture(t, func(dir string, s map[string]any) { reader = addIdentity(t, dir, s, "reader", ssh.ScopeGitRead) })
	notInstalled := "alknet: the git handler is not installed on this node (alknet plugin install alknet-plugin-git)"
	for _, tc := range []struct {
		who        gossh.Signer
		cmd        string
		wantStderr string
	}{
		{f.bob, "git-upload-pack '/team/app.git'", "permission denied: git:read required"},
		{f.bob, "git-upload-archive '/team/app.git'", "permission denied: git:read required"},
		{f.bob, "git-receive-pack '/team/app.git'", "permission denied: git:write required"},
		{reader, "git-receive-pack '/team/app.git'", "permission denied: git:write required"},
		// With the scope, the bridge is tried (and finds no handler here).
		{reader, "git-upload-pack '/team/app.git'", notInstalled},
		{reader, "git-upload-archive '/team/app.git'", notInstalled},
	} {
		out, errOut, status := run2(f.mustDial(tc.who), tc.cmd)
		if out != "" || status != 1 || strings.TrimSpace(errOut) != tc.wantStderr {
			t.Errorf("%s: stdout %q stderr %q status %d; want status 1 and %q", tc.cmd, out, errOut, status, tc.wantStderr)
		}
	}
	if n := len(f.logs.lines("exec refused")); n != 4 {
		t.Fatalf("%d exec refusals logged; want 4:\n%s", n, f.logs)
	}
	if strings.Contains(f.logs.String(), "/team/app.git") {
		t.Fatalf("a repository path was logged:\n%s", f.logs)
	}
}

// halfCloser is a stream of the node, as a handler of the harness sees it.
type halfCloser interface {
	io.ReadWriter
	CloseWrite() error
}

// serveALPN serves alpn in the harness's node with fn; S, the node's
// stream type, is inferred from serve (the harness's ServeALPN).
func serveALPN[S halfCloser](serve func(string, func(context.Context, S, *sdk.Identity)) error, alpn string, fn func(halfCloser, *sdk.Identity)) error {
	return serve(alpn, func(_ context.Context, s S, id *sdk.Identity) { fn(s, id) })
}

// TestGitProtocolEnv: the one env request accepted is GIT_PROTOCOL, and
// its value reaches the Git handler in the bridge's header.
func TestGitProtocolEnv(t *testing.T) {
	f := newFixture(t, nil)
	headers := make(chan string, 1)
	err := serveALPN(f.h.ServeALPN, ssh.ALPNGit, func(s halfCloser, id *sdk.Identity) {
		// A stand-in Git handler: it reads the header line and ends the
		// stream with a flush-pkt.
		var line []byte
		b := make([]byte, 1)
		for {
			if _, err := s.Read(b); err != nil || b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		who := "connection" // an authorized_keys identity: the bridge acts as the connection
		if id != nil {
			who = id.ID
		}
		headers <- who + " " + string(line)
		_, _ = io.WriteString(s, "0000")
		_ = s.CloseWrite()
	})
	if err != nil {
		t.Fatal(err)
	}
	c := f.mustDial(f.alice)
	for _, tc := range []struct {
		name   string
		env    [][2]string // name, value
		ok     []bool
		header string
	}{
		{"no env", nil, nil, `{"service":"git-upload-pack","path":"/team/app.git"}`},
		{"protocol v2", [][2]string{{"GIT_PROTOCOL", "version=2"}}, []bool{true}, `{"service":"git-upload-pack","path":"/team/app.git","protocol":"version=2"}`},
		{"protocol v1", [][2]string{{"LANG", "C.UTF-8"}, {"GIT_PROTOCOL", "version=1"}}, []bool{false, true}, `{"service":"git-upload-pack","path":"/team/app.git","protocol":"version=1"}`},
		{"protocol v0", [][2]string{{"GIT_PROTOCOL", "version=0"}}, []bool{true}, `{"service":"git-upload-pack","path":"/team/app.git","protocol":"version=0"}`},
		{"an unknown version", [][2]string{{"GIT_PROTOCOL", "version=3"}}, []bool{false}, `{"service":"git-upload-pack","path":"/team/app.git"}`},
		{"a list of values", [][2]string{{"GIT_PROTOCOL", "version=2:object-format=sha1"}}, []bool{false}, `{"service":"git-upload-pack","path":"/team/app.git"}`},
		{"a later bad value", [][2]string{{"GIT_PROTOCOL", "version=2"}, {"GIT_PROTOCOL", "x"}}, []bool{true, false}, `{"service":"git-upload-pack","path":"/team/app.git","protocol":"version=2"}`},
		{"another name", [][2]string{{"git_protocol", "version=2"}}, []bool{false}, `{"service":"git-upload-pack","path":"/team/app.git"}`},
	} {
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range tc.env {
			ok, err := ch.SendRequest("env", true, gossh.Marshal(struct{ Name, Value string }{e[0], e[1]}))
			if err != nil || ok != tc.ok[i] {
				t.Errorf("%s: env %s=%s: accepted %v, %v; want %v", tc.name, e[0], e[1], ok, err, tc.ok[i])
			}
		}
		if ok, err := ch.SendRequest("exec", true, gossh.Marshal(struct{ Command string }{"git-upload-pack '/team/app.git'"})); !ok || err != nil {
			t.Fatalf("%s: exec: %v %v", tc.name, ok, err)
		}
		_ = ch.CloseWrite()
		out, _ := io.ReadAll(ch)
		status := -1
		for r := range reqs {
			if r.Type == "exit-status" {
				var m struct{ Status uint32 }
				_ = gossh.Unmarshal(r.Payload, &m)
				status = int(m.Status)
			}
		}
		if string(out) != "0000" || status != 0 {
			t.Errorf("%s: stdout %q, status %d", tc.name, out, status)
		}
		select {
		case h := <-headers:
			if h != "connection "+tc.header {
				t.Errorf("%s: header %s; want %s", tc.name, h, tc.header)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the Git handler got no stream", tc.name)
		}
	}
	// Unusual values are refused at info, without the value.
	var refused int
	for _, l := range f.logs.lines("request refused") {
		if l["type"] == "env" && l["name"] == "GIT_PROTOCOL" && l["@level"] == "info" {
			refused++
		}
	}
	if refused != 3 {
		t.Errorf("%d refused GIT_PROTOCOL values logged at info; want 3:\n%s", refused, f.logs)
	}
	if strings.Contains(f.logs.String(), "object-format") {
		t.Errorf("an env value was logged:\n%s", f.logs)
	}
}

func TestRefusedRequestsAreLogged(t *testing.T) {
	f := newFixture(t, nil)
	c := f.mustDial(f.alice)
	ch, _, err := c.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	const secret = "s3cr3t-value-0123456789"
	for _, r := range []struct {
		typ     string
		payload []byte
	}{
		{"env", gossh.Marshal(struct{ Name, Value string }{"AWS_SECRET_ACCESS_KEY", secret})},
		{"env", gossh.Marshal(struct{ Name, Value string }{"GIT_PROTOCOL", secret})},
		{"x11-req", gossh.Marshal(struct {
			Single       bool
			Protocol     string
			Cookie       string
			ScreenNumber uint32
		}{false, "MIT-MAGIC-COOKIE-1", secret, 0})},
		{"auth-agent-req@openssh.com", nil},
	} {
		if ok, err := ch.SendRequest(r.typ, true, r.payload); ok || err != nil {
			t.Fatalf("%s: accepted %v, %v", r.typ, ok, err)
		}
	}
	for _, typ := range []string{"x11", "auth-agent@openssh.com", "direct-streamlocal@openssh.com", "tun@openssh.com"} {
		_, _, err := c.OpenChannel(typ, gossh.Marshal(struct{ Path, A string }{"/run/" + secret, secret}))
		var oce *gossh.OpenChannelError
		if !errors.As(err, &oce) {
			t.Fatalf("channel %s: %v; want a refusal", typ, err)
		}
	}
	if ok, _, err := c.SendRequest("streamlocal-forward@openssh.com", true, gossh.Marshal(struct{ Path string }{"/tmp/" + secret})); ok || err != nil {
		t.Fatalf("streamlocal-forward: accepted %v, %v", ok, err)
	}
	_ = c.Close()
	waitFor(t, "the connection to end", func() bool { return len(f.logs.lines("ssh connection closed")) == 1 })

	// Unusual refusals are counted at the node's level (info): a debug
	// line would not reach operators. What stock clients ask on every
	// login (SendEnv, ForwardAgent, ForwardX11) is logged at debug.
	countAt := func(level, msg, typ string) int {
		n := 0
		for _, l := range f.logs.lines(msg) {
			if l["type"] == typ && l["@level"] == level {
				n++
			}
		}
		return n
	}
	count := func(msg, typ string) int { return countAt("info", msg, typ) }
	for _, typ := range []string{"env", "x11-req", "auth-agent-req@openssh.com"} {
		if n := countAt("debug", "request refused", typ); n != 1 {
			t.Errorf("%d log lines for the refused %s request; want 1", n, typ)
		}
	}
	// GIT_PROTOCOL is accepted, for the Git bridge, with version=0, 1 or
	// 2 only; another value is unusual: info.
	if n := count("request refused", "env"); n != 1 {
		t.Errorf("%d log lines at info for the refused GIT_PROTOCOL value; want 1", n)
	}
	for _, typ := range []string{"x11", "auth-agent@openssh.com", "direct-streamlocal@openssh.com", "tun@openssh.com"} {
		if n := count("channel refused", typ); n != 1 {
			t.Errorf("%d log lines for the refused %s channel; want 1", n, typ)
		}
	}
	if n := count("global request refused", "streamlocal-forward@openssh.com"); n != 1 {
		t.Errorf("%d log lines for the refused streamlocal-forward; want 1", n)
	}
	if strings.Contains(f.logs.String(), secret) {
		t.Fatalf("a secret or a destination reached the logs:\n%s", f.logs)
	}
	if t.Failed() {
		t.Log(f.logs)
	}
}

func TestCertificateAuthority(t *testing.T) {
	ca := newSigner(t)
	f := newFixture(t, func(_ string, s map[string]any) {
		s["cert_authorities"] = []map[string]any{{"public_key": string(gossh.MarshalAuthorizedKey(ca.PublicKey())),
			"scopes": []string{ssh.ScopeExec, ssh.ScopeForward, ssh.ScopeRemoteForward}}}
		s["forward_rules"] = []map[string]any{{"target": "127.0.0.1:*", "action": "allow"}}
	})
	certSigner := func(keyID string, from, to time.Time, extensions ...string) gossh.Signer {
		user := newSigner(t)
		ext := map[string]string{}
		for _, e := range extensions {
			ext[e] = ""
		}
		cert := &gossh.Certificate{Key: user.PublicKey(), KeyId: keyID, CertType: gossh.UserCert, ValidPrincipals: []string{"someone-else"},
			ValidAfter: uint64(from.Unix()), ValidBefore: uint64(to.Unix()), Permissions: gossh.Permissions{Extensions: ext}}
		if err := cert.SignCert(rand.Reader, ca); err != nil {
			t.Fatal(err)
		}
		s, err := gossh.NewCertSigner(cert, user)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now()
	c, _, err := f.dial(certSigner("carol@example", now.Add(-time.Hour), now.Add(time.Hour), "permit-pty"))
	if err != nil {
		t.Fatalf("valid certificate: %v", err)
	}
	if out, _, _ := run(t, c, "echo cert", nil); out != "cert\n" {
		t.Fatalf("exec with a certificate: %q", out)
	}
	out, err := f.h.Call(context.Background(), "ssh/sessions", nil, &sdk.Identity{ID: "op", Scopes: []string{"admin"}})
	if err != nil || !strings.Contains(string(out), `"id":"carol@example","auth":"certificate","remote_addr":"192.0.2.7:40000","user":"anyone"`) {
		t.Fatalf("ssh/sessions: %s %v", out, err)
	}
	// Without permit-port-forwarding: neither -L nor -R.
	target, _ := net.Listen("tcp", "127.0.0.1:0")
	defer target.Close()
	if _, err := c.Dial("tcp", target.Addr().String()); err == nil || !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("-L with a certificate without permit-port-forwarding: %v", err)
	}
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatal("-R with a certificate without permit-port-forwarding accepted")
	}
	// With it: both.
	fwd := f.mustDial(certSigner("frank", now.Add(-time.Hour), now.Add(time.Hour), "permit-port-forwarding"))
	conn, err := fwd.Dial("tcp", target.Addr().String())
	if err != nil {
		t.Fatalf("-L with permit-port-forwarding: %v", err)
	}
	_ = conn.Close()
	ln, err := fwd.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("-R with permit-port-forwarding: %v", err)
	}
	_ = ln.Close()

	if _, _, err := f.dial(certSigner("dave", now.Add(-2*time.Hour), now.Add(-time.Hour))); err == nil {
		t.Fatal("an expired certificate was accepted")
	}
	other := newSigner(t)
	cert := &gossh.Certificate{Key: other.PublicKey(), KeyId: "eve", CertType: gossh.UserCert, ValidBefore: gossh.CertTimeInfinity}
	_ = cert.SignCert(rand.Reader, newSigner(t)) // an unknown CA
	s, _ := gossh.NewCertSigner(cert, other)
	if _, _, err := f.dial(s); err == nil {
		t.Fatal("a certificate of an unknown authority was accepted")
	}
}

func TestAuthorizedKeysReloadAndRestrict(t *testing.T) {
	// Forwarding on loopback allowed both ways, so only the key's
	// restriction can refuse it.
	f := newFixture(t, func(_ string, s map[string]any) {
		s["forward_rules"] = []map[string]any{{"target": "127.0.0.1:*", "action": "allow"}}
	})
	carol := newSigner(t)
	if _, _, err := f.dial(carol); err == nil {
		t.Fatal("carol authenticated before her key was added")
	}
	// Added to alice's file with restrict: same identity, no forwarding.
	path := filepath.Join(f.dir, "alice_keys")
	writeAuthorizedKeys(t, path, string(gossh.MarshalAuthorizedKey(f.alice.PublicKey())),
		"restrict "+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(carol.PublicKey()))),
		`command="/bin/date" `+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(f.bob.PublicKey()))))
	later := time.Now().Add(2 * time.Second)
	_ = os.Chtimes(path, later, later)
	c, _, err := f.dial(carol)
	if err != nil {
		t.Fatalf("carol after the file changed: %v", err)
	}
	if out, _, _ := run(t, c, "echo ok", nil); out != "ok\n" {
		t.Fatalf("carol exec: %q", out)
	}
	if _, err := c.Dial("tcp", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "administratively prohibited") {
		t.Fatalf("restrict did not remove forwarding: %v", err)
	}
	if _, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		t.Fatal("restrict did not remove remote forwarding")
	}
	// alice's own key (same file, no restriction) may forward.
	ln, err := f.mustDial(f.alice).Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("alice -R: %v", err)
	}
	_ = ln.Close()
	// An option the plugin cannot enforce (command=) disables the line:
	// bob still authenticates, but only through his own file (no scopes).
	if out, _, status := run2(f.mustDial(f.bob), "echo hi"); status != 127 {
		t.Fatalf("bob gained alice's scopes through a command= line: %q %d", out, status)
	}
}

func TestSessionsOperation(t *testing.T) {
	f := newFixture(t, nil)
	admin := &sdk.Identity{ID: "op", Scopes: []string{"admin"}}
	c := f.mustDial(f.alice)
	// The client's handshake can finish a moment before the server has
	// recorded the session: poll briefly.
	var list []map[string]any
	var out json.RawMessage
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		out, err = f.h.Call(context.Background(), "ssh/sessions", nil, admin)
		if err != nil {
			t.Fatal(err)
		}
		list = nil
		if err := json.Unmarshal(out, &list); err == nil && len(list) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh/sessions never listed the session: %s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if list[0]["id"] != "alice" || list[0]["auth"] != "authorized_keys" {
		t.Fatalf("ssh/sessions: %s", out)
	}
	_ = c.Close()
	var se *sdk.Error
	if _, err := f.h.Call(context.Background(), "ssh/nope", nil, admin); !errors.As(err, &se) || se.Code != sdk.CodeNotFound {
		t.Fatalf("unknown operation: %v", err)
	}
	// Not an admin: the node refuses before the plugin runs.
	if _, err := f.h.Call(context.Background(), "ssh/sessions", nil, &sdk.Identity{ID: "x"}); !errors.As(err, &se) || se.Code != sdk.CodeForbidden {
		t.Fatalf("ssh/sessions without admin: %v", err)
	}
}

// startRunning starts program (an allow-listed "sleep N" with an N no
// other test uses) on s and returns once its process runs.
func startRunning(t *testing.T, s *gossh.Session, program string) {
	t.Helper()
	if err := s.Start(program); err != nil {
		t.Fatal(err)
	}
	waitFor(t, program+" to run", func() bool {
		b, _ := exec.Command("pgrep", "-f", "/"+program+"$").Output()
		return len(b) > 0
	})
}
