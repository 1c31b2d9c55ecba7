package httpplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"alknet.dev/alknet/plugins/sdk"
)

// MCP at /mcp (docs/spec/handlers.md §HTTP, "MCP"): the streamable HTTP
// transport of the Model Context Protocol, stateless. Each POST is served
// by an MCP server built for its caller, whose tools are the operations
// that caller may call (services/list and services/schema as the caller)
// plus "search" and "schema"; a tool call is Host.Invoke as the caller.

func init() {
	extraRoutes = append(extraRoutes, func(p *Plugin, mux *http.ServeMux) {
		h := mcp.NewStreamableHTTPHandler(p.mcpServer, &mcp.StreamableHTTPOptions{
			// A server per request, built for its caller: nothing kept
			// between requests, and a token's rights apply to each one.
			Stateless:    true,
			JSONResponse: true,
			// The go-sdk's check looks for a loopback local address; the
			// plugin's is "node" (TLS ends in the node), so it would never
			// apply. originAllowed stands in for it, on every address.
			DisableLocalhostProtection: true,
			// serveMCP has read the body within max_body_bytes already.
			MaxRequestBodyBytes: -1,
		})
		mux.Handle("/mcp", p.serveMCP(h))
	})
}

// Bounds of one MCP request.
const (
	// mcpMaxNamedTools bounds the tools one request (a JSON-RPC batch of
	// tools/call) looks up by name.
	mcpMaxNamedTools = 32
	// Items a subscription tool collects: by default, and at most.
	mcpDefaultItems = 100
	mcpMaxItems     = 1000
)

// mcpKey keys the request's *mcpRequest in its context.
type mcpKey struct{}

// mcpRequest is one request to /mcp: its caller and the tools prepared for
// it; the server is built from them once (the go-sdk asks for it twice).
type mcpRequest struct {
	p     *Plugin
	c     *caller
	ctx   context.Context // the HTTP request's
	tools []*mcpTool
	once  sync.Once
	srv   *mcp.Server
}

// mcpTool is an operation as a tool.
type mcpTool struct {
	tool   *mcp.Tool
	op     string
	opType string
	// wrapped: the tool's arguments are {"input": …} (and "max_items" for
	// a subscription) rather than the operation's input itself.
	wrapped bool
	// noInput is the input sent when the arguments carry none.
	noInput json.RawMessage
}

// serveMCP checks what gate checks (a bad token is 401, the caller's
// concurrent requests are bounded) and the Origin, reads the JSON-RPC body
// to learn which tools the request needs, prepares them as the caller and
// hands the request to the go-sdk.
func (p *Plugin) serveMCP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cfg := p.cfg.Load()
		if !cfg.mcp {
			p.decoy(w, r)
			return
		}
		p.stats.mcpRequests.Add(1)
		if !p.originAllowed(r) {
			writeError(w, http.StatusForbidden, "", &sdk.Error{Code: sdk.CodeForbidden,
				Message: "Origin " + r.Header.Get("Origin") + " may not use /mcp: it is neither this node's origin nor in allowed_origins"})
			return
		}
		c, cerr := p.callerOf(r, "")
		if cerr != nil {
			p.writeCallError(w, r, nil, "", "", cerr)
			return
		}
		defer c.done()
		if !p.requests.acquire(c.key, cfg.requestsPerID) {
			p.throttled(w, "concurrent requests")
			return
		}
		defer p.requests.release(c.key)

		mr := &mcpRequest{p: p, c: c, ctx: r.Context()}
		if r.Method == http.MethodPost {
			body, ok := p.readMCPBody(w, r)
			if !ok {
				return
			}
			all, names := mcpToolsWanted(body)
			ctx, cancel := context.WithTimeout(r.Context(), cfg.callTimeout)
			tools, err := p.mcpTools(ctx, c, all, names)
			cancel()
			if err != nil {
				p.writeCallError(w, r, c, "", "", err)
				return
			}
			mr.tools = tools
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), mcpKey{}, mr)))
	})
}

// readMCPBody reads the body within max_body_bytes and puts it back for
// the go-sdk.
func (p *Plugin) readMCPBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	max := p.cfg.Load().maxBody
	if r.ContentLength > max {
		p.tooLarge(w, r.ContentLength, max)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		p.tooLarge(w, -1, max)
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "read the body: %v", err))
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true
}

// mcpToolsWanted reads the JSON-RPC message (or batch) in body: all, when it
// lists tools; else the names of the tools it calls. A body that is not
// JSON-RPC wants nothing; the go-sdk answers it.
func mcpToolsWanted(body []byte) (all bool, names []string) {
	var msgs []json.RawMessage
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) > 0 && b[0] == '[' {
		if json.Unmarshal(b, &msgs) != nil {
			return false, nil
		}
	} else {
		msgs = []json.RawMessage{body}
	}
	for _, m := range msgs {
		var msg struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if json.Unmarshal(m, &msg) != nil {
			continue
		}
		switch msg.Method {
		case "tools/list":
			all = true
		case "tools/call":
			var params struct {
				Name string `json:"name"`
			}
			if json.Unmarshal(msg.Params, &params) == nil && params.Name != "" && !slices.Contains(names, params.Name) {
				names = append(names, params.Name)
			}
		}
	}
	return all, names
}

// mcpOpSpec is what the tools use of an operation's spec.
type mcpOpSpec struct {
	Name        string          `json:"name"`
	OpType      string          `json:"op_type"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
}

// mcpTools prepares the operation tools a request needs, as its caller:
// every operation the caller may call (all), or the named ones it may
// call. An operation the caller may not call is not a tool.
func (p *Plugin) mcpTools(ctx context.Context, c *caller, all bool, names []string) ([]*mcpTool, error) {
	var ops []string
	if all {
		var err error
		if ops, err = p.visibleNames(ctx, c); err != nil {
			return nil, err
		}
	} else {
		for _, n := range names {
			if op, ok := mcpToolOp(n); ok && len(ops) < mcpMaxNamedTools {
				ops = append(ops, op)
			}
		}
	}
	specs, err := fetchSpecs(ctx, p, c, ops, func(*mcpOpSpec) bool { return true })
	if err != nil {
		return nil, err
	}
	tools := make([]*mcpTool, len(specs))
	for i, spec := range specs {
		tools[i] = newMCPTool(*spec)
	}
	return tools, nil
}

// mcpServer is the go-sdk's getServer: the request's server, built once
// from the tools serveMCP prepared.
func (p *Plugin) mcpServer(r *http.Request) *mcp.Server {
	mr, _ := r.Context().Value(mcpKey{}).(*mcpRequest)
	if mr == nil {
		return nil
	}
	mr.once.Do(func() {
		srv := mcp.NewServer(&mcp.Implementation{Name: "alknet", Title: "Alknet node", Version: Version}, &mcp.ServerOptions{
			Instructions: "Each tool is an operation of this Alknet node that you may call; " +
				"the tool name is the operation name with \"/\" written as \".\". " +
				"\"search\" finds operations by name, \"schema\" shows one operation's full spec.",
			// Stateless: no list-changed notifications, no logging.
			Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{}},
		})
		srv.AddTool(&mcp.Tool{Name: "search", Title: "Search operations",
			Description: "Operations of this node you may call whose name contains the query (all of them for an empty query), with their tool names.",
			InputSchema: json.RawMessage(`{"type":"object","additionalProperties":false,"properties":{"query":{"type":"string","description":"part of an operation name, such as \"echo\""}}}`),
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
		}, mr.search)
		srv.AddTool(&mcp.Tool{Name: "schema", Title: "Operation spec",
			Description: "The full spec of one operation you may call: input and output JSON Schemas, error codes, access control.",
			InputSchema: json.RawMessage(`{"type":"object","required":["name"],"additionalProperties":false,"properties":{"name":{"type":"string","minLength":1,"description":"an operation name (\"echo/say\") or its tool name (\"echo.say\")"}}}`),
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: new(false)},
		}, mr.schema)
		for _, t := range mr.tools {
			srv.AddTool(t.tool, mr.callTool(t))
		}
		mr.srv = srv
	})
	return mr.srv
}

// Tool names (docs/spec/handlers.md §HTTP, "MCP"). Operation names are
// lowercase [a-z0-9_.-] segments joined by "/"; tool names allow
// [A-Za-z0-9_.-]. A "/" becomes "." and a "." inside a segment becomes
// "_DOT_": uppercase never occurs in an operation name, so the mapping is
// one to one and reverses.
const mcpDotEscape = "_DOT_"

// mcpToolName is the tool name of op ("echo/say" → "echo.say").
func mcpToolName(op string) string {
	var b strings.Builder
	for _, r := range op {
		switch r {
		case '/':
			b.WriteByte('.')
		case '.':
			b.WriteString(mcpDotEscape)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// mcpToolOp is the operation a tool name stands for.
func mcpToolOp(name string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch ch := name[i]; {
		case ch == '.':
			b.WriteByte('/')
		case strings.HasPrefix(name[i:], mcpDotEscape):
			b.WriteByte('.')
			i += len(mcpDotEscape) - 1
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9', ch == '_', ch == '-':
			b.WriteByte(ch)
		default:
			return "", false
		}
	}
	op := b.String()
	if !strings.Contains(op, "/") || mcpToolName(op) != name {
		return "", false
	}
	return op, true
}

// mcpMaxToolName is the longest tool name MCP allows.
const mcpMaxToolName = 128

// newMCPTool is the tool of an operation; nil when its name does not fit a
// tool name.
func newMCPTool(spec mcpOpSpec) *mcpTool {
	name := mcpToolName(spec.Name)
	if len(name) > mcpMaxToolName || spec.Name == "" {
		return nil
	}
	sub := spec.OpType == "subscription"
	schema, wrapped, objectInput := mcpToolSchema(spec.InputSchema, sub)
	t := &mcpTool{op: spec.Name, opType: spec.OpType, wrapped: wrapped, noInput: json.RawMessage("null")}
	if objectInput {
		t.noInput = json.RawMessage("{}")
	}
	desc := spec.Description
	if desc != "" {
		desc += "\n\n"
	}
	desc += fmt.Sprintf("Alknet operation %s (%s).", spec.Name, spec.OpType)
	switch {
	case sub:
		desc += fmt.Sprintf(" Give the operation's input as \"input\"; the call collects the subscription's items, "+
			"up to \"max_items\" (default %d), and returns them when the subscription completes, the items are enough, or the call timeout passes.", mcpDefaultItems)
	case wrapped:
		desc += " Give the operation's input as \"input\"."
	}
	ann := &mcp.ToolAnnotations{Title: spec.Name, OpenWorldHint: new(false)}
	if spec.OpType == "query" || sub {
		ann.ReadOnlyHint = true
	}
	t.tool = &mcp.Tool{Name: name, Title: spec.Name, Description: desc, InputSchema: schema, Annotations: ann}
	return t
}

// mcpToolSchema is the input schema of an operation's tool. An operation
// whose input is an object (or anything) takes the tool's arguments as its
// input; any other, and every subscription, takes {"input": …}.
// objectInput: the operation's input is an object, so no arguments are
// sent as {} rather than null.
func mcpToolSchema(raw json.RawMessage, sub bool) (schema map[string]any, wrapped, objectInput bool) {
	var s any = map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &s); err != nil {
			s = map[string]any{}
		}
	}
	anything := false
	switch v := s.(type) {
	case bool:
		anything = v
	case map[string]any:
		switch t := v["type"].(type) {
		case string:
			objectInput = t == "object"
		case []any:
			objectInput = slices.Contains(t, any("object"))
		case nil:
			anything = len(v) == 0
		}
	}
	if !sub && (anything || objectInput) {
		out := map[string]any{"type": "object"}
		if m, ok := s.(map[string]any); ok && objectInput {
			out = maps.Clone(m)
			out["type"] = "object"
		}
		return out, false, objectInput
	}
	props := map[string]any{"input": s}
	out := map[string]any{"type": "object", "additionalProperties": false, "properties": props}
	if m, ok := s.(map[string]any); ok {
		if _, hasID := m["$id"]; !hasID {
			// The input schema's own references ("#/$defs/…") point at the
			// root: its definitions move there.
			inner := maps.Clone(m)
			for _, k := range []string{"$defs", "definitions"} {
				if d, ok := inner[k]; ok {
					out[k] = d
					delete(inner, k)
				}
			}
			if d, ok := inner["$schema"]; ok {
				out["$schema"] = d
				delete(inner, "$schema")
			}
			props["input"] = inner
		}
	}
	if sub {
		props["max_items"] = map[string]any{"type": "integer", "minimum": 1, "maximum": mcpMaxItems,
			"description": fmt.Sprintf("stop after this many items (default %d)", mcpDefaultItems)}
	}
	return out, true, objectInput
}

// callContext is the context of one tool call: the go-sdk's, ended also
// by the HTTP request's end and by call_timeout.
func (mr *mcpRequest) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, mr.p.cfg.Load().callTimeout)
	stop := context.AfterFunc(mr.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// callTool runs an operation tool as the caller.
func (mr *mcpRequest) callTool(t *mcpTool) mcp.ToolHandler {
	return func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		ctx, cancel := mr.callContext(ctx)
		defer cancel()
		args := req.Params.Arguments
		in := args
		maxItems := mcpDefaultItems
		if t.wrapped {
			var a struct {
				Input    json.RawMessage `json:"input"`
				MaxItems *int            `json:"max_items"`
			}
			if len(args) > 0 && !bytes.Equal(args, []byte("null")) {
				if err := mcpStrictJSON(args, &a); err != nil {
					return mr.errorResult(ctx, sdk.Errorf(sdk.CodeInvalidInput, "arguments: %v", err), ""), nil
				}
			}
			in = a.Input
			if a.MaxItems != nil {
				if *a.MaxItems < 1 || *a.MaxItems > mcpMaxItems {
					return mr.errorResult(ctx, sdk.Errorf(sdk.CodeInvalidInput, "max_items is %d: want 1 to %d", *a.MaxItems, mcpMaxItems), ""), nil
				}
				maxItems = *a.MaxItems
			}
		}
		if len(in) == 0 || bytes.Equal(in, []byte("null")) {
			in = t.noInput
		}
		if t.opType == "subscription" {
			return mr.collect(ctx, t.op, in, maxItems), nil
		}
		id, out, err := mr.p.host.InvokeWithID(ctx, mr.c.actor, t.op, in)
		if err != nil {
			return mr.errorResult(ctx, err, id), nil
		}
		return mcpJSONResult(out, id), nil
	}
}

// mcpStrictJSON decodes b into v, refusing unknown fields.
func mcpStrictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// errMCPEnoughItems ends a subscription that gave enough items.
var errMCPEnoughItems = errors.New("enough items")

// mcpCollected is the result of a subscription tool.
type mcpCollected struct {
	Items []json.RawMessage `json:"items"`
	// Complete: the subscription completed; else it was stopped
	// ("max_items" or "timeout").
	Complete bool   `json:"complete"`
	Stopped  string `json:"stopped,omitempty"`
}

// collect runs a subscription as the caller and collects up to maxItems of
// its items.
func (mr *mcpRequest) collect(ctx context.Context, op string, in json.RawMessage, maxItems int) *mcp.CallToolResult {
	p := mr.p
	if !p.streams.acquire(mr.c.key, p.cfg.Load().streamsPerID) {
		p.stats.throttled.Add(1)
		return mr.errorResult(ctx, &sdk.Error{Code: "TOO_MANY_REQUESTS", Retryable: true,
			Message: "too many open subscriptions and WebSockets for this identity; retry when some have finished"}, "")
	}
	defer p.streams.release(mr.c.key)
	res := mcpCollected{Items: []json.RawMessage{}}
	err := p.host.Subscribe(ctx, mr.c.actor, op, in, func(item json.RawMessage) error {
		res.Items = append(res.Items, slices.Clone(item))
		if len(res.Items) >= maxItems {
			return errMCPEnoughItems
		}
		return nil
	})
	switch {
	case err == nil:
		res.Complete = true
	case errors.Is(err, errMCPEnoughItems):
		res.Stopped = "max_items"
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && mr.ctx.Err() == nil:
		res.Stopped = "timeout"
	default:
		return mr.errorResult(ctx, err, "")
	}
	b, err := json.Marshal(res)
	if err != nil {
		return mr.errorResult(ctx, sdk.Errorf(sdk.CodeInternal, "encode the items: %v", err), "")
	}
	return mcpJSONResult(b, "")
}

// mcpJSONResult is a tool result holding out: as text, and as structured
// content when it is an object.
func mcpJSONResult(out json.RawMessage, requestID string) *mcp.CallToolResult {
	var buf bytes.Buffer
	if err := json.Compact(&buf, out); err != nil {
		buf.Reset()
		buf.Write(out)
	}
	res := &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: buf.String()}}}
	if b := buf.Bytes(); len(b) > 0 && b[0] == '{' {
		res.StructuredContent = json.RawMessage(b)
	}
	if requestID != "" {
		res.Meta = mcp.Meta{"alknet.dev/request_id": requestID}
	}
	return res
}

// errorResult is a failed call as a tool result: isError, with the call
// error as JSON text (docs/spec/call.md §3).
func (mr *mcpRequest) errorResult(ctx context.Context, err error, requestID string) *mcp.CallToolResult {
	_, e := mr.p.statusOf(ctx, mr.c, "", err)
	e.RequestID = requestID
	b, merr := json.Marshal(e)
	if merr != nil {
		b = []byte(`{"code":"INTERNAL","message":"encode the error","retryable":false}`)
	}
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: string(b)}}}
}

// search is the "search" tool: GET /search as a tool, each operation with
// its tool name.
func (mr *mcpRequest) search(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ctx, cancel := mr.callContext(ctx)
	defer cancel()
	var a struct {
		Query string `json:"query"`
	}
	if args := req.Params.Arguments; len(args) > 0 && !bytes.Equal(args, []byte("null")) {
		if err := mcpStrictJSON(args, &a); err != nil {
			return mr.errorResult(ctx, sdk.Errorf(sdk.CodeInvalidInput, "arguments: %v", err), ""), nil
		}
	}
	out, err := mr.p.host.Invoke(ctx, mr.c.actor, "services/list", struct{}{})
	if err != nil {
		return mr.errorResult(ctx, err, ""), nil
	}
	var list struct {
		Operations []map[string]any `json:"operations"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return mr.errorResult(ctx, sdk.Errorf(sdk.CodeInternal, "services/list answered something else: %v", err), ""), nil
	}
	q := strings.ToLower(a.Query)
	found := []map[string]any{}
	for _, op := range list.Operations {
		name, _ := op["name"].(string)
		if strings.Contains(strings.ToLower(name), q) {
			if tn := mcpToolName(name); len(tn) <= mcpMaxToolName {
				op["tool"] = tn
			}
			found = append(found, op)
		}
	}
	b, err := json.Marshal(map[string]any{"operations": found})
	if err != nil {
		return mr.errorResult(ctx, sdk.Errorf(sdk.CodeInternal, "encode the answer: %v", err), ""), nil
	}
	return mcpJSONResult(b, ""), nil
}

// schema is the "schema" tool: GET /schema as a tool.
func (mr *mcpRequest) schema(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
	ctx, cancel := mr.callContext(ctx)
	defer cancel()
	var a struct {
		Name string `json:"name"`
	}
	if err := mcpStrictJSON(req.Params.Arguments, &a); err != nil || a.Name == "" {
		return mr.errorResult(ctx, sdk.Errorf(sdk.CodeInvalidInput, "name the operation: {\"name\": \"echo/say\"} (or its tool name, \"echo.say\")"), ""), nil
	}
	name := a.Name
	if !strings.Contains(name, "/") {
		if op, ok := mcpToolOp(name); ok {
			name = op
		}
	}
	out, err := mr.p.host.Invoke(ctx, mr.c.actor, "services/schema", map[string]string{"name": name})
	if err != nil {
		return mr.errorResult(ctx, err, ""), nil
	}
	return mcpJSONResult(out, ""), nil
}
