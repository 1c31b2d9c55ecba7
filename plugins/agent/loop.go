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

// opRun is agent/run: one session, from the prompt to the final answer.
//
// Each step sends the history and the tools to the provider and streams
// the answer (delta events); the tool calls it asks for run as the caller,
// at most max_parallel_tools at once (tool_call, tool_result events), and
// their results go back to the model in the next step. The session ends
// with a final event, or an error when it spends max_steps, max_tokens or
// time_budget. Aborting agent/run (or agent/cancel) cancels the model
// request and every running tool; the node aborts those on other nodes.
func (p *Plugin) opRun(ctx context.Context, c *sdk.Call, in RunInput, emit func(Event) error) error {
	cfg := p.cfg.Load()
	if cfg == nil {
		return sdk.Errorf(sdk.CodeInternal, "the agent plugin is not configured")
	}
	if strings.TrimSpace(in.Prompt) == "" {
		return sdk.Errorf(sdk.CodeInvalidInput, "the prompt is empty")
	}
	provName := in.Provider
	if provName == "" {
		provName = cfg.defaultProv
	}
	prov, ok := cfg.providers[provName]
	if !ok {
		if provName == "" {
			return sdk.Errorf(sdk.CodeInvalidInput, "no provider is configured: add [plugins.agent.providers.<name>] base_url and model")
		}
		return sdk.Errorf(sdk.CodeInvalidInput, "no provider %q is configured ([plugins.agent.providers.%s])", provName, provName)
	}
	secret, ok := c.Capabilities.Get(prov.name)
	if !ok || len(secret.Bytes()) == 0 {
		return sdk.Errorf(sdk.CodeInternal, "the key of provider %s is not granted: store it with `alknet credential set %s` and grant it in [plugins.agent.capabilities] %s = \"credential:%s\"",
			prov.name, prov.name, prov.name, prov.name)
	}
	key := provider.NewSecret(strings.TrimSpace(string(secret.Bytes())))
	model := prov.model
	if in.Model != "" {
		model = in.Model
	}
	maxSteps := cfg.maxSteps
	if in.MaxSteps > 0 && in.MaxSteps < maxSteps {
		maxSteps = in.MaxSteps
	}
	patterns := cfg.tools
	if len(in.Tools) > 0 {
		patterns = in.Tools
	}

	ctx, cancel := context.WithTimeout(ctx, cfg.timeBudget)
	defer cancel()
	s, err := p.start(c, cfg, prov, model, cancel)
	if err != nil {
		return err
	}
	steps, tokens, state := 0, 0, "failed"
	started := time.Now()
	p.log().Info("agent session started", "session", s.info.ID, "identity", c.Identity.ID, "provider", prov.name, "model", model)
	defer func() {
		p.finish(s, state, steps, tokens)
		p.log().Info("agent session ended", "session", s.info.ID, "identity", c.Identity.ID, "provider", prov.name,
			"state", state, "steps", steps, "tokens", tokens, "duration", time.Since(started).Round(time.Millisecond))
	}()
	hist, err := p.openHistory(cfg, s.info.ID)
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "keep the session's history: %v", err)
	}
	defer hist.close()
	send := func(e Event) error {
		e.SessionID = s.info.ID
		hist.event(e)
		return emit(e)
	}
	if err := send(Event{Type: "session"}); err != nil {
		return err
	}

	tools, err := p.listTools(ctx, c, cfg, patterns)
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "%v", err)
	}
	defer tools.close()
	var msgs []provider.Message
	if in.System != "" {
		msgs = append(msgs, provider.Message{Role: provider.RoleSystem, Content: in.System})
	}
	msgs = append(msgs, provider.Message{Role: provider.RoleUser, Content: in.Prompt})
	hist.messages(msgs...)
	p.debug(cfg, "agent prompt", "session", s.info.ID, "prompt", in.Prompt)

	client := &provider.Client{BaseURL: prov.baseURL, Model: model, HTTPClient: p.HTTPClient, Timeout: prov.timeout, MaxRetries: prov.maxRetries}
	for {
		if steps >= maxSteps {
			return budgetError(fmt.Sprintf("the session took its %d steps (max_steps) without a final answer", maxSteps))
		}
		if tokens >= cfg.maxTokens {
			return budgetError(fmt.Sprintf("the session spent %d tokens (max_tokens %d)", tokens, cfg.maxTokens))
		}
		steps++
		var deltaErr error
		res, err := client.Stream(ctx, provider.Request{Messages: msgs, Tools: tools.specs()}, key, func(text string) {
			if deltaErr == nil {
				deltaErr = send(Event{Type: "delta", Text: text, Step: steps})
			}
		})
		tokens += res.Usage.TotalTokens
		p.progress(s, steps, tokens)
		if deltaErr != nil {
			return deltaErr
		}
		if err != nil {
			switch {
			case ctx.Err() != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded):
				return budgetError(fmt.Sprintf("the session ran out of its time budget (%s) waiting for the model", cfg.timeBudget))
			case ctx.Err() != nil:
				state = "cancelled"
				return ctx.Err()
			}
			return sdk.Errorf(sdk.CodeInternal, "the model request failed: %v", err)
		}
		if res.Usage.TotalTokens > 0 {
			u := res.Usage
			if err := send(Event{Type: "usage", Step: steps, Usage: &u}); err != nil {
				return err
			}
		}
		msgs = append(msgs, res.Message)
		hist.messages(res.Message)
		if len(res.Message.ToolCalls) == 0 {
			p.debug(cfg, "agent answer", "session", s.info.ID, "text", res.Message.Content)
			state = "done"
			total := provider.Usage{TotalTokens: tokens}
			return send(Event{Type: "final", Text: res.Message.Content, Step: steps, Usage: &total})
		}
		results, err := p.runTools(ctx, c, cfg, tools, res.Message.ToolCalls, steps, send)
		if err != nil {
			if ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
				state = "cancelled"
			}
			return err
		}
		msgs = append(msgs, results...)
		hist.messages(results...)
	}
}

// runTools runs one step's tool calls, at most max_parallel_tools at
// once, and returns their results in the order the model asked.
func (p *Plugin) runTools(ctx context.Context, c *sdk.Call, cfg *config, tools *toolset, calls []provider.ToolCall, step int, send func(Event) error) ([]provider.Message, error) {
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
