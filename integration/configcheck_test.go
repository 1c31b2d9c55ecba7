package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// `alknet config check` asks each plugin whether it accepts its settings,
// as it would at start: a program in exec_allow that is not installed and
// a value the plugin's schema refuses both fail the check, naming the key;
// good settings pass.
func TestConfigCheckValidatesPluginSettings(t *testing.T) {
	node := newCLI(t, nil)
	dir := t.TempDir()
	cases := []struct {
		body string
		want []string // in the error line; nil: the check passes
	}{
		{"[plugins.ssh]\nexec_allow = [\"uptime\", \"alknet-no-such-program\"]\n", []string{"plugins.ssh", "exec_allow", "alknet-no-such-program"}},
		{"[plugins.ssh]\nmax_sessions = 0\n", []string{"plugins.ssh", "max_sessions"}},
		{"[plugins.ssh]\nno_such_key = 1\n", []string{"plugins.ssh", "no_such_key"}},
		{"[plugins.ssh]\nexec_allow = [\"uptime\"]\nmax_sessions = 4\n", nil},
		{"[plugins.ssh]\ndisabled = true\nexec_allow = [\"alknet-no-such-program\"]\n", nil},
		{"[[call.imports]]\nname = \"b\"\ntarget = \"nofingerprint@127.0.0.1:4433\"\n", []string{"call.imports[0].target", "FINGERPRINT@HOST"}},
		{"[[call.imports]]\nname = \"b\"\ntarget = \"ed25519:00@127.0.0.1:4433\"\noperations = [\"echo/*\"]\n", nil},
	}
	for i, c := range cases {
		path := writeFile(t, filepath.Join(dir, "c"+string(rune('a'+i))+".toml"), c.body, 0o600)
		if c.want == nil {
			if out := node.ok("", "config", "check", path); !strings.Contains(out, path+": ok") {
				t.Errorf("%q: %s", c.body, out)
			}
			continue
		}
		r := node.run("", "config", "check", path)
		if r.code != 1 {
			t.Errorf("%q: exit %d, want 1\n%s%s", c.body, r.code, r.stdout, r.stderr)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%q: the error does not name %q:\n%s", c.body, w, r.stderr)
			}
		}
	}
}

// The README's SSH configuration passes `config check` and starts the ssh
// plugin on this machine as written (its plain listener moved to a free
// port).
func TestREADMESSHExampleStartsThePlugin(t *testing.T) {
	body := strings.ReplaceAll(readmeTOML(t, "### SSH with the stock OpenSSH client"), "127.0.0.1:2222", "127.0.0.1:0")
	node := newCLI(t, nil)
	cfg := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), body, 0o600)
	node.ok("", "config", "check", cfg)
	srv := startServe(t, node, "--config", cfg)
	waitPlugin(t, operatorConn(t, srv), "ssh", func(p pluginStatus) bool { return p.State == "ready" })
}

// The README's [[call.imports]] example passes `config check` as written.
func TestREADMEImportExampleChecks(t *testing.T) {
	body := readmeTOML(t, "A node serves another node's operations as its own")
	if !strings.Contains(body, "[[call.imports]]") {
		t.Fatalf("README's import example has no [[call.imports]]:\n%s", body)
	}
	node := newCLI(t, nil)
	node.ok("", "config", "check", writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), body, 0o600))
}

// readmeTOML is the first toml block of README.md after the text marker.
func readmeTOML(t *testing.T, marker string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sec := string(b)
	i := strings.Index(sec, marker)
	if i < 0 {
		t.Fatalf("README has no %q", marker)
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(sec[i:])
	if m == nil {
		t.Fatalf("README has no toml example after %q", marker)
	}
	return m[1]
}
