package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// mcpTransport adds a bearer token and a Host header to the MCP client's
// requests.
type mcpTransport struct {
	base  http.RoundTripper
	token string
	host  string
}

func (m *mcpTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if m.token != "" {
		r.Header.Set("Authorization", "Bearer "+m.token)
	}
	if m.host != "" {
		r.Host = m.host
	}
	return m.base.RoundTrip(r)
}

// mcpSession connects the go-sdk's MCP client to the node's /mcp with an
// optional token, asking for host in the Host header when not "".
func (n *httpNode) mcpSession(ctx context.Context, token, host string) (*mcp.ClientSession, error) {
	hc := &http.Client{Transport: &mcpTransport{base: n.client.Transport, token: token, host: host}, Timeout: 60 * time.Second}
	client := mcp.NewClient(&mcp.Implementation{Name: "alknet-integration", Version: "0"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: n.base + "/mcp", HTTPClient: hc, MaxRetries: -1}, nil)
}

func mcpTools(t *testing.T, ctx context.Context, s *mcp.ClientSession) map[string]*mcp.Tool {
	t.Helper()
	tools := map[string]*mcp.Tool{}
	for tool, err := range s.Tools(ctx, nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		tools[tool.Name] = tool
	}
	return tools
}

// mcpText is the single text content of a tool result.
func mcpText(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if len(res.Content) != 1 {
		t.Fatalf("tool result with %d contents, want 1: %+v", len(res.Content), res)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("tool result content %T, want text", res.Content[0])
	}
	return tc.Text
}

func mcpCall(t *testing.T, ctx context.Context, s *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s: %v", name, err)
	}
	return res
}

// TestHTTPMCPGoClient drives /mcp with the go-sdk's client: the tools are
// the caller's operations (a token shows more), calls run as the caller,
// a failed call is an isError result, subscriptions collect items, a bad
// token is 401, a foreign Origin is 403, a domain name in Host works.
func TestHTTPMCPGoClient(t *testing.T) {
	n := startHTTPNode(t, "[plugins.http]\nallowed_origins = [\"https://console.example\"]\n")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	anon, err := n.mcpSession(ctx, "", "")
	if err != nil {
		t.Fatalf("connect anonymously: %v\n%s", err, n.srv.logs)
	}
	defer anon.Close()
	if ir := anon.InitializeResult(); ir == nil || ir.ServerInfo == nil || ir.ServerInfo.Name != "alknet" {
		t.Fatalf("initialize: %+v", ir)
	} else {
		t.Logf("go-sdk client: protocol %s, server %s %s", ir.ProtocolVersion, ir.ServerInfo.Name, ir.ServerInfo.Version)
	}
	tools := mcpTools(t, ctx, anon)
	for _, want := range []string{"echo.say", "echo.ticks", "search", "schema"} {
		if tools[want] == nil {
			t.Errorf("anonymous tools lack %s: %v", want, slices.Sorted(maps.Keys(tools)))
		}
	}
	if tools["echo.caps"] != nil {
		t.Errorf("anonymous tools offer echo.caps, which needs the scope echo:caps")
	}
	if say := tools["echo.say"]; say != nil {
		if !strings.Contains(say.Description, "returns its input") || !strings.Contains(say.Description, "echo/say") {
			t.Errorf("echo.say description %q", say.Description)
		}
		if s, _ := json.Marshal(say.InputSchema); !strings.Contains(string(s), `"type":"object"`) {
			t.Errorf("echo.say input schema %s", s)
		}
	}
	if ticks := tools["echo.ticks"]; ticks != nil {
		s, _ := json.Marshal(ticks.InputSchema)
		if !strings.Contains(string(s), `"max_items"`) || !strings.Contains(string(s), `"count"`) {
			t.Errorf("echo.ticks input schema %s: want the subscription's input and max_items", s)
		}
	}

	res := mcpCall(t, ctx, anon, "echo.say", map[string]any{"text": "hello from go"})
	if res.IsError {
		t.Fatalf("echo.say: error result %s", mcpText(t, res))
	}
	if got := mcpText(t, res); got != `{"text":"hello from go"}` {
		t.Errorf("echo.say answered %s", got)
	}
	if sc, _ := json.Marshal(res.StructuredContent); string(sc) != `{"text":"hello from go"}` {
		t.Errorf("echo.say structured content %s", sc)
	}

	// echo/caps is not offered: calling it anyway is an error.
	if res, err := anon.CallTool(ctx, &mcp.CallToolParams{Name: "echo.caps", Arguments: map[string]any{}}); err == nil && !res.IsError {
		t.Errorf("anonymous echo.caps answered %s", mcpText(t, res))
	}

	// A call the node refuses is a result with isError and the call error.
	res = mcpCall(t, ctx, anon, "echo.ticks", map[string]any{"input": map[string]any{"count": -1}})
	var ce callError
	if !res.IsError || json.Unmarshal([]byte(mcpText(t, res)), &ce) != nil || ce.Code != "INVALID_INPUT" {
		t.Errorf("echo.ticks with a negative count: isError=%v %s", res.IsError, mcpText(t, res))
	}

	// A subscription as a tool: all items when it completes, max_items
	// when they are more.
	var items struct {
		Items    []json.RawMessage `json:"items"`
		Complete bool              `json:"complete"`
		Stopped  string            `json:"stopped"`
	}
	res = mcpCall(t, ctx, anon, "echo.ticks", map[string]any{"input": map[string]any{"count": 3}})
	if err := json.Unmarshal([]byte(mcpText(t, res)), &items); err != nil || res.IsError || len(items.Items) != 3 || !items.Complete {
		t.Errorf("echo.ticks count 3: %s", mcpText(t, res))
	}
	res = mcpCall(t, ctx, anon, "echo.ticks", map[string]any{"input": map[string]any{"count": 50}, "max_items": 2})
	items.Items, items.Complete = nil, false
	if err := json.Unmarshal([]byte(mcpText(t, res)), &items); err != nil || res.IsError || len(items.Items) != 2 || items.Complete || items.Stopped != "max_items" {
		t.Errorf("echo.ticks count 50, max_items 2: %s", mcpText(t, res))
	}

	// search and schema.
	res = mcpCall(t, ctx, anon, "search", map[string]any{"query": "echo/"})
	text := mcpText(t, res)
	if res.IsError || !strings.Contains(text, `"tool":"echo.say"`) || strings.Contains(text, "echo/caps") {
		t.Errorf("search echo/: %s", text)
	}
	res = mcpCall(t, ctx, anon, "schema", map[string]any{"name": "echo.ticks"})
	if text := mcpText(t, res); res.IsError || !strings.Contains(text, `"name":"echo/ticks"`) || !strings.Contains(text, `"input_schema"`) {
		t.Errorf("schema echo.ticks: %s", text)
	}
	res = mcpCall(t, ctx, anon, "schema", map[string]any{"name": "echo/caps"})
	if text := mcpText(t, res); !res.IsError || !strings.Contains(text, "NOT_FOUND") {
		t.Errorf("anonymous schema echo/caps: isError=%v %s", res.IsError, text)
	}

	// A token with the scope: echo/caps is a tool and answers.
	caps := n.token("echo:caps")
	withCaps, err := n.mcpSession(ctx, caps, "")
	if err != nil {
		t.Fatalf("connect with a token: %v", err)
	}
	defer withCaps.Close()
	if tools := mcpTools(t, ctx, withCaps); tools["echo.caps"] == nil || tools["echo.say"] == nil {
		t.Errorf("tools with echo:caps: %v", slices.Sorted(maps.Keys(tools)))
	}
	res = mcpCall(t, ctx, withCaps, "echo.caps", map[string]any{})
	if text := mcpText(t, res); res.IsError || !strings.Contains(text, `"calls"`) {
		t.Errorf("echo.caps with its scope: isError=%v %s", res.IsError, text)
	}

	// The node by a domain name (the Host header): the same tools.
	byName, err := n.mcpSession(ctx, "", "node.example:443")
	if err != nil {
		t.Fatalf("connect with Host node.example: %v", err)
	}
	defer byName.Close()
	if tools := mcpTools(t, ctx, byName); tools["echo.say"] == nil {
		t.Errorf("tools with Host node.example: %v", slices.Sorted(maps.Keys(tools)))
	}
	if res := mcpCall(t, ctx, byName, "echo.say", map[string]any{"x": 1}); res.IsError || mcpText(t, res) != `{"x":1}` {
		t.Errorf("echo.say with Host node.example: %s", mcpText(t, res))
	}

	// A bad token is 401, never anonymous.
	if _, err := n.mcpSession(ctx, "alk_not-a-key", ""); err == nil {
		t.Errorf("a bad token connected")
	}
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"0"}}}`
	post := func(token, origin string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.base+"/mcp", strings.NewReader(initialize))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := n.client.Do(req)
		if err != nil {
			t.Fatalf("POST /mcp: %v", err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp, buf.Bytes()
	}
	if resp, body := post("alk_not-a-key", ""); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("bad token: %d %s %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}

	// Origin: a foreign one is 403; the node's own and an allowed one pass.
	if resp, body := post("", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign Origin: %d %s", resp.StatusCode, body)
	}
	for _, o := range []string{"https://" + n.srv.Addr, "https://console.example"} {
		if resp, body := post("", o); resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"serverInfo"`)) {
			t.Errorf("Origin %s: %d %s", o, resp.StatusCode, body)
		}
	}

	// The requests were counted.
	stats := n.token("http:stats")
	resp, body := n.do(http.MethodPost, "/call", stats, strings.NewReader(`{"operation":"http/stats"}`))
	var st struct {
		Output struct {
			MCPRequests int64 `json:"mcp_requests"`
		} `json:"output"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil || st.Output.MCPRequests < 10 {
		t.Errorf("http/stats: %d %s", resp.StatusCode, body)
	}
}

// TestHTTPMCPDisabled: with mcp = false, /mcp is the decoy's.
func TestHTTPMCPDisabled(t *testing.T) {
	n := startHTTPNode(t, "[plugins.http]\nmcp = false\n")
	resp, body := n.do(http.MethodPost, "/mcp", "", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST /mcp with mcp = false: %d %s", resp.StatusCode, body)
	}
}

// mcpClientDir holds the TypeScript client and its npm lock.
const mcpClientDir = "testdata/mcpclient"

// TestHTTPMCPTypeScriptClient runs the official TypeScript SDK's client
// (Node.js, the versions package-lock.json pins) against /mcp, pinned to
// the node's key, anonymously and with a token read from stdin.
func TestHTTPMCPTypeScriptClient(t *testing.T) {
	if _, err := os.Stat(filepath.Join(mcpClientDir, "node_modules", "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		t.Fatalf("the TypeScript MCP client is not installed (%v): run `npm ci --prefix integration/testdata/mcpclient` from the repository root", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node (Node.js 20 or later) is not on PATH: %v", err)
	}
	n := startHTTPNode(t, "")
	type tsOutput struct {
		Server struct {
			Name string `json:"name"`
		} `json:"server"`
		Protocol string `json:"protocol"`
		Tools    []struct {
			Name        string          `json:"name"`
			Description string          `json:"description"`
			InputSchema json.RawMessage `json:"inputSchema"`
		} `json:"tools"`
		Say  mcp.CallToolResult `json:"say"`
		Caps json.RawMessage    `json:"caps"`
	}
	run := func(token string) tsOutput {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "client.mjs", n.base+"/mcp", n.pin)
		cmd.Dir = mcpClientDir
		cmd.Stdin = strings.NewReader(token)
		cmd.Env = append(os.Environ(), "NODE_TLS_REJECT_UNAUTHORIZED=1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("node client.mjs: %v\nstdout: %s\nstderr: %s\nnode logs:\n%s", err, stdout.String(), stderr.String(), n.srv.logs)
		}
		var out tsOutput
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("client.mjs printed %q: %v", stdout.String(), err)
		}
		var tools []string
		for _, tl := range out.Tools {
			tools = append(tools, tl.Name)
		}
		say, _ := json.Marshal(out.Say)
		t.Logf("TypeScript client (token: %v): protocol %s, server %s, tools %v\n  echo.say: %s\n  echo.caps: %s",
			token != "", out.Protocol, out.Server.Name, tools, say, out.Caps)
		return out
	}
	names := func(o tsOutput) []string {
		var s []string
		for _, tl := range o.Tools {
			s = append(s, tl.Name)
		}
		return s
	}

	anon := run("")
	if anon.Server.Name != "alknet" {
		t.Errorf("server %q", anon.Server.Name)
	}
	if ns := names(anon); !slices.Contains(ns, "echo.say") || !slices.Contains(ns, "search") || !slices.Contains(ns, "schema") || slices.Contains(ns, "echo.caps") {
		t.Errorf("anonymous tools: %v", ns)
	}
	if anon.Say.IsError || len(anon.Say.Content) != 1 {
		t.Fatalf("echo.say: %+v", anon.Say)
	}
	if tc, ok := anon.Say.Content[0].(*mcp.TextContent); !ok || tc.Text != `{"text":"hello from typescript"}` {
		t.Errorf("echo.say answered %+v", anon.Say.Content[0])
	}
	if caps := string(anon.Caps); !strings.Contains(caps, `"error"`) && !strings.Contains(caps, `"isError":true`) {
		t.Errorf("anonymous echo.caps: %s", caps)
	}

	withCaps := run(n.token("echo:caps"))
	if ns := names(withCaps); !slices.Contains(ns, "echo.caps") || !slices.Contains(ns, "echo.say") {
		t.Errorf("tools with echo:caps: %v", ns)
	}
	if caps := string(withCaps.Caps); strings.Contains(caps, `"isError":true`) || !strings.Contains(caps, `\"calls\"`) {
		t.Errorf("echo.caps with its scope: %s", caps)
	}
}
