package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"alknet.dev/alknet/plugins/sdk"
)

// Tools on peers (docs/spec/handlers.md §Agent). A session reaches the
// operations of another node through that node's agent plugin, on ALPN
// alknet/agent, dialed as this node (Host.DialPeer: pinned, never trust
// on first use). Each stream carries one request — a JSON line — and its
// answer: {"kind":"tools"} lists the operations this node may call there
// that are remote_safe; {"kind":"call","operation","input","max_items"}
// calls one of them. The serving side calls as the connection's identity
// (this node, as the peer resolves it), through every gate, and answers
// NOT_FOUND for an operation that is not remote_safe: the peer is
// default-deny toward the nodes that use it, as every dialed-out call
// connection is (docs/spec/call.md §7). Resetting the stream aborts the
// call there.

// ALPN of peer tool requests (and, later, interactive sessions).
const ALPN = "alknet/agent"

// maxPeerLine bounds one request or answer line.
const maxPeerLine = 16 << 20

type peerRequest struct {
	Kind      string          `json:"kind"`
	Operation string          `json:"operation,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	MaxItems  int             `json:"max_items,omitempty"`
}

type peerTool struct {
	Name        string          `json:"name"`
	OpType      string          `json:"op_type"`
	Description string          `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
}

type peerAnswer struct {
	Tools  []peerTool      `json:"tools,omitempty"`
	Output json.RawMessage `json:"output,omitempty"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

// ServeConn serves peer tool requests on alknet/agent.
func (p *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	c.EachStream(ctx, func(s *sdk.Stream) {
		defer s.Close()
		p.servePeerStream(c, s)
	})
	return nil
}

func (p *Plugin) servePeerStream(c *sdk.Conn, s *sdk.Stream) {
	r := bufio.NewReaderSize(io.LimitReader(s, maxPeerLine), 64<<10)
	line, err := r.ReadBytes('\n')
	if err != nil {
		return
	}
	var req peerRequest
	if err := json.Unmarshal(line, &req); err != nil {
		writeLine(s, peerError(sdk.Errorf(sdk.CodeInvalidInput, "not a request: %v", err)))
		return
	}
	if req.Kind == "chat" {
		p.serveChat(c, s, r, line)
		return
	}
	ctx, cancel := context.WithCancel(c.Context())
	defer cancel()
	go func() { // owned by this stream: ends when the asker resets or closes it
		_, _ = r.ReadByte()
		cancel()
	}()
	cfg := p.cfg.Load()
	switch req.Kind {
	case "tools":
		tools, err := p.peerTools(ctx, c)
		if err != nil {
			writeLine(s, peerError(err))
			return
		}
		writeLine(s, peerAnswer{Tools: tools})
	case "call":
		spec, err := p.remoteSafeSpec(ctx, c, req.Operation)
		if err != nil {
			writeLine(s, peerError(err))
			return
		}
		max := cfg.subItems
		if req.MaxItems > 0 && req.MaxItems < max {
			max = req.MaxItems
		}
		out, err := p.invokeAs(ctx, c, spec.Name, spec.OpType, req.Input, max)
		if err != nil {
			writeLine(s, peerError(err))
			return
		}
		writeLine(s, peerAnswer{Output: out})
	default:
		writeLine(s, peerError(sdk.Errorf(sdk.CodeInvalidInput, "unknown request kind %q", req.Kind)))
	}
}

// peerTools are the remote_safe operations the connection's identity may
// call here (never agent/*).
func (p *Plugin) peerTools(ctx context.Context, c *sdk.Conn) ([]peerTool, error) {
	out, err := p.host.Invoke(ctx, c, "services/list", struct{}{})
	if err != nil {
		return nil, err
	}
	var list struct {
		Operations []struct {
			Name string `json:"name"`
		} `json:"operations"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, err
	}
	tools := []peerTool{}
	for _, op := range list.Operations {
		if strings.HasPrefix(op.Name, "agent/") {
			continue
		}
		spec, err := p.remoteSafeSpec(ctx, c, op.Name)
		if err != nil {
			continue
		}
		tools = append(tools, peerTool{Name: spec.Name, OpType: spec.OpType, Description: spec.Description, InputSchema: spec.InputSchema})
	}
	return tools, nil
}

type opSpec struct {
	Name        string          `json:"name"`
	OpType      string          `json:"op_type"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"input_schema"`
	RemoteSafe  bool            `json:"remote_safe"`
}

// remoteSafeSpec is op's spec as c may see it, or NOT_FOUND when it is not
// there or not remote_safe.
func (p *Plugin) remoteSafeSpec(ctx context.Context, c *sdk.Conn, op string) (*opSpec, error) {
	op = strings.TrimPrefix(op, "/")
	out, err := p.host.Invoke(ctx, c, "services/schema", map[string]string{"name": op})
	var spec opSpec
	if err == nil {
		err = json.Unmarshal(out, &spec)
	}
	if err != nil || !spec.RemoteSafe || strings.HasPrefix(spec.Name, "agent/") {
		return nil, sdk.Errorf(sdk.CodeNotFound, "operation not found: %s", op)
	}
	return &spec, nil
}

// invokeAs calls op as actor: a subscription collects up to max items.
func (p *Plugin) invokeAs(ctx context.Context, actor sdk.Actor, op, opType string, input json.RawMessage, max int) (json.RawMessage, error) {
	if len(input) == 0 {
		input = json.RawMessage("null")
	}
	if opType != "subscription" {
		return p.host.Invoke(ctx, actor, op, input)
	}
	items := []json.RawMessage{}
	errStop := errors.New("enough items")
	err := p.host.Subscribe(ctx, actor, op, input, func(item json.RawMessage) error {
		items = append(items, item)
		if len(items) >= max {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	return json.Marshal(map[string]any{"items": items, "complete": err == nil})
}

func peerError(err error) peerAnswer {
	ce := asCallError(err)
	a := peerAnswer{}
	a.Error = &struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{string(ce.Code), ce.Message}
	return a
}

func writeLine(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	_, _ = w.Write(append(b, '\n'))
}

// peerSession is a session's connection to one peer's agent plugin.
type peerSession struct {
	name string
	conn *sdk.Conn
}

// ask sends one request on a new stream and reads the answer; ctx ending
// resets the stream, which aborts the call on the peer.
func (ps *peerSession) ask(ctx context.Context, req peerRequest) (*peerAnswer, error) {
	s, err := ps.conn.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", ps.name, err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.CancelWrite(1) })
	defer stop()
	writeLine(s, req)
	line, err := bufio.NewReaderSize(io.LimitReader(s, maxPeerLine), 64<<10).ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("peer %s: no answer: %w", ps.name, err)
	}
	var a peerAnswer
	if err := json.Unmarshal(line, &a); err != nil {
		return nil, fmt.Errorf("peer %s answered something else: %w", ps.name, err)
	}
	if a.Error != nil {
		return nil, &sdk.Error{Code: sdk.Code(a.Error.Code), Message: a.Error.Message}
	}
	return &a, nil
}

// peerTools dials every configured peer as this node for the session c
// serves, and adds the tools each offers as <peer>__<tool>. A peer that
// cannot be reached is logged and left out.
func (p *Plugin) addPeerTools(ctx context.Context, c *caller, cfg *config, ts *toolset, patterns []string) []*peerSession {
	var sessions []*peerSession
	for _, pc := range cfg.peers {
		conn, err := p.host.DialPeer(ctx, c.dial, pc.target, ALPN)
		if err != nil {
			p.log().Warn("agent peer unreachable; its tools are not offered", "peer", pc.name, "error", err)
			continue
		}
		ps := &peerSession{name: pc.name, conn: conn}
		sessions = append(sessions, ps)
		a, err := ps.ask(ctx, peerRequest{Kind: "tools"})
		if err != nil {
			p.log().Warn("agent peer did not list its tools", "peer", pc.name, "error", err)
			continue
		}
		for _, pt := range a.Tools {
			full := pc.name + "/" + pt.Name
			name := toolName(full)
			if name == "" || !allowed(full, patterns) {
				continue
			}
			t := &tool{op: pt.Name, opType: pt.OpType, peer: ps}
			t.spec = toolSpec(name, full, pt.OpType, pt.Description, pt.InputSchema, &t.wrapped)
			ts.byName[name] = t
		}
	}
	return sessions
}

// callPeer runs a tool call on the tool's peer.
func (p *Plugin) callPeer(ctx context.Context, t *tool, input json.RawMessage, maxItems int) (json.RawMessage, error) {
	a, err := t.peer.ask(ctx, peerRequest{Kind: "call", Operation: t.op, Input: input, MaxItems: maxItems})
	if err != nil {
		return nil, err
	}
	return a.Output, nil
}
