package pluginhost

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"alknet.dev/alknet/proto/pluginrpc"
)

const goodManifest = `{"name":"echo","version":"0.1.0","protocol_versions":[1,2],"alpns":["alknet/echo"],
"operations":[{"name":"/echo/say","op_type":"query","remote_safe":true,"input_schema":{"type":"object","properties":{"n":{"type":"integer","maximum":5}}}},{"name":"echo/ticks","op_type":"subscription"}],
"capabilities":[{"name":"k","required":true}]}`

func TestManifestRoundTrip(t *testing.T) {
	m, err := ParseManifest([]byte(goodManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "echo" || m.Operations[0].Name != "echo/say" || !m.Capabilities[0].Required {
		t.Fatalf("%+v", m)
	}
	if !slices.Equal(m.Namespaces, []string{"echo"}) {
		t.Fatalf("default namespaces: %v", m.Namespaces)
	}
	if got := string(schemaJSON(m.Operations[0].InputSchema)); !strings.Contains(got, `"maximum":5`) {
		t.Fatalf("input schema: %s", got)
	}
	if v, ok := Speaks(m, []int{1, 2}); !ok || v != 2 {
		t.Fatalf("speaks %d %v", v, ok)
	}
	if _, ok := Speaks(m, []int{99}); ok {
		t.Fatal("speaks a protocol it does not list")
	}
	// The JSON form round-trips: what describe prints, the core reads.
	b, err := pluginrpc.MarshalManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseManifest(b)
	if err != nil || !proto.Equal(again, m) {
		t.Fatalf("round trip: %v\n%s", err, b)
	}
}

// Operations must stay inside the plugin's own namespaces, none of which
// may be the core's; the error names both owners.
func TestManifestNamespaces(t *testing.T) {
	for name, c := range map[string]struct{ manifest, want string }{
		"core op":       {`{"name":"evil","version":"1.0.0","protocol_versions":[2],"operations":[{"name":"node/info","op_type":"query"}]}`, `plugin evil declares operation node/info outside its namespaces [evil] (namespace "node" is owned by the core)`},
		"services":      {`{"name":"evil","version":"1.0.0","protocol_versions":[2],"operations":[{"name":"services/list","op_type":"query"}]}`, "owned by the core"},
		"other ns":      {`{"name":"evil","version":"1.0.0","protocol_versions":[2],"operations":[{"name":"echo/say","op_type":"query"}]}`, "outside its namespaces [evil]"},
		"core ns claim": {`{"name":"evil","version":"1.0.0","protocol_versions":[2],"namespaces":["node"]}`, `plugin evil declares namespace "node", which the core owns`},
	} {
		_, err := ParseManifest([]byte(c.manifest))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	m, err := ParseManifest([]byte(`{"name":"multi","version":"1.0.0","protocol_versions":[2],"namespaces":["a","b"],"operations":[{"name":"a/x","op_type":"query"},{"name":"b/y","op_type":"mutation"}]}`))
	if err != nil || len(m.Operations) != 2 {
		t.Fatalf("two declared namespaces: %v", err)
	}
}

func TestManifestRejects(t *testing.T) {
	for name, bad := range map[string]string{
		"name":      `{"name":"Echo","version":"1.0.0","protocol_versions":[1]}`,
		"version":   `{"name":"echo","version":"1.0","protocol_versions":[1]}`,
		"protocols": `{"name":"echo","version":"1.0.0","protocol_versions":[]}`,
		"alpn":      `{"name":"echo","version":"1.0.0","protocol_versions":[1],"alpns":["acme-tls/1"]}`,
		"op name":   `{"name":"echo","version":"1.0.0","protocol_versions":[1],"operations":[{"name":"say","op_type":"query"}]}`,
		"op type":   `{"name":"echo","version":"1.0.0","protocol_versions":[1],"operations":[{"name":"echo/say","op_type":"call"}]}`,
		"dup op":    `{"name":"echo","version":"1.0.0","protocol_versions":[1],"operations":[{"name":"echo/a","op_type":"query"},{"name":"/echo/a","op_type":"query"}]}`,
		"schema":    `{"name":"echo","version":"1.0.0","protocol_versions":[1],"operations":[{"name":"echo/a","op_type":"query","input_schema":{"type":7}}]}`,
		"unknown":   `{"name":"echo","version":"1.0.0","protocol_versions":[1],"surprise":true}`,
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
			if strings.HasPrefix(op.Name, "/") || !slices.Contains(m.Namespaces, namespaceOf(op.Name)) || slices.Contains(CoreNamespaces, namespaceOf(op.Name)) {
				t.Fatalf("accepted operation %q (namespaces %v)", op.Name, m.Namespaces)
			}
		}
	})
}
