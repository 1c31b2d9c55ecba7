package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"sync"

	"alknet.dev/alknet/plugins/agent/provider"
	"alknet.dev/alknet/plugins/sdk"
)

// Tool names: providers allow ^[a-zA-Z0-9_-]{1,64}$, operation names are
// svc/op (lowercase, digits, '-', '_', '.', '/'). A '/' is written "__"
// and a '.' "_dot_"; operations whose names already hold "__" or whose
// tool name would pass 64 characters are not offered.
var toolNameOK = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// toolName is the provider's name of operation op ("" when it has none).
func toolName(op string) string {
	if strings.Contains(op, "__") || strings.Contains(op, "_dot_") {
		return ""
	}
	n := strings.ReplaceAll(strings.ReplaceAll(op, ".", "_dot_"), "/", "__")
	if !toolNameOK.MatchString(n) {
		return ""
	}
	return n
}

// operationOf reverses toolName.
func operationOf(tool string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tool, "__", "/"), "_dot_", ".")
}

// tool is an operation offered to the model.
type tool struct {
	op     string
	opType string
	// wrapped: the operation's input is not an object, so the tool takes
	// {"input": …}.
	wrapped bool
	spec    provider.Tool
	// peer: the operation is on another node, reached through its agent
	// plugin (peers.go).
	peer *peerSession
}

// toolset is what one session offers, by tool name, and the peers it
// reaches.
type toolset struct {
	byName map[string]*tool
	peers  map[string]*peerSession
}

func newToolset() *toolset {
	return &toolset{byName: map[string]*tool{}, peers: map[string]*peerSession{}}
}

// close ends the session's connections to peers.
func (ts *toolset) close() {
	for _, ps := range ts.peers {
		_ = ps.conn.Close(0, "session ended")
	}
}

// listTools asks the node, as the session's caller, for the operations it
// may call (services/list shows only those), keeps those patterns allow,
// and reads each one's schema.
func (p *Plugin) listTools(ctx context.Context, c *caller, cfg *config, patterns []string) (*toolset, error) {
	out, err := p.host.Invoke(ctx, c.as, "services/list", struct{}{})
	if err != nil {
		return nil, fmt.Errorf("list the operations: %w", err)
	}
	var list struct {
		Operations []struct {
			Name   string `json:"name"`
			OpType string `json:"op_type"`
		} `json:"operations"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("services/list answered something else: %w", err)
	}
	var names []string
	for _, op := range list.Operations {
		if strings.HasPrefix(op.Name, "agent/") || toolName(op.Name) == "" || !allowed(op.Name, patterns) {
			continue
		}
		names = append(names, op.Name)
	}
	ts := newToolset()
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() { // owned by listTools: waited for below
			defer wg.Done()
			defer func() { <-sem }()
			t, err := p.describeTool(ctx, c, name)
			if err != nil {
				p.log().Debug("an operation is not offered as a tool", "operation", name, "error", err)
				return
			}
			mu.Lock()
			ts.byName[t.spec.Name] = t
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, ps := range p.addPeerTools(ctx, c, cfg, ts, patterns) {
		ts.peers[ps.name] = ps
	}
	return ts, nil
}

func allowed(op string, patterns []string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, pat := range patterns {
		if ok, _ := path.Match(pat, op); ok {
			return true
		}
	}
	return false
}

func (p *Plugin) describeTool(ctx context.Context, c *caller, name string) (*tool, error) {
	out, err := p.host.Invoke(ctx, c.as, "services/schema", map[string]string{"name": name})
	if err != nil {
		return nil, err
	}
	var spec struct {
		Name        string          `json:"name"`
		OpType      string          `json:"op_type"`
		Description string          `json:"description"`
		InputSchema json.RawMessage `json:"input_schema"`
	}
	if err := json.Unmarshal(out, &spec); err != nil {
		return nil, err
	}
	t := &tool{op: spec.Name, opType: spec.OpType}
	t.spec = toolSpec(toolName(spec.Name), spec.Name, spec.OpType, spec.Description, spec.InputSchema, &t.wrapped)
	return t, nil
}

// toolSpec is the provider's description of operation full: its input
// schema as the tool's parameters (wrapped in {"input": …} when it is not
// an object, which *wrapped reports).
func toolSpec(name, full, opType, desc string, params json.RawMessage, wrapped *bool) provider.Tool {
	var top struct {
		Type any `json:"type"`
	}
	if len(params) == 0 {
		params = json.RawMessage(`{"type":"object"}`)
	} else if json.Unmarshal(params, &top) != nil || top.Type != "object" {
		*wrapped = true
		params = json.RawMessage(`{"type":"object","required":["input"],"properties":{"input":` + string(params) + `}}`)
	}
	if desc == "" {
		desc = "the " + opType + " " + full
	}
	if opType == "subscription" {
		desc += " (a subscription: its first items are returned)"
	}
	return provider.Tool{Name: name, Description: desc + " [operation " + full + "]", Parameters: params}
}

// specs are the tools as the provider takes them.
func (ts *toolset) specs() []provider.Tool {
	out := make([]provider.Tool, 0, len(ts.byName))
	for _, t := range ts.byName {
		out = append(out, t.spec)
	}
	sortTools(out)
	return out
}

// run calls the operation a tool call names, as the session's caller,
// and returns the result the model gets: the output, or the call error
// as JSON (a tool error is a result, not the end of the session). A tool
// name that was not offered still goes to the node, which answers it as
// it answers the caller (FORBIDDEN, NOT_FOUND): the model learns why; one
// whose first part names a peer goes to that peer likewise.
func (p *Plugin) run(ctx context.Context, c *caller, ts *toolset, call provider.ToolCall, maxItems int) (op string, result json.RawMessage, failed bool) {
	t, ok := ts.byName[call.Name]
	if !ok {
		t = &tool{op: operationOf(call.Name), opType: "query"}
		if peer, rest, found := strings.Cut(t.op, "/"); found && ts.peers[peer] != nil {
			t.op, t.peer = rest, ts.peers[peer]
		}
	}
	shown := t.op
	if t.peer != nil {
		shown = t.peer.name + "/" + t.op
	}
	var input json.RawMessage
	if strings.TrimSpace(call.Arguments) == "" {
		input = json.RawMessage("{}")
	} else if !json.Valid([]byte(call.Arguments)) {
		return shown, errorResult(sdk.Errorf(sdk.CodeInvalidInput, "the arguments are not JSON")), true
	} else {
		input = json.RawMessage(call.Arguments)
	}
	if t.wrapped {
		var w struct {
			Input json.RawMessage `json:"input"`
		}
		if err := json.Unmarshal(input, &w); err != nil || len(w.Input) == 0 {
			return shown, errorResult(sdk.Errorf(sdk.CodeInvalidInput, `this tool takes {"input": …}`)), true
		}
		input = w.Input
	}
	var out json.RawMessage
	var err error
	if t.peer != nil {
		out, err = p.callPeer(ctx, t, input, maxItems)
	} else {
		out, err = p.invokeAs(ctx, c.as, t.op, t.opType, input, maxItems)
	}
	if err != nil {
		return shown, errorResult(err), true
	}
	return shown, out, false
}

// asCallError is err as a call error: itself, or INTERNAL with its text.
func asCallError(err error) *sdk.Error {
	var ce *sdk.Error
	if !errors.As(err, &ce) {
		ce = sdk.Errorf(sdk.CodeInternal, "%v", err)
	}
	return ce
}

// errorResult is a call error as the tool result the model reads.
func errorResult(err error) json.RawMessage {
	ce := asCallError(err)
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": ce.Code, "message": ce.Message}})
	return b
}
