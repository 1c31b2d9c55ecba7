package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	for _, want := range []string{"Host mynode", "User ops", "ProxyCommand ", "pipe --alpn alknet/ssh --peer " + e.srv.FP + " %h:%p", "HostKeyAlias mynode", "StrictHostKeyChecking yes"} {
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

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
