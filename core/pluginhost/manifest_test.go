package pluginhost

import (
	"strings"
	"testing"
)

const goodManifest = `{"name":"echo","version":"0.1.0","protocol_versions":[1],"alpns":["alknet/echo"],
"operations":[{"name":"/echo/say","op_type":"query","remote_safe":true},{"name":"echo/ticks","op_type":"subscription"}],
"capabilities":[{"name":"k","required":true}]}`

func TestManifestRoundTrip(t *testing.T) {
	m, err := ParseManifest([]byte(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "echo" || m.Operations[0].Name != "echo/say" || !m.Capabilities[0].Required {
		t.Fatalf("%+v", m)
	}
	if v, ok := m.Speaks([]int{1, 2}); !ok || v != 1 {
		t.Fatalf("speaks %d %v", v, ok)
	}
	if _, ok := m.Speaks([]int{99}); ok {
		t.Fatal("speaks a protocol it does not list")
	}
}

func TestManifestRejects(t *testing.T) {
	for name, bad := range map[string]string{
		"name":      `{"name":"Echo","version":"1.0.0","protocol_versions":[1]}`,
		"version":   `{"name":"echo","version":"1.0","protocol_versions":[1]}`,
		"protocols": `{"name":"echo","version":"1.0.0","protocol_versions":[]}`,
		"alpn":      `{"name":"echo","version":"1.0.0","protocol_versions":[1],"alpns":["acme-tls/1"]}`,
		"op name":   `{"name":"echo","version":"1.0.0","protocol_versions":[1],"operations":[{"name":"say","op_type":"query"}]}`,
		"op type":   `{"name":"echo","version":"1.0.0","protocol_versions":[1],"operations":[{"name":"e/say","op_type":"call"}]}`,
		"dup op":    `{"name":"echo","version":"1.0.0","protocol_versions":[1],"operations":[{"name":"e/a","op_type":"query"},{"name":"/e/a","op_type":"query"}]}`,
		"not json":  `nope`,
		"too large": `{"name":"` + strings.Repeat("a", maxManifest) + `"}`,
	} {
		if _, err := ParseManifest([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSemverOrderAndSelect(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"0.1.0", "0.2.0", -1}, {"1.10.0", "1.9.0", 1}, {"1.0.0-rc1", "1.0.0", -1}, {"2.0.0", "2.0.0", 0}} {
		if got := compareSemver(c.a, c.b); got != c.want {
			t.Errorf("compare %s %s = %d", c.a, c.b, got)
		}
	}
	l := &Lock{Plugins: map[string]*Locked{"echo": {Versions: map[string]*Installed{
		"0.1.0": {Version: "0.1.0"}, "0.10.0": {Version: "0.10.0"}, "0.2.0": {Version: "0.2.0"}}}}}
	if i, _ := l.Select("echo", ""); i.Version != "0.10.0" {
		t.Fatalf("highest: %s", i.Version)
	}
	l.Plugins["echo"].Active = "0.2.0"
	if i, _ := l.Select("echo", ""); i.Version != "0.2.0" {
		t.Fatalf("active: %s", i.Version)
	}
	if i, _ := l.Select("echo", "0.1.0"); i.Version != "0.1.0" {
		t.Fatalf("config pin: %s", i.Version)
	}
	if _, err := l.Select("echo", "9.9.9"); err == nil || !strings.Contains(err.Error(), "0.1.0, 0.2.0, 0.10.0") {
		t.Fatalf("missing pin: %v", err)
	}
	if _, err := l.Select("ssh", ""); err == nil || !strings.Contains(err.Error(), "not installed") {
		t.Fatalf("not installed: %v", err)
	}
}

// FuzzParseManifest: manifests come from binaries the core has not trusted
// yet; parsing never panics and anything accepted is well-formed.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(goodManifest))
	f.Add([]byte(`{"name":"a","version":"0.0.1-x+y","protocol_versions":[1,2]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		if !pluginName.MatchString(m.Name) || !semverRE.MatchString(m.Version) || len(m.ProtocolVersions) == 0 {
			t.Fatalf("accepted %+v", m)
		}
		for _, op := range m.Operations {
			if strings.HasPrefix(op.Name, "/") || !strings.Contains(op.Name, "/") {
				t.Fatalf("accepted operation %q", op.Name)
			}
		}
	})
}
