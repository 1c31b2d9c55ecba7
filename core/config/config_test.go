package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const sample = `
listen = "127.0.0.1:5000"
drain_timeout = "3s"

[tls]
mode = "raw_key"

[[listeners.plain]]
addr = "127.0.0.1:2222"
alpn = "alknet/ssh"

[limits]
max_connections_per_ip = 2

[[auth.peers]]
peer_id = "laptop"
fingerprints = ["ed25519:1111111111111111111111111111111111111111111111111111111111111111"]
scopes = ["admin"]

[[auth.peers]]
peer_id = "old"
enabled = false

[[auth.api_keys]]
prefix = "alk_abcd"
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["call:invoke"]
expires_at = 1900000000
`

func TestParseSample(t *testing.T) {
	c, err := Parse([]byte(sample), "toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:5000" || c.DrainTimeout != 3*time.Second || c.Limits.MaxConnectionsPerIP != 2 {
		t.Fatalf("%+v", c)
	}
	if c.Limits.MaxAuthAttempts != 5 || c.Limits.HandshakeTimeout != 5*time.Second || c.Limits.IdleTimeout != 30*time.Second || c.Limits.MaxStreamsPerConnection != 100 {
		t.Fatalf("defaults: %+v", c.Limits)
	}
	if len(c.Listeners.Plain) != 1 || c.Listeners.Plain[0].ALPN != "alknet/ssh" {
		t.Fatalf("listeners %+v", c.Listeners)
	}
	if len(c.Auth.Peers) != 2 || c.Auth.Peers[1].IsEnabled() || !c.Auth.Peers[0].IsEnabled() {
		t.Fatalf("peers %+v", c.Auth.Peers)
	}
	if len(c.Auth.APIKeys) != 1 || c.Auth.APIKeys[0].ExpiresAt != 1900000000 {
		t.Fatalf("keys %+v", c.Auth.APIKeys)
	}
	p, _ := c.Policy()
	if id := p.ResolveFingerprint(c.Auth.Peers[0].Fingerprints[0]); id == nil || !id.HasScope("admin") {
		t.Fatal("policy from config does not resolve")
	}
}

func TestBadConfigNamesTheKey(t *testing.T) {
	cases := map[string]string{
		`listne = "x:1"`: "listne",
		`[limits]` + "\n" + `max_conections_per_ip = 3`:                         "limits.max_conections_per_ip",
		`[[auth.peers]]` + "\n" + `peer_idd = "x"`:                              "auth.peers",
		`[[auth.peers]]` + "\npeer_id = \"a\"\n[[auth.peers]]\npeer_id = \"a\"": "auth.peers[1].peer_id",
		`listen = "nope"`:                                     "listen",
		`[tls]` + "\n" + `mode = "rsa"`:                       "tls.mode",
		`[tls]` + "\n" + `mode = "x509"`:                      "tls.cert_file",
		`[tls]` + "\n" + `mode = "acme"`:                      "tls.acme.domains",
		`[limits]` + "\n" + `max_connections_per_ip = -1`:     "limits.max_connections_per_ip",
		`drain_timeout = "0s"`:                                "drain_timeout",
		`[[listeners.plain]]` + "\n" + `addr = "127.0.0.1:1"`: "listeners.plain[0].alpn",
		"[[call.imports]]\nname = \"b\"\ntargte = \"x\"":      "call.imports",
		"[[call.imports]]\nname = \"B/x\"\ntarget = \"x:1\"":  "call.imports[0].name",
		"[[call.imports]]\nname = \"b\"":                      "call.imports[0].target",
		"[[call.imports]]\nname = \"b\"\ntarget = \"x:1\"\n[[call.imports]]\nname = \"b\"\ntarget = \"y:1\"": "call.imports[1].name",
		"[[call.imports]]\nname = \"b\"\ntarget = \"x:1\"\noperations = [\"[\"]":                             "call.imports[0].operations",
	}
	for in, key := range cases {
		_, err := Parse([]byte(in), "toml")
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: error %v does not name %s", in, err, key)
		}
	}
}

func TestCallImports(t *testing.T) {
	c, err := Parse([]byte("[[call.imports]]\nname = \"b\"\ntarget = \"ed25519:00@127.0.0.1:4433\"\noperations = [\"echo/*\"]\n"), "toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Call.Imports) != 1 || c.Call.Imports[0].Operations[0] != "echo/*" {
		t.Fatalf("%+v", c.Call.Imports)
	}
	if got := fmt.Sprint(c.Call.Imports[0].ImportScopes()); got != "[peer:b admin]" {
		t.Fatalf("default scopes %s", got)
	}
	if got := fmt.Sprint(CallImport{Name: "b", Scopes: []string{"ops", "admin"}}.ImportScopes()); got != "[ops admin]" {
		t.Fatalf("scopes %s", got)
	}
}

func TestEnvironmentOverridesFile(t *testing.T) {
	t.Setenv("ALKNET_LISTEN", "127.0.0.1:6000")
	t.Setenv("ALKNET_LIMITS_MAX_CONNECTIONS_PER_IP", "7")
	v := NewViper()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader(sample)); err != nil {
		t.Fatal(err)
	}
	c, err := FromViper(v)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:6000" || c.Limits.MaxConnectionsPerIP != 7 {
		t.Fatalf("env not applied: %s %d", c.Listen, c.Limits.MaxConnectionsPerIP)
	}
}

func TestStaticChanges(t *testing.T) {
	a, _ := Parse([]byte(sample), "toml")
	b, _ := Parse([]byte(strings.Replace(sample, "5000", "5001", 1)), "toml")
	if got := StaticChanges(a, b); len(got) != 1 || got[0] != "listen" {
		t.Fatalf("%v", got)
	}
	c, _ := Parse([]byte(strings.Replace(sample, "max_connections_per_ip = 2", "max_connections_per_ip = 3", 1)), "toml")
	if got := StaticChanges(a, c); len(got) != 0 {
		t.Fatalf("limits are dynamic: %v", got)
	}
	d, _ := Parse([]byte(strings.Replace(sample, "[limits]", "[limits]\nidle_timeout = \"7s\"", 1)), "toml")
	if got := StaticChanges(a, d); len(got) != 1 || got[0] != "limits.idle_timeout" {
		t.Fatalf("the QUIC idle timeout needs a restart: %v", got)
	}
}

// A reload applies exactly the dynamic keys: a file that changes a static
// key and a plugin's settings at once gets the settings applied and the
// static key kept.
func TestApplyDynamic(t *testing.T) {
	a, _ := Parse([]byte(sample), "toml")
	next := strings.Replace(sample, "5000", "5001", 1) + "\n[plugins]\nrequire_signature = true\n[plugins.ssh]\nexec_allow = [\"uptime\"]\n"
	next = strings.Replace(next, "max_connections_per_ip = 2", "max_connections_per_ip = 9", 1)
	b, err := Parse([]byte(next), "toml")
	if err != nil {
		t.Fatal(err)
	}
	got := ApplyDynamic(a, b)
	if got.Listen != "127.0.0.1:5000" {
		t.Fatalf("static listen changed by a reload: %s", got.Listen)
	}
	if got.Limits.MaxConnectionsPerIP != 9 || !got.Plugins.RequireSignature || got.Plugins.Plugin("ssh").Settings["exec_allow"] == nil {
		t.Fatalf("dynamic settings not applied: %+v %+v", got.Limits, got.Plugins.Plugin("ssh"))
	}
	if a.Limits.MaxConnectionsPerIP != 2 {
		t.Fatal("ApplyDynamic changed the running config in place")
	}
}

func TestDocsCoverEveryKey(t *testing.T) {
	docs := map[string]KeyDoc{}
	for _, d := range Docs() {
		if d.Doc == "" {
			t.Errorf("%s has no doc", d.Key)
		}
		if d.Type == "" {
			t.Errorf("%s has no type", d.Key)
		}
		docs[d.Key] = d
	}
	for key, dynamic := range map[string]bool{"listen": false, "limits.max_connections_per_ip": true, "limits.idle_timeout": false,
		"auth.peers": true, "plugins.require_signature": true, "plugins.mtls": false, "plugins.<name>.settings": true, "tls.mode": false} {
		if d, ok := docs[key]; !ok || d.Dynamic != dynamic {
			t.Errorf("%s: documented %+v, want dynamic=%v", key, d, dynamic)
		}
	}
	if docs["limits.max_connections_per_ip"].Default != "100" {
		t.Errorf("default of limits.max_connections_per_ip: %q", docs["limits.max_connections_per_ip"].Default)
	}
}

// FuzzParseConfig: config files are operator input but also arrive through
// reloads; the parser never panics and anything it accepts validates.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(sample), uint8(0))
	f.Add([]byte(`{"listen":"[::1]:1","auth":{"peers":[{"peer_id":"a"}]}}`), uint8(1))
	f.Add([]byte("listen: \"[::1]:1\"\nlimits:\n  idle_timeout: 1s\n"), uint8(2))
	f.Add([]byte(`[[auth.peers]]`), uint8(0))
	formats := []string{"toml", "json", "yaml"}
	f.Fuzz(func(t *testing.T, b []byte, fi uint8) {
		c, err := Parse(b, formats[int(fi)%len(formats)])
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v", err)
		}
	})
}

func TestPluginSettingsDirectlyUnderTheTable(t *testing.T) {
	c, err := Parse([]byte(`
[plugins.ssh]
version = "0.1.0"
exec_allow = ["uptime"]
[plugins.ssh.settings]
max_auth_attempts = 3
[plugins.ssh.capabilities]
ssh_host_key = "vault:ed25519:m/74'/0'/1'/0'"
`), "toml")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Plugins.Plugin("ssh")
	if p.Version != "0.1.0" || p.Settings["max_auth_attempts"] == nil || p.Settings["exec_allow"] == nil || p.Capabilities["ssh_host_key"] == "" {
		t.Fatalf("%+v", p)
	}
	if _, err := Parse([]byte("[plugins.ssh]\nx = 1\n[plugins.ssh.settings]\nx = 2\n"), "toml"); err == nil || !strings.Contains(err.Error(), "plugins.ssh.x") {
		t.Fatalf("duplicate setting: %v", err)
	}
	if _, err := Parse([]byte("[plugins.ssh.capabilities]\nk = \"env:SECRET\"\n"), "toml"); err == nil || !strings.Contains(err.Error(), "plugins.ssh.capabilities.k") {
		t.Fatalf("bad grant: %v", err)
	}
}

// [plugins.<name>.limits]: defaults for what is not given, sizes with
// units, and bad values refused naming the key.
func TestPluginLimits(t *testing.T) {
	c, err := Parse([]byte(`
[plugins.hog.limits]
memory = "512MiB"
cpu = 0.5
[plugins.big.limits]
memory = 2147483648
open_files = 100
processes = 32
cpu = 2
`), "toml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Plugins.Plugin("hog").ResourceLimits(); got != (ResourceLimits{MemoryBytes: 512 << 20, OpenFiles: 4096, Processes: 256, CPU: 0.5}) {
		t.Fatalf("hog: %+v", got)
	}
	if got := c.Plugins.Plugin("big").ResourceLimits(); got != (ResourceLimits{MemoryBytes: 2 << 30, OpenFiles: 100, Processes: 32, CPU: 2}) {
		t.Fatalf("big: %+v", got)
	}
	if got := c.Plugins.Plugin("unconfigured").ResourceLimits(); got != (ResourceLimits{MemoryBytes: 1 << 30, OpenFiles: 4096, Processes: 256, CPU: 1}) {
		t.Fatalf("defaults: %+v", got)
	}
	if p := c.Plugins.Plugin("hog"); len(p.Settings) != 0 {
		t.Fatalf("limits ended up in the plugin's settings: %v", p.Settings)
	}
	for in, want := range map[string]string{
		"memory = \"lots\"": `plugins.x.limits.memory: "lots" is not a size`,
		"memory = \"1MiB\"": "plugins.x.limits.memory: \"1MiB\" is below the 16MiB",
		"cpu = 0":           "plugins.x.limits.cpu: 0 is out of range",
		"cpu = -1":          "plugins.x.limits.cpu",
		"open_files = 10":   "plugins.x.limits.open_files: 10 is out of range",
		"processes = 1":     "plugins.x.limits.processes: 1 is out of range",
		"memroy = \"1GiB\"": "plugins.x.limits.memroy: unknown limit",
		"cpu = \"a lot\"":   "plugins.x",
	} {
		if _, err := Parse([]byte("[plugins.x.limits]\n"+in+"\n"), "toml"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", in, err, want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1073741824": 1 << 30, "512MiB": 512 << 20, "1GiB": 1 << 30, "1.5GiB": 3 << 29, "64 MiB": 64 << 20,
		"2gib": 2 << 30, "100MB": 100_000_000, "1G": 1 << 30, "4096KiB": 4 << 20} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1 XB", "-1GiB", "1e3"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// plugins.user takes a restart; the limits are documented with their
// defaults and apply on a reload (by restarting the plugin).
func TestPluginContainmentKeysDocumented(t *testing.T) {
	docs := map[string]KeyDoc{}
	for _, d := range Docs() {
		docs[d.Key] = d
	}
	for key, def := range map[string]string{"plugins.<name>.limits.memory": "1GiB", "plugins.<name>.limits.open_files": "4096",
		"plugins.<name>.limits.processes": "256", "plugins.<name>.limits.cpu": "1.0"} {
		d, ok := docs[key]
		if !ok || !d.Dynamic || d.Default != def || !strings.Contains(d.Doc, "restarts the plugin") {
			t.Errorf("%s: %+v", key, d)
		}
	}
	if d, ok := docs["plugins.user"]; !ok || d.Dynamic {
		t.Errorf("plugins.user: %+v", d)
	}
	a, _ := Parse([]byte(sample), "toml")
	b, err := Parse([]byte(sample+"\n[plugins]\nuser = \"alknet-plugins\"\n"), "toml")
	if err != nil {
		t.Fatal(err)
	}
	if got := StaticChanges(a, b); len(got) != 1 || got[0] != "plugins.user" {
		t.Fatalf("static changes: %v", got)
	}
}
