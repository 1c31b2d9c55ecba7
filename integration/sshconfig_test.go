package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestSSHConfigBlock: `alknet ssh-config` prints a Host block (ProxyCommand
// with the pinned node, the host key recorded for strict checking) that the
// stock ssh uses as is.
func TestSSHConfigBlock(t *testing.T) {
	e := startSSH(t, "")
	r := e.client.run("", "ssh-config", "--peer", e.srv.FP, "--name", "mynode", "--user", "ops", e.srv.Addr)
	if r.code != 0 {
		t.Fatalf("ssh-config: %+v", r)
	}
	for _, want := range []string{"Host mynode", "User ops", "ProxyCommand ", "pipe --alpn alknet/ssh --peer " + e.srv.FP + " %h %p", "HostKeyAlias mynode", "StrictHostKeyChecking yes"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("block lacks %q:\n%s", want, r.stdout)
		}
	}
	cfg := writeFile(t, filepath.Join(t.TempDir(), "ssh_config"), r.stdout, 0o600)
	out, err := exec.Command("ssh", "-F", cfg, "-i", e.keyFile, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "mynode", "echo", "via", "config").CombinedOutput()
	if err != nil || string(out) != "via config\n" {
		t.Fatalf("ssh with the generated block: %v %s", err, out)
	}
	// The recorded key is the vault-derived one the test wrote itself.
	kh := filepath.Join(e.client.dataDir, "ssh_known_hosts")
	got := strings.Fields(readFile(t, kh))
	want := strings.Fields(readFile(t, e.knownHosts))
	if len(got) != 3 || len(want) != 3 || got[2] != want[2] {
		t.Fatalf("recorded host key %v, vault key %v", got, want)
	}
}

// TestSSHConfigIPv6: for a node on an IPv6 address the block's
// ProxyCommand gets the bare address ("HostName ::1") and the port as two
// words, and the stock ssh goes through it.
func TestSSHConfigIPv6(t *testing.T) {
	e := startSSH(t, "")
	// The same node, now on IPv6 loopback.
	if code := e.srv.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	e.srv = startServe(t, e.node, "--config", e.cfgPath, "--listen", "[::1]:0")
	if !strings.HasPrefix(e.srv.Addr, "[::1]:") {
		t.Fatalf("node address %q, want [::1]:port", e.srv.Addr)
	}
	_, port, _ := net.SplitHostPort(e.srv.Addr)
	r := e.client.run("", "ssh-config", "--peer", e.srv.FP, "--name", "v6node", "--user", "ops", e.srv.Addr)
	if r.code != 0 {
		t.Fatalf("ssh-config: %+v", r)
	}
	for _, want := range []string{"HostName ::1\n", "Port " + port + "\n", " %h %p\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("block lacks %q:\n%s", want, r.stdout)
		}
	}
	cfg := writeFile(t, filepath.Join(t.TempDir(), "ssh_config"), r.stdout, 0o600)
	out, err := exec.Command("ssh", "-F", cfg, "-i", e.keyFile, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "v6node", "uptime").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "load average") {
		t.Fatalf("ssh over IPv6 with the generated block: %v %s", err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
