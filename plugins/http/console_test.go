package httpplugin

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// consoleMux is the plugin's console and decoy routes with settings raw.
func consoleMux(t *testing.T, raw string) http.Handler {
	t.Helper()
	c, err := parseSettings(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{}
	p.cfg.Store(c)
	mux := http.NewServeMux()
	p.consoleRoutes(mux)
	mux.HandleFunc("/", p.decoy)
	return mux
}

func consoleGet(h http.Handler, method, path string) *http.Response {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(method, "https://node.example:4433"+path, nil)
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestConsoleServesEmbeddedFilesWithCSP(t *testing.T) {
	h := consoleMux(t, `{}`)
	for path, want := range map[string]string{
		"/":                    "text/html",
		"/console/console.js":  "text/javascript",
		"/console/alknet.js":   "text/javascript",
		"/console/console.css": "text/css",
	} {
		resp := consoleGet(h, http.MethodGet, path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), want) || len(body) == 0 {
			t.Fatalf("GET %s: %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, d := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self' wss://node.example:4433", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, d) {
				t.Fatalf("GET %s: CSP %q lacks %q", path, csp, d)
			}
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("ETag") == "" {
			t.Fatalf("GET %s: headers %v", path, resp.Header)
		}
	}
	// Nothing outside the node: no URL with a scheme in the page's files.
	for name, a := range consoleAssets {
		for _, s := range []string{"http://", "https://", "//cdn", "@import"} {
			if strings.Contains(string(a.body), s) {
				t.Fatalf("%s mentions %q", name, s)
			}
		}
	}
}

func TestConsoleOtherPathsAndDisabledGoToDecoy(t *testing.T) {
	h := consoleMux(t, `{}`)
	for _, c := range []struct{ method, path string }{
		{http.MethodPost, "/"}, {http.MethodGet, "/console"}, {http.MethodGet, "/console/"},
		{http.MethodGet, "/console/nope.js"}, {http.MethodGet, "/console/x/console.js"}, {http.MethodGet, "/index.html"},
	} {
		resp := consoleGet(h, c.method, c.path)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Security-Policy") != "" {
			t.Fatalf("%s %s: %d %v, want the decoy's 404", c.method, c.path, resp.StatusCode, resp.Header)
		}
	}
	off := consoleMux(t, `{"console": false}`)
	for _, path := range []string{"/", "/console/console.js", "/console/alknet.js"} {
		if resp := consoleGet(off, http.MethodGet, path); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("console = false: GET %s is %d, want the decoy's 404", path, resp.StatusCode)
		}
	}
}

func TestConsoleCSPHost(t *testing.T) {
	for host, want := range map[string]bool{
		"node.example": true, "127.0.0.1:4433": true, "[::1]:4433": true,
		"": false, "x; script-src *": false, "a b": false, "evil'": false,
	} {
		if got := strings.Contains(consoleCSP(host), "wss://"); got != want {
			t.Fatalf("CSP for Host %q: %q", host, consoleCSP(host))
		}
	}
}
