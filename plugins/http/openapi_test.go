package httpplugin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	oaerrors "github.com/pb33f/libopenapi-validator/errors"

	httpplugin "alknet.dev/alknet/plugins/http"
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

// oaPlugin is the HTTP plugin with a few operations of its own beside
// http/stats, so the document has every kind of operation to describe.
type oaPlugin struct{ *httpplugin.Plugin }

func (p oaPlugin) Info() sdk.Info {
	i := p.Plugin.Info()
	i.Namespaces = []string{"http", "demo"}
	return i
}

// oaTreeSchema refers to its own $defs, and has data that looks like a
// reference (const), which must stay as it is (pointing at something the
// document has, since libopenapi resolves every "$ref" it finds).
const oaTreeSchema = `{
  "type": "object",
  "required": ["name"],
  "additionalProperties": false,
  "properties": {
    "name": {"type": "string", "minLength": 1},
    "root": {"$ref": "#/$defs/node"},
    "marker": {"const": {"$ref": "#/components/schemas/Error"}}
  },
  "$defs": {
    "node": {
      "type": "object",
      "required": ["label"],
      "additionalProperties": false,
      "properties": {
        "label": {"type": "string"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
      }
    }
  }
}`

type oaTreeIn struct {
	Name string `json:"name"`
}

type oaTreeOut struct {
	OK bool `json:"ok"`
}

type oaTicks struct {
	Count int `json:"count"`
}

type oaTick struct {
	N int `json:"n"`
}

func (p oaPlugin) Operations() []sdk.Op {
	return append(p.Plugin.Operations(),
		sdk.Query("demo/say", func(_ context.Context, _ *sdk.Call, in json.RawMessage) (json.RawMessage, error) {
			return in, nil
		}).RemoteSafe().Describe("returns its input"),
		sdk.Query("demo/caps", func(context.Context, *sdk.Call, struct{}) (map[string]bool, error) {
			return map[string]bool{"ok": true}, nil
		}).RequireScopes("demo:caps").Describe("needs the scope demo:caps"),
		sdk.Query("demo/either", func(context.Context, *sdk.Call, struct{}) (map[string]bool, error) {
			return map[string]bool{"ok": true}, nil
		}).RequireAnyScope("demo:caps", "demo:other").Describe("needs demo:caps or demo:other"),
		sdk.Mutation("demo/tree", func(_ context.Context, _ *sdk.Call, in oaTreeIn) (oaTreeOut, error) {
			switch in.Name {
			case "taken":
				return oaTreeOut{}, &sdk.Error{Code: "CONFLICT", Message: "the name is taken", Details: map[string]string{"holder": "someone"}}
			case "gone":
				return oaTreeOut{}, &sdk.Error{Code: "GONE_AWAY", Message: "gone"}
			}
			return oaTreeOut{OK: true}, nil
		}).InputSchema(json.RawMessage(oaTreeSchema)).Describe("stores a tree\nsecond line").
			Errors(sdk.ErrorSpec{Code: "CONFLICT", Description: "the name is taken", HTTPStatus: http.StatusConflict,
				Schema: json.RawMessage(`{"type":"object","required":["holder"],"properties":{"holder":{"type":"string"}}}`)},
				sdk.ErrorSpec{Code: "GONE_AWAY", Description: "declares no status"}),
		sdk.Subscription("demo/ticks", func(_ context.Context, _ *sdk.Call, in oaTicks, emit func(oaTick) error) error {
			for i := range in.Count {
				if err := emit(oaTick{N: i}); err != nil {
					return err
				}
			}
			return nil
		}).Describe(`streams {"n": i} for i < count`),
	)
}

// Tokens of the harness's peers.
const (
	oaTokenPlain = "tok-plain"
	oaTokenCaps  = "tok-caps"
)

// oaNode is the plugin under sdktest, with an HTTP/1.1 client whose every
// connection is a node connection routed to the plugin.
type oaNode struct {
	t      *testing.T
	client *http.Client
}

func startOANode(t *testing.T, settings any) *oaNode {
	t.Helper()
	return startNode(t, oaPlugin{&httpplugin.Plugin{}}, settings)
}

// startNode runs p (the HTTP plugin, perhaps with operations of its own)
// under sdktest with the harness's peers.
func startNode(t *testing.T, p sdk.Plugin, settings any) *oaNode {
	t.Helper()
	h := sdktest.Start(t, p, sdktest.Options{Settings: settings, Peers: []sdktest.Peer{
		{ID: "plain", Token: oaTokenPlain},
		{ID: "capper", Scopes: []string{"demo:caps"}, Token: oaTokenCaps},
	}})
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := h.Connect(ctx, sdk.Auth{ALPN: "http/1.1", RemoteAddr: "192.0.2.7:40000", Transport: "tcp"})
		if err != nil {
			return nil, err
		}
		s, err := c.OpenStream(ctx)
		if err != nil {
			c.Close()
			return nil, err
		}
		return &oaConn{Stream: s, conn: c}, nil
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &oaNode{t: t, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// oaConn is a stream of a harness connection as a net.Conn.
type oaConn struct {
	*sdktest.Stream
	conn *sdktest.Conn
	once sync.Once
}

func (c *oaConn) Close() error {
	err := c.Stream.Close()
	c.once.Do(c.conn.Close)
	return err
}

type oaAddr string

func (a oaAddr) Network() string { return "alknet" }
func (a oaAddr) String() string  { return string(a) }

func (c *oaConn) LocalAddr() net.Addr  { return oaAddr("client") }
func (c *oaConn) RemoteAddr() net.Addr { return oaAddr("node") }

// request builds a request to the plugin with an optional bearer token.
func (n *oaNode) request(method, path, token, body string) *http.Request {
	n.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://node"+path, rd)
	if err != nil {
		n.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// send sends req; the answer's body is read and left readable again.
func (n *oaNode) send(req *http.Request) (*http.Response, []byte) {
	n.t.Helper()
	resp, err := n.client.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatalf("%s %s: read the body: %v", req.Method, req.URL.Path, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, b
}

func (n *oaNode) do(method, path, token, body string) (*http.Response, []byte) {
	n.t.Helper()
	return n.send(n.request(method, path, token, body))
}

// document fetches /openapi.json as token and checks it is a valid
// OpenAPI 3.1 document whose references all resolve.
func (n *oaNode) document(token string) (map[string]any, validator.Validator) {
	n.t.Helper()
	resp, b := n.do(http.MethodGet, "/openapi.json", token, "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		n.t.Fatalf("GET /openapi.json: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	doc, err := libopenapi.NewDocument(b)
	if err != nil {
		n.t.Fatalf("libopenapi cannot read the document: %v", err)
	}
	if v := doc.GetSpecInfo().Version; v != "3.1.0" {
		n.t.Fatalf("document version %q, want 3.1.0", v)
	}
	if _, err := doc.BuildV3Model(); err != nil {
		n.t.Fatalf("the document does not build (unresolved references?): %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		n.t.Fatalf("validator: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		n.t.Fatalf("the document is not valid OpenAPI 3.1:\n%s", oaErrors(verrs))
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		n.t.Fatal(err)
	}
	return m, v
}

func oaErrors(errs []*oaerrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&b, "  %s\n", e.Error())
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "    %s at %s (%s)\n", f.Reason, f.FieldPath, f.KeywordLocation)
		}
	}
	return b.String()
}

func oaPaths(doc map[string]any) map[string]any {
	return doc["paths"].(map[string]any)
}

// dig follows keys through nested objects.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestOpenAPIDocumentValidates(t *testing.T) {
	n := startOANode(t, nil)
	for _, token := range []string{"", oaTokenPlain, oaTokenCaps} {
		doc, _ := n.document(token)
		if doc["openapi"] != "3.1.0" || dig(doc, "info", "title") != "Alknet node" || dig(doc, "info", "version") != httpplugin.Version {
			t.Fatalf("openapi/info: %v %v", doc["openapi"], doc["info"])
		}
		if s := dig(doc, "components", "securitySchemes", "bearer"); dig(s, "type") != "http" || dig(s, "scheme") != "bearer" {
			t.Fatalf("bearer scheme: %v", s)
		}
		paths := oaPaths(doc)
		for _, p := range []string{"/healthz", "/call", "/batch", "/search", "/schema", "/subscribe", "/openapi.json",
			"/call/demo/say", "/call/demo/tree", "/call/services/list", "/call/services/schema", "/subscribe/demo/ticks"} {
			if paths[p] == nil {
				t.Errorf("token %q: the document has no path %s", token, p)
			}
		}
		if dig(paths, "/call/demo/say", "post", "summary") != "returns its input" ||
			dig(paths, "/call/demo/tree", "post", "summary") != "stores a tree" {
			t.Errorf("summaries: %v / %v", dig(paths, "/call/demo/say", "post", "summary"), dig(paths, "/call/demo/tree", "post", "summary"))
		}
		if dig(paths, "/call/demo/tree", "post", "requestBody", "required") != true ||
			dig(paths, "/call/demo/say", "post", "requestBody", "required") != false {
			t.Errorf("requestBody.required: demo/tree %v, demo/say %v", dig(paths, "/call/demo/tree", "post", "requestBody", "required"),
				dig(paths, "/call/demo/say", "post", "requestBody", "required"))
		}
	}
}

func TestOpenAPIVisibility(t *testing.T) {
	n := startOANode(t, nil)
	anon, _ := n.document("")
	plain, _ := n.document(oaTokenPlain)
	caps, _ := n.document(oaTokenCaps)
	for name, doc := range map[string]map[string]any{"anonymous": anon, "token without demo:caps": plain} {
		for _, p := range []string{"/call/demo/caps", "/call/demo/either", "/call/http/stats"} {
			if oaPaths(doc)[p] != nil {
				t.Errorf("%s sees %s", name, p)
			}
		}
		if oaPaths(doc)["/call/demo/say"] == nil {
			t.Errorf("%s does not see /call/demo/say", name)
		}
	}
	if oaPaths(caps)["/call/http/stats"] != nil {
		t.Error("a token without http:stats sees /call/http/stats")
	}
	op := dig(oaPaths(caps), "/call/demo/caps", "post")
	if op == nil {
		t.Fatal("a token with demo:caps does not see /call/demo/caps")
	}
	sec, _ := json.Marshal(dig(op, "security"))
	if string(sec) != `[{"bearer":["demo:caps"]},{"mutualTLS":["demo:caps"]}]` {
		t.Errorf("demo/caps security: %s", sec)
	}
	sec, _ = json.Marshal(dig(oaPaths(caps), "/call/demo/either", "post", "security"))
	if string(sec) != `[{"bearer":["demo:caps"]},{"mutualTLS":["demo:caps"]},{"bearer":["demo:other"]},{"mutualTLS":["demo:other"]}]` {
		t.Errorf("demo/either security: %s", sec)
	}
	sec, _ = json.Marshal(dig(oaPaths(anon), "/call/demo/say", "post", "security"))
	if string(sec) != `[{},{"bearer":[]},{"mutualTLS":[]}]` {
		t.Errorf("demo/say security: %s", sec)
	}
	if resp, b := n.do(http.MethodGet, "/openapi.json", "not-a-token", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a bad token: %d %s", resp.StatusCode, b)
	}
	if resp, b := n.do(http.MethodPost, "/openapi.json", "", "{}"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /openapi.json: %d %s", resp.StatusCode, b)
	}
}

func TestOpenAPIRefsRewritten(t *testing.T) {
	n := startOANode(t, nil)
	doc, v := n.document("")
	in := dig(doc, "components", "schemas", "demo_tree.Input")
	if r := dig(in, "properties", "root", "$ref"); r != "#/components/schemas/demo_tree.Input/$defs/node" {
		t.Errorf("root $ref = %v", r)
	}
	if r := dig(in, "$defs", "node", "properties", "children", "items", "$ref"); r != "#/components/schemas/demo_tree.Input/$defs/node" {
		t.Errorf("children $ref = %v", r)
	}
	if r := dig(in, "properties", "marker", "const", "$ref"); r != "#/components/schemas/Error" {
		t.Errorf("const data was rewritten: %v", r)
	}
	if r := dig(doc, "paths", "/call/demo/tree", "post", "requestBody", "content", "application/json", "schema", "$ref"); r != "#/components/schemas/demo_tree.Input" {
		t.Errorf("requestBody schema: %v", r)
	}
	// The rewritten references resolve: a request is checked down the
	// recursive $defs.
	good := `{"name":"a","root":{"label":"r","children":[{"label":"c","children":[]}]}}`
	if ok, errs := v.ValidateHttpRequestSync(n.request(http.MethodPost, "/call/demo/tree", "", good)); !ok {
		t.Errorf("a valid request does not validate:\n%s", oaErrors(errs))
	}
	bad := `{"name":"a","root":{"label":"r","children":[{"children":[]}]}}`
	if ok, _ := v.ValidateHttpRequestSync(n.request(http.MethodPost, "/call/demo/tree", "", bad)); ok {
		t.Error("a request missing a nested label validates")
	}
	// Declared errors: CONFLICT at 409 with its details, GONE_AWAY with
	// the 500s.
	conflict := dig(doc, "paths", "/call/demo/tree", "post", "responses", "409", "content", "application/json", "schema")
	if dig(conflict, "properties", "code", "const") != "CONFLICT" ||
		dig(conflict, "properties", "details", "$ref") != "#/components/schemas/demo_tree.Error.CONFLICT" {
		t.Errorf("409 schema: %v", conflict)
	}
	if d := dig(doc, "paths", "/call/demo/tree", "post", "responses", "500", "description"); !strings.Contains(fmt.Sprint(d), "GONE_AWAY") {
		t.Errorf("500 description: %v", d)
	}
}

func TestOpenAPICallRoute(t *testing.T) {
	n := startOANode(t, map[string]any{"max_body_bytes": 256})
	_, v := n.document(oaTokenCaps)
	type answer struct {
		RequestID string          `json:"request_id"`
		Output    json.RawMessage `json:"output"`
		Code      string          `json:"code"`
		Message   string          `json:"message"`
		Details   json.RawMessage `json:"details"`
	}
	for _, c := range []struct {
		name, method, path, token, body string
		status                          int
		code, output, details, message  string
	}{
		{name: "input", method: "POST", path: "/call/demo/say", body: `{"a": [1, 2]}`, status: 200, output: `{"a":[1,2]}`},
		{name: "no body is null", method: "POST", path: "/call/demo/say", status: 200, output: `null`},
		{name: "a string", method: "POST", path: "/call/demo/say", body: ` "hi" `, status: 200, output: `"hi"`},
		{name: "a number", method: "POST", path: "/call/demo/say", body: `1`, status: 200, output: `1`},
		{name: "struct input", method: "POST", path: "/call/demo/tree", body: `{"name":"x"}`, status: 200, output: `{"ok":true}`},
		{name: "bad JSON", method: "POST", path: "/call/demo/say", body: "{\n  \"a\": ]", status: 400, code: "INVALID_INPUT", message: "line 2, column 8"},
		{name: "two values", method: "POST", path: "/call/demo/say", body: `{} {}`, status: 400, code: "INVALID_INPUT", message: "data after the JSON value"},
		{name: "too large", method: "POST", path: "/call/demo/say", body: `"` + strings.Repeat("x", 300) + `"`, status: 413, code: "INVALID_INPUT"},
		{name: "schema", method: "POST", path: "/call/demo/tree", body: `{"name":""}`, status: 400, code: "INVALID_INPUT"},
		{name: "no name", method: "POST", path: "/call/", body: `{}`, status: 400, code: "INVALID_INPUT"},
		{name: "unknown", method: "POST", path: "/call/demo/nothing", status: 404, code: "NOT_FOUND"},
		{name: "subscription", method: "POST", path: "/call/demo/ticks", body: `{"count":1}`, status: 400, code: "INVALID_OPERATION_TYPE"},
		{name: "GET", method: "GET", path: "/call/demo/say", status: 405, code: "INVALID_INPUT"},
		{name: "anonymous", method: "POST", path: "/call/demo/caps", status: 401, code: "FORBIDDEN"},
		{name: "no scope", method: "POST", path: "/call/demo/caps", token: oaTokenPlain, status: 403, code: "FORBIDDEN"},
		{name: "scope", method: "POST", path: "/call/demo/caps", token: oaTokenCaps, status: 200, output: `{"ok":true}`},
		{name: "bad token", method: "POST", path: "/call/demo/say", token: "nope", status: 401, code: "FORBIDDEN"},
		{name: "declared status", method: "POST", path: "/call/demo/tree", body: `{"name":"taken"}`, status: 409, code: "CONFLICT", details: `{"holder":"someone"}`},
		{name: "declared without status", method: "POST", path: "/call/demo/tree", body: `{"name":"gone"}`, status: 500, code: "GONE_AWAY"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := n.request(c.method, c.path, c.token, c.body)
			resp, b := n.send(req)
			if resp.StatusCode != c.status {
				t.Fatalf("%d, want %d: %s", resp.StatusCode, c.status, b)
			}
			var a answer
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatalf("not JSON: %s", b)
			}
			if c.status == 200 {
				if a.RequestID == "" || string(a.Output) != c.output {
					t.Fatalf("answer %s, want output %s and a request id", b, c.output)
				}
			} else if a.Code != c.code || !strings.Contains(a.Message, c.message) || (c.details != "" && string(a.Details) != c.details) {
				t.Fatalf("answer %s, want code %s", b, c.code)
			}
			if c.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: %v", resp.Header)
			}
			if c.status == 405 || c.path == "/call/" || c.path == "/call/demo/nothing" || c.path == "/call/demo/ticks" {
				return // not an operation of the document
			}
			// The answer is what the document says.
			if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
				t.Errorf("the answer does not match the document:\n%s", oaErrors(errs))
			}
		})
	}
}

func TestOpenAPISubscribeRoute(t *testing.T) {
	n := startOANode(t, nil)
	want := "data: {\"n\":0}\n\ndata: {\"n\":1}\n\ndata: {\"n\":2}\n\nevent: completed\ndata: {}\n\n"
	for _, req := range []*http.Request{
		n.request(http.MethodPost, "/subscribe/demo/ticks", "", `{"count": 3}`),
		n.request(http.MethodGet, "/subscribe/demo/ticks?input="+url.QueryEscape(`{"count":3}`), "", ""),
	} {
		resp, b := n.send(req)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || string(b) != want {
			t.Errorf("%s %s: %d %s\n%q", req.Method, req.URL, resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	}
	for _, c := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		{"POST", "/subscribe/demo/say", `{}`, 400, "INVALID_OPERATION_TYPE"},
		{"POST", "/subscribe/demo/ticks", `{"count": "x"}`, 400, "INVALID_INPUT"},
		{"POST", "/subscribe/demo/ticks", `{"count": `, 400, "INVALID_INPUT"},
		{"GET", "/subscribe/demo/ticks?input=%7B", "", 400, "INVALID_INPUT"},
		{"POST", "/subscribe/", `{}`, 400, "INVALID_INPUT"},
		{"POST", "/subscribe/demo/nothing", `{}`, 404, "NOT_FOUND"},
		{"PUT", "/subscribe/demo/ticks", `{}`, 405, "INVALID_INPUT"},
	} {
		resp, b := n.do(c.method, c.path, "", c.body)
		var e struct {
			Code string `json:"code"`
		}
		if resp.StatusCode != c.status || json.Unmarshal(b, &e) != nil || e.Code != c.code {
			t.Errorf("%s %s: %d %s, want %d %s", c.method, c.path, resp.StatusCode, b, c.status, c.code)
		}
	}
}

// TestOpenAPIServesWhatItDocuments sends a request to every operation of
// the document and checks the answer is one the document describes: no
// documented path falls to the decoy or refuses its method.
func TestOpenAPIServesWhatItDocuments(t *testing.T) {
	n := startOANode(t, nil)
	doc, v := n.document(oaTokenCaps)
	gateway := map[string]string{
		"POST /call":        `{"operation": "demo/say", "input": 1}`,
		"POST /batch":       `[{"operation": "demo/say"}, {"operation": "demo/nothing"}]`,
		"GET /search":       "?q=demo",
		"GET /schema":       "?name=demo/tree",
		"POST /subscribe":   `{"operation": "demo/ticks", "input": {"count": 2}}`,
		"GET /subscribe":    "?operation=demo/ticks&input=" + url.QueryEscape(`{"count":2}`),
		"GET /healthz":      "",
		"GET /openapi.json": "",
	}
	var keys []string
	for p := range oaPaths(doc) {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	seen := 0
	for _, path := range keys {
		for method := range oaPaths(doc)[path].(map[string]any) {
			method = strings.ToUpper(method)
			arg, known := gateway[method+" "+path]
			target, body := path, ""
			switch {
			case known && method == http.MethodGet:
				target += arg
			case known:
				body = arg
			case path == "/subscribe/demo/ticks" && method == http.MethodGet:
				target += "?input=" + url.QueryEscape(`{"count":1}`)
			case path == "/call/services/schema":
				body = `{"name": "demo/say"}`
			case path == "/call/demo/tree":
				body = `{"name": "a"}`
			case strings.HasPrefix(path, "/subscribe/"):
				body = `{"count": 1}`
			}
			req := n.request(method, target, oaTokenCaps, body)
			resp, b := n.send(req)
			seen++
			if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode >= 500 {
				t.Errorf("%s %s: %d %s", method, target, resp.StatusCode, b)
				continue
			}
			if ok, errs := v.ValidateHttpResponse(req, resp); !ok {
				t.Errorf("%s %s: the answer (%d %s) does not match the document:\n%s", method, target, resp.StatusCode, b, oaErrors(errs))
			}
		}
	}
	if want := len(gateway) + 8; seen < want {
		t.Errorf("%d operations checked, want at least %d", seen, want)
	}
	if !slices.Contains(keys, "/call/demo/caps") || !slices.Contains(keys, "/subscribe/demo/ticks") {
		t.Errorf("paths: %v", keys)
	}
}
