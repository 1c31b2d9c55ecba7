package httpplugin

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testPlugin(t testing.TB, settings string) *Plugin {
	t.Helper()
	c, err := parseSettings(json.RawMessage(settings))
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{}
	p.cfg.Store(c)
	return p
}

func TestParseSettings(t *testing.T) {
	c, err := parseSettings(nil)
	if err != nil || c.maxBody != 4<<20 || c.headerTimeout != 10*time.Second || !c.console || !c.mcp || c.streamsPerID != 16 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = parseSettings(json.RawMessage(`{"max_body_bytes":"2MiB","header_timeout":"3s","allowed_origins":["https://Console.Example:8443"],"mcp":false}`))
	if err != nil || c.maxBody != 2<<20 || c.headerTimeout != 3*time.Second || c.mcp || len(c.origins) != 1 || c.origins[0] != "https://console.example:8443" {
		t.Fatalf("settings: %+v %v", c, err)
	}
	for bad, want := range map[string]string{
		`{"max_body":1}`:                                    `unknown field "max_body"`,
		`{"header_timeout":"soon"}`:                         `header_timeout = "soon"`,
		`{"allowed_origins":["console.example"]}`:           `allowed_origins entry "console.example"`,
		`{"decoy_dir":"/nonexistent/decoy"}`:                `decoy_dir "/nonexistent/decoy"`,
		`{"decoy_redirect":"/elsewhere"}`:                   `decoy_redirect "/elsewhere"`,
		`{"max_batch":-1}`:                                  `max_batch must not be negative`,
		`{"decoy_dir":"/tmp","decoy_redirect":"https://x"}`: `both set`,
	} {
		if _, err := parseSettings(json.RawMessage(bad)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", bad, err, want)
		}
	}
}

func TestReadJSONNamesThePosition(t *testing.T) {
	p := testPlugin(t, `{"max_body_bytes":64}`)
	for body, want := range map[string]string{
		`{"operation": "a",}`:        "line 1, column 19 (offset 18)",
		"{\n\"operation\": 5}":       "line 2, column 14 (offset 15): operation is number, want string",
		`{"operation": "a", "x": 1}`: `unknown field "x"`,
		``:                           "the body is empty",
		`{"operation": "a"`:          "the body ends inside a value",
		`{"operation": "a"} {}`:      "data after the JSON value",
		strings.Repeat(" ", 65):      "larger than this node accepts (64 bytes",
	} {
		rec := httptest.NewRecorder()
		var req callRequest
		if p.readJSON(rec, httptest.NewRequest("POST", "/call", strings.NewReader(body)), &req) {
			t.Errorf("%q was accepted", body)
			continue
		}
		var e errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.Contains(e.Message, want) {
			t.Errorf("%q: %d %s, want %q", body, rec.Code, rec.Body, want)
		}
	}
	rec := httptest.NewRecorder()
	r := httptest.NewRequest("POST", "/call", strings.NewReader("{}"))
	r.ContentLength = 1 << 30
	if p.readJSON(rec, r, &callRequest{}) || rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 1 GiB Content-Length: %d", rec.Code)
	}
}

func TestLimiter(t *testing.T) {
	var l limiter
	if !l.acquire("a", 2) || !l.acquire("a", 2) || l.acquire("a", 2) || !l.acquire("b", 2) {
		t.Fatal("bound of 2 per key")
	}
	l.release("a")
	if !l.acquire("a", 2) {
		t.Fatal("a released slot is free again")
	}
	l.release("a")
	l.release("a")
	l.release("b")
	if len(l.n) != 0 {
		t.Fatalf("keys left after every release: %v", l.n)
	}
}

// FuzzReadJSON: whatever the body, readJSON answers (no panic) and an
// error names a position inside the body.
func FuzzReadJSON(f *testing.F) {
	for _, s := range []string{`{"operation":"a","input":{"x":[1,2]}}`, `{"operation":`, "{\n\n,", `[{"operation":"a"}]`, "\x00\xff"} {
		f.Add([]byte(s))
	}
	p := testPlugin(f, `{"max_body_bytes":4096}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		var v []callRequest
		if p.readJSON(rec, httptest.NewRequest("POST", "/batch", bytes.NewReader(body)), &v) {
			return
		}
		if rec.Code != 400 && rec.Code != 413 {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
		var e errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != "INVALID_INPUT" {
			t.Fatalf("error body %q: %v", rec.Body, err)
		}
	})
}
