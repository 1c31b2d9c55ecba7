package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"alknet.dev/alknet/plugins/agent/provider"
	"alknet.dev/alknet/plugins/sdk"
)

// caller is who a session works for: the actor its tool calls act as, the
// actor peers are dialed as, its identity and the capabilities granted
// for its request.
type caller struct {
	as   sdk.Actor
	dial sdk.Actor
	id   *sdk.Identity
	caps sdk.Capabilities
}

// convo is one session: its provider, tools, history and budgets.
type convo struct {
	p        *Plugin
	cl       *caller
	cfg      *config
	prov     providerConfig
	model    string
	key      provider.Secret
	maxSteps int
	tools    *toolset
	msgs     []provider.Message
	hist     *history
	s        *session
	steps    int // over the whole session
	tokens   int
	started  time.Time
	state    string
	client   *provider.Client
}

// openConvo starts a session for cl: the provider and its key, the
// per-identity bound, the tools (on this node and on peers) and the
// history file. cancel ends the session (agent/cancel).
func (p *Plugin) openConvo(ctx context.Context, cl *caller, in RunInput, cancel context.CancelFunc) (*convo, error) {
	cfg := p.cfg.Load()
	if cfg == nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "the agent plugin is not configured")
	}
	if cl.id == nil || !cl.id.HasScope(ScopeRun) {
		return nil, sdk.Errorf(sdk.CodeForbidden, "missing required scope: %s", ScopeRun)
	}
	provName := in.Provider
	if provName == "" {
		provName = cfg.defaultProv
	}
	prov, ok := cfg.providers[provName]
	if !ok {
		if provName == "" {
			return nil, sdk.Errorf(sdk.CodeInvalidInput, "no provider is configured: add [plugins.agent.providers.<name>] base_url and model")
		}
		return nil, sdk.Errorf(sdk.CodeInvalidInput, "no provider %q is configured ([plugins.agent.providers.%s])", provName, provName)
	}
	secret, ok := cl.caps.Get(prov.name)
	if !ok || len(secret.Bytes()) == 0 {
		return nil, sdk.Errorf(sdk.CodeInternal, "the key of provider %s is not granted: store it with `alknet credential set %s` and grant it in [plugins.agent.capabilities] %s = \"credential:%s\"",
			prov.name, prov.name, prov.name, prov.name)
	}
	cv := &convo{p: p, cl: cl, cfg: cfg, prov: prov, model: prov.model, key: provider.NewSecret(strings.TrimSpace(string(secret.Bytes()))),
		maxSteps: cfg.maxSteps, started: time.Now(), state: "failed"}
	if in.Model != "" {
		cv.model = in.Model
	}
	if in.MaxSteps > 0 && in.MaxSteps < cv.maxSteps {
		cv.maxSteps = in.MaxSteps
	}
	patterns := cfg.tools
	if len(in.Tools) > 0 {
		patterns = in.Tools
	}
	s, err := p.start(cl.id.ID, cfg, prov, cv.model, cancel)
	if err != nil {
		return nil, err
	}
	cv.s = s
	p.log().Info("agent session started", "session", s.info.ID, "identity", cl.id.ID, "provider", prov.name, "model", cv.model)
	if cv.hist, err = p.openHistory(cfg, s.info.ID); err != nil {
		cv.close()
		return nil, sdk.Errorf(sdk.CodeInternal, "keep the session's history: %v", err)
	}
	if cv.tools, err = p.listTools(ctx, cl, cfg, patterns); err != nil {
		cv.close()
		return nil, sdk.Errorf(sdk.CodeInternal, "%v", err)
	}
	if in.System != "" {
		cv.msgs = append(cv.msgs, provider.Message{Role: provider.RoleSystem, Content: in.System})
		cv.hist.messages(cv.msgs...)
	}
	retries := prov.maxRetries
	if retries == 0 {
		retries = -1 // the client reads 0 as its default; max_retries = 0 means none
	}
	cv.client = &provider.Client{BaseURL: prov.baseURL, Model: cv.model, HTTPClient: p.HTTPClient, Timeout: prov.timeout, MaxRetries: retries}
	return cv, nil
}

// close ends the session: its peers' connections, its history, its
// entry in agent/sessions, and the line that says how it went.
func (cv *convo) close() {
	if cv.tools != nil {
		cv.tools.close()
	}
	cv.hist.close()
	cv.p.finish(cv.s, cv.state, cv.steps, cv.tokens)
	cv.p.log().Info("agent session ended", "session", cv.s.info.ID, "identity", cv.cl.id.ID, "provider", cv.prov.name,
		"state", cv.state, "steps", cv.steps, "tokens", cv.tokens, "duration", time.Since(cv.started).Round(time.Millisecond))
}

// opRun is agent/run: one session, from the prompt to the final answer.
// Aborting agent/run (or agent/cancel) cancels the model request and every
// running tool; the node aborts those on other nodes.
func (p *Plugin) opRun(ctx context.Context, c *sdk.Call, in RunInput, emit func(Event) error) error {
	if strings.TrimSpace(in.Prompt) == "" {
		return sdk.Errorf(sdk.CodeInvalidInput, "the prompt is empty")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cv, err := p.openConvo(ctx, &caller{as: sdk.AsCaller(c), dial: c, id: c.Identity, caps: c.Capabilities}, in, cancel)
	if err != nil {
		return err
	}
	defer cv.close()
	if err := cv.send(emit, Event{Type: "session"}); err != nil {
		return err
	}
	return cv.turn(ctx, in.Prompt, emit)
}

func (cv *convo) send(emit func(Event) error, e Event) error {
	e.SessionID = cv.s.info.ID
	cv.hist.event(e)
	return emit(e)
}

// turn answers one user message. Each step sends the history and the
// tools to the provider and streams the answer (delta events); the tool
// calls it asks for run as the caller, at most max_parallel_tools at once
// (tool_call, tool_result events), and their results go back to the model
// in the next step. The turn ends with a final event, or an error when it
// spends max_steps or time_budget, or the session its max_tokens.
func (cv *convo) turn(ctx context.Context, prompt string, emit func(Event) error) error {
	p, cfg := cv.p, cv.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.timeBudget)
	defer cancel()
	user := provider.Message{Role: provider.RoleUser, Content: prompt}
	cv.msgs = append(cv.msgs, user)
	cv.hist.messages(user)
	p.debug(cfg, "agent prompt", "session", cv.s.info.ID, "prompt", prompt)
	send := func(e Event) error { return cv.send(emit, e) }
	for step := 1; ; step++ {
		if step > cv.maxSteps {
			return budgetError(fmt.Sprintf("the session took its %d steps (max_steps) without a final answer", cv.maxSteps))
		}
		if cv.tokens >= cfg.maxTokens {
			return budgetError(fmt.Sprintf("the session spent %d tokens (max_tokens %d)", cv.tokens, cfg.maxTokens))
		}
		cv.steps++
		var deltaErr error
		res, err := cv.client.Stream(ctx, provider.Request{Messages: cv.msgs, Tools: cv.tools.specs()}, cv.key, func(text string) {
			if deltaErr == nil {
				deltaErr = send(Event{Type: "delta", Text: text, Step: cv.steps})
			}
		})
		cv.tokens += res.Usage.TotalTokens
		p.progress(cv.s, cv.steps, cv.tokens)
		if deltaErr != nil {
			return deltaErr
		}
		if err != nil {
			switch {
			case ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded):
				return budgetError(fmt.Sprintf("the session ran out of its time budget (%s) waiting for the model", cfg.timeBudget))
			case ctx.Err() != nil:
				cv.state = "cancelled"
				return ctx.Err()
			}
			return sdk.Errorf(sdk.CodeInternal, "the model request failed: %v", err)
		}
		if res.Usage.TotalTokens > 0 {
			u := res.Usage
			if err := send(Event{Type: "usage", Step: cv.steps, Usage: &u}); err != nil {
				return err
			}
		}
		cv.msgs = append(cv.msgs, res.Message)
		cv.hist.messages(res.Message)
		if len(res.Message.ToolCalls) == 0 {
			p.debug(cfg, "agent answer", "session", cv.s.info.ID, "text", res.Message.Content)
			cv.state = "done"
			total := provider.Usage{TotalTokens: cv.tokens}
			return send(Event{Type: "final", Text: res.Message.Content, Step: cv.steps, Usage: &total})
		}
		results, err := p.runTools(ctx, cv.cl, cfg, cv.tools, res.Message.ToolCalls, cv.steps, send)
		if err != nil {
			if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				cv.state = "cancelled"
			}
			return err
		}
		cv.msgs = append(cv.msgs, results...)
		cv.hist.messages(results...)
	}
}

// runTools runs one step's tool calls, at most max_parallel_tools at
// once, and returns their results in the order the model asked.
func (p *Plugin) runTools(ctx context.Context, c *caller, cfg *config, tools *toolset, calls []provider.ToolCall, step int, send func(Event) error) ([]provider.Message, error) {
	results := make([]provider.Message, len(calls))
	var mu sync.Mutex // send is called from the tool goroutines
	var sendErr error
	emit := func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		if sendErr == nil {
			sendErr = send(e)
		}
	}
	sem := make(chan struct{}, cfg.parallelTools)
	var wg sync.WaitGroup
	for i, tc := range calls {
		args := json.RawMessage(tc.Arguments)
		if !json.Valid(args) {
			args, _ = json.Marshal(tc.Arguments)
		}
		emit(Event{Type: "tool_call", ID: tc.ID, Tool: tc.Name, Operation: operationOf(tc.Name), Arguments: args, Step: step})
		wg.Add(1)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Done()
			wg.Wait()
			return nil, ctx.Err()
		}
		go func() { // owned by runTools: waited for below
			defer wg.Done()
			defer func() { <-sem }()
			op, result, failed := p.run(ctx, c, tools, tc, cfg.subItems)
			p.debug(cfg, "agent tool result", "operation", op, "result", string(result))
			results[i] = provider.Message{Role: provider.RoleTool, ToolCallID: tc.ID, Content: string(result)}
			emit(Event{Type: "tool_result", ID: tc.ID, Tool: tc.Name, Operation: op, Result: result, Error: failed, Step: step})
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			return nil, budgetError(fmt.Sprintf("the session ran out of its time budget (%s) while tools ran", cfg.timeBudget))
		}
		return nil, ctx.Err()
	}
	return results, sendErr
}

func budgetError(msg string) error {
	return &sdk.Error{Code: sdk.CodeTimeout, Message: msg, Details: map[string]string{"reason": errBudget.Error()}}
}

// debug logs content (prompts, answers, tool results) only when
// debug_content is set.
func (p *Plugin) debug(cfg *config, msg string, args ...any) {
	if cfg.debugContent {
		p.log().Debug(msg, args...)
	}
}
