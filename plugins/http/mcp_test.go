package httpplugin

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
)

func TestMCPToolNames(t *testing.T) {
	for op, want := range map[string]string{
		"echo/say":           "echo.say",
		"services/list":      "services.list",
		"svc/v1.get":         "svc.v1_DOT_get",
		"a_b/c-d/e":          "a_b.c-d.e",
		"dns/zone..x/y_dot_": "dns.zone_DOT__DOT_x.y_dot_",
	} {
		if got := mcpToolName(op); got != want {
			t.Errorf("mcpToolName(%q) = %q, want %q", op, got, want)
		}
		if back, ok := mcpToolOp(want); !ok || back != op {
			t.Errorf("mcpToolOp(%q) = %q, %v, want %q", want, back, ok, op)
		}
	}
	for _, name := range []string{"search", "schema", "Echo.say", "echo/say", "echo.say_DOT", "echo._DOT_", "echo.s ay", ""} {
		if op, ok := mcpToolOp(name); ok && mcpToolName(op) != name {
			t.Errorf("mcpToolOp(%q) = %q, which does not map back", name, op)
		} else if ok && (name == "search" || name == "schema" || name == "Echo.say" || name == "echo/say") {
			t.Errorf("mcpToolOp(%q) = %q, want no operation", name, op)
		}
	}
}

func TestMCPToolSchema(t *testing.T) {
	for _, c := range []struct {
		in      string
		sub     bool
		want    string
		wrapped bool
	}{
		{"", false, `{"type":"object"}`, false},
		{`{"type":["object","null"],"additionalProperties":false}`, false, `{"additionalProperties":false,"type":"object"}`, false},
		{`{"type":"object","required":["a"]}`, false, `{"required":["a"],"type":"object"}`, false},
		{`{"type":"string"}`, false, `{"additionalProperties":false,"properties":{"input":{"type":"string"}},"type":"object"}`, true},
		{`{"$schema":"https://json-schema.org/draft/2020-12/schema","$defs":{"n":{"type":"integer"}},"type":"array","items":{"$ref":"#/$defs/n"}}`, false,
			`{"$defs":{"n":{"type":"integer"}},"$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"properties":{"input":{"items":{"$ref":"#/$defs/n"},"type":"array"}},"type":"object"}`, true},
		{`{"type":"object"}`, true, `{"additionalProperties":false,"properties":{"input":{"type":"object"},"max_items":{"description":"stop after this many items (default 100)","maximum":1000,"minimum":1,"type":"integer"}},"type":"object"}`, true},
	} {
		s, wrapped, _ := mcpToolSchema(json.RawMessage(c.in), c.sub)
		b, _ := json.Marshal(s)
		if string(b) != c.want || wrapped != c.wrapped {
			t.Errorf("mcpToolSchema(%s, %v) = %s, %v\nwant %s, %v", c.in, c.sub, b, wrapped, c.want, c.wrapped)
		}
	}
}

func TestMCPOrigin(t *testing.T) {
	p := &Plugin{}
	cfg, err := parseSettings(json.RawMessage(`{"allowed_origins":["https://console.example:443"]}`))
	if err != nil {
		t.Fatal(err)
	}
	p.cfg.Store(cfg)
	for _, c := range []struct {
		host, origin string
		ok           bool
	}{
		{"127.0.0.1:8443", "", true},
		{"127.0.0.1:8443", "https://127.0.0.1:8443", true},
		{"node.example", "https://NODE.example:443", true},
		{"node.example:443", "https://node.example", true},
		{"[::1]:443", "https://[::1]", true},
		{"node.example", "https://console.example", true},
		{"127.0.0.1:8443", "http://127.0.0.1:8443", false},
		{"127.0.0.1:8443", "https://127.0.0.1:9443", false},
		{"node.example", "https://evil.example", false},
		{"node.example", "null", false},
		{"node.example", "https://node.example/path", false},
	} {
		r := httptest.NewRequest("POST", "https://"+c.host+"/mcp", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if got := p.originAllowed(r); got != c.ok {
			t.Errorf("Host %s, Origin %q: allowed %v, want %v", c.host, c.origin, got, c.ok)
		}
	}
}
