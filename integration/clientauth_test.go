package integration

import (
	"path/filepath"
	"strings"
	"testing"
)

// A caller that presents a token gets an error when the node does not
// accept it — a wrong token or a revoked key exits 1 with FORBIDDEN — never
// a silent anonymous call; the right token works.
func TestCallWithRejectedTokenFails(t *testing.T) {
	node := newCLI(t, nil)
	good := adminToken(t, node, "admin")
	revoked := adminToken(t, node, "admin")
	srv := startServe(t, node)
	client := newCLI(t, nil)
	dir := t.TempDir()
	tokenFile := func(name, tok string) string {
		return writeFile(t, filepath.Join(dir, name), tok+"\n", 0o600)
	}
	call := func(file string) result {
		return client.run("", "call", "--peer", srv.FP, "--token-file", file, srv.Addr, "/node/info")
	}
	if r := call(tokenFile("good", good)); r.code != 0 {
		t.Fatalf("the right token: exit %d\n%s", r.code, r.stderr)
	}
	wrong := tokenFile("wrong", "alk_"+strings.Repeat("x", 40))
	node.ok("", "apikey", "revoke", revoked[:8])
	srv.waitLog("configuration reloaded")
	for name, file := range map[string]string{"wrong": wrong, "revoked": tokenFile("revoked", revoked)} {
		r := call(file)
		if r.code != 1 || !strings.Contains(r.stderr, "FORBIDDEN") || !strings.Contains(r.stderr, "token not accepted") {
			t.Errorf("%s token: exit %d, want 1 with FORBIDDEN token not accepted\nstdout: %s\nstderr: %s", name, r.code, r.stdout, r.stderr)
		}
	}
}

// A client whose own vault is sealed, run without a terminal or a
// passphrase file, is told that its identity was not presented and how to
// present it.
func TestSealedClientVaultIsSaid(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	client := newCLI(t, nil)
	client.ok("", "init", "--show-mnemonic-once")
	pass := writeFile(t, filepath.Join(t.TempDir(), "pass"), "correct horse battery staple\n", 0o600)
	client.ok("", "--vault-passphrase-file", pass, "vault", "seal")
	r := client.run("", "call", "--peer", srv.FP, srv.Addr, "/node/info")
	if r.code != 0 {
		t.Fatalf("anonymous call: exit %d\n%s", r.code, r.stderr)
	}
	for _, w := range []string{"vault is sealed", "identity is not presented", "--vault-passphrase-file"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr does not say %q:\n%s", w, r.stderr)
		}
	}
	if r := client.run("", "--vault-passphrase-file", pass, "call", "--peer", srv.FP, srv.Addr, "/node/info"); r.code != 0 || strings.Contains(r.stderr, "not presented") {
		t.Errorf("with the passphrase file: exit %d\n%s", r.code, r.stderr)
	}
}
