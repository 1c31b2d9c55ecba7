package integration

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// TestHTTPOpenAPI fetches /openapi.json from a real node over HTTP/2 as
// an anonymous caller and as an API key with echo:caps: each document is
// valid OpenAPI 3.1 and lists what that caller can call, and the
// /call/<name> and /subscribe/<name> routes it describes answer as it
// says.
func TestHTTPOpenAPI(t *testing.T) {
	n := startHTTPNode(t, "")
	capsToken := n.token("echo:caps")
	document := func(token string) (map[string]any, validator.Validator) {
		t.Helper()
		resp, b := n.do(http.MethodGet, "/openapi.json", token, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /openapi.json: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		doc, err := libopenapi.NewDocument(b)
		if err != nil {
			t.Fatalf("libopenapi cannot read the document: %v", err)
		}
		if _, err := doc.BuildV3Model(); err != nil {
			t.Fatalf("the document does not build: %v", err)
		}
		v, errs := validator.NewValidator(doc)
		if len(errs) > 0 {
			t.Fatalf("validator: %v", errs)
		}
		if ok, verrs := v.ValidateDocument(); !ok {
			for _, e := range verrs {
				t.Errorf("  %s", e.Error())
			}
			t.Fatal("the document is not valid OpenAPI 3.1")
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m["openapi"] != "3.1.0" {
			t.Fatalf("openapi = %v", m["openapi"])
		}
		return m, v
	}
	has := func(doc map[string]any, path string) bool {
		return doc["paths"].(map[string]any)[path] != nil
	}

	anon, _ := document("")
	for _, p := range []string{"/call", "/batch", "/search", "/schema", "/subscribe", "/healthz", "/openapi.json",
		"/call/echo/say", "/call/node/info", "/subscribe/echo/ticks"} {
		if !has(anon, p) {
			t.Errorf("anonymous: no path %s", p)
		}
	}
	if has(anon, "/call/echo/caps") || has(anon, "/call/echo/env") {
		t.Error("anonymous sees echo/caps or the internal echo/env")
	}
	withCaps, v := document(capsToken)
	if !has(withCaps, "/call/echo/caps") {
		t.Error("a token with echo:caps does not see /call/echo/caps")
	}

	call := func(path, token, body string) (*http.Request, *http.Response, []byte) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		resp, b := n.do(http.MethodPost, path, token, rd)
		req, _ := http.NewRequest(http.MethodPost, n.base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return req, resp, b
	}
	req, resp, b := call("/call/echo/say", "", `{"hello": ["world"]}`)
	var out struct {
		RequestID string          `json:"request_id"`
		Output    json.RawMessage `json:"output"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil || out.RequestID == "" || string(out.Output) != `{"hello":["world"]}` {
		t.Fatalf("POST /call/echo/say: %d %s", resp.StatusCode, b)
	}
	if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
		t.Errorf("the echo/say answer does not match the document: %v", errs)
	}
	req, resp, b = call("/call/echo/caps", "", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), `"FORBIDDEN"`) {
		t.Errorf("anonymous POST /call/echo/caps: %d %s", resp.StatusCode, b)
	}
	if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
		t.Errorf("the 401 does not match the document: %v", errs)
	}
	req, resp, b = call("/call/echo/caps", capsToken, "")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("POST /call/echo/caps with echo:caps: %d %s", resp.StatusCode, b)
	}
	if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
		t.Errorf("the echo/caps answer does not match the document: %v", errs)
	}
	resp, b = n.do(http.MethodPost, "/subscribe/echo/ticks", "", strings.NewReader(`{"count": 2}`))
	want := "data: {\"n\":0}\n\ndata: {\"n\":1}\n\nevent: completed\ndata: {}\n\n"
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || string(b) != want {
		t.Errorf("POST /subscribe/echo/ticks: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}
