// Package agent is the agent plugin (docs/spec/handlers.md §Agent): LLM
// tool-calling sessions against OpenAI-compatible chat-completions APIs,
// whose tools are the call operations the session's caller may call.
//
// A session runs as its caller: agent/run declares acts_as_caller, so
// every tool call goes through the node's gates with the caller's
// identity (sdk.AsCaller) — the model gets no more than the caller has. The
// provider's key is the capability named after the provider, resolved by
// the node for each call and never kept, logged or written.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/agent/provider"
	"alknet.dev/alknet/plugins/sdk"
)

// Version of the plugin (-ldflags "-X alknet.dev/alknet/plugins/agent.Version=…").
var Version = "0.1.0"

// Operation names and scopes.
const (
	OpRun      = "agent/run"
	OpSessions = "agent/sessions"
	OpCancel   = "agent/cancel"
	// ScopeRun lets an identity run sessions.
	ScopeRun = "agent:run"
)

// Plugin is the agent plugin.
type Plugin struct {
	// Logger replaces sdk.Logger().
	Logger hclog.Logger
	// HTTPClient reaches the providers (default: a client of its own).
	HTTPClient *http.Client

	cfg   atomic.Pointer[config]
	host  *sdk.Host
	state string

	mu       sync.Mutex
	sessions map[string]*session // running, and the last finished ones
	finished []string            // ids of finished sessions, oldest first
	nextID   atomic.Uint64
}

var (
	_ sdk.ConnServer        = (*Plugin)(nil)
	_ sdk.OperationSet      = (*Plugin)(nil)
	_ sdk.Configurer        = (*Plugin)(nil)
	_ sdk.SettingsValidator = (*Plugin)(nil)
)

// Info describes the plugin.
func (p *Plugin) Info() sdk.Info {
	return sdk.Info{Name: "agent", Version: Version, ALPNs: []string{ALPN},
		Description:  "LLM tool-calling sessions whose tools are the caller's operations; provider keys from the vault",
		ConfigSchema: json.RawMessage(configSchema)}
}

func (p *Plugin) log() hclog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return sdk.Logger()
}

// ValidateSettings checks [plugins.agent] without applying it.
func (p *Plugin) ValidateSettings(settings json.RawMessage) error {
	_, err := parseSettings(settings)
	return err
}

// Configure applies the settings; running sessions keep theirs.
func (p *Plugin) Configure(_ context.Context, settings json.RawMessage, host *sdk.Host) error {
	c, err := parseSettings(settings)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.host = host
	p.state = host.StateDir()
	if c.persist && p.state == "" {
		return fmt.Errorf("agent settings: persist needs the plugin's state directory, which this node does not give")
	}
	p.cfg.Store(c)
	if p.sessions == nil {
		p.sessions = map[string]*session{}
	}
	return nil
}

// RunInput is the input of agent/run.
type RunInput struct {
	// Prompt is the user's message.
	Prompt string `json:"prompt" jsonschema:"the user's message"`
	// System is an optional system message.
	System string `json:"system,omitempty"`
	// Provider names a configured provider (default: default_provider).
	Provider string `json:"provider,omitempty"`
	// Model overrides the provider's model.
	Model string `json:"model,omitempty"`
	// Tools are operation patterns ("echo/*") that narrow the tools
	// (default: the plugin's tools setting, else every operation the
	// caller may call).
	Tools []string `json:"tools,omitempty"`
	// MaxSteps lowers the plugin's max_steps for this session.
	MaxSteps int `json:"max_steps,omitempty"`
}

// Event is one item of agent/run.
type Event struct {
	// Type is session, delta, tool_call, tool_result, usage or final.
	Type      string `json:"type"`
	SessionID string `json:"session_id,omitempty"`
	// Text: delta (a piece of the answer as it streams), final (the whole
	// answer).
	Text string `json:"text,omitempty"`
	// ID, Tool, Operation, Arguments: tool_call and tool_result.
	ID        string          `json:"id,omitempty"`
	Tool      string          `json:"tool,omitempty"`
	Operation string          `json:"operation,omitempty"`
	Arguments json.RawMessage `json:"arguments,omitempty"`
	// Result and Error: tool_result (Error set when the call failed; the
	// model got the error as the result).
	Result json.RawMessage `json:"result,omitempty"`
	Error  bool            `json:"error,omitempty"`
	// Step counts the model requests (from 1).
	Step int `json:"step,omitempty"`
	// Usage: usage (this step's) and final (the session's).
	Usage *provider.Usage `json:"usage,omitempty"`
}

// SessionInfo is one entry of agent/sessions.
type SessionInfo struct {
	ID       string    `json:"id"`
	Provider string    `json:"provider"`
	Model    string    `json:"model"`
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Steps    int       `json:"steps"`
	Tokens   int       `json:"tokens"`
}

// CancelInput is the input of agent/cancel.
type CancelInput struct {
	ID string `json:"id"`
}

// Operations: agent/run, agent/sessions, agent/cancel.
func (p *Plugin) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Subscription(OpRun, p.opRun).RequireScopes(ScopeRun).ActsAsCaller().
			Describe("runs an agent session: the model answers the prompt, calling the caller's operations as tools; streams its events"),
		sdk.Query(OpSessions, p.opSessions).RequireScopes(ScopeRun).Describe("the caller's running and recent sessions"),
		sdk.Mutation(OpCancel, p.opCancel).RequireScopes(ScopeRun).Describe("cancels one of the caller's running sessions: its model request and every running tool"),
	}
}

// session is one running or finished agent session.
type session struct {
	info   SessionInfo
	owner  string
	cancel context.CancelFunc
}

func (p *Plugin) opSessions(_ context.Context, c *sdk.Call, _ struct{}) ([]SessionInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []SessionInfo{}
	for _, s := range p.sessions {
		if s.owner == c.Identity.ID {
			out = append(out, s.info)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out, nil
}

func (p *Plugin) opCancel(_ context.Context, c *sdk.Call, in CancelInput) (SessionInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.sessions[in.ID]
	if !ok || s.owner != c.Identity.ID {
		return SessionInfo{}, sdk.Errorf(sdk.CodeNotFound, "no session %q of yours (agent/sessions lists them)", in.ID)
	}
	if s.info.State == "running" {
		s.cancel()
		s.info.State = "cancelled"
	}
	return s.info, nil
}

// start registers a session of c's caller, within the per-identity bound.
func (p *Plugin) start(owner string, cfg *config, prov providerConfig, model string, cancel context.CancelFunc) (*session, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	running := 0
	for _, s := range p.sessions {
		if s.owner == owner && s.info.State == "running" {
			running++
		}
	}
	if running >= cfg.sessionsPerID {
		return nil, sdk.Errorf(sdk.CodeInvalidInput, "%d sessions of yours are running (max_sessions_per_identity): cancel one or wait", running)
	}
	id := fmt.Sprintf("s%d-%d", time.Now().Unix(), p.nextID.Add(1))
	s := &session{info: SessionInfo{ID: id, Provider: prov.name, Model: model, State: "running", Started: time.Now().UTC()},
		owner: owner, cancel: cancel}
	p.sessions[id] = s
	return s, nil
}

// finish records how s ended, keeping the last maxFinishedKept.
func (p *Plugin) finish(s *session, state string, steps, tokens int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.info.State == "running" {
		s.info.State = state
	}
	s.info.Steps, s.info.Tokens = steps, tokens
	p.finished = append(p.finished, s.info.ID)
	for len(p.finished) > maxFinishedKept {
		delete(p.sessions, p.finished[0])
		p.finished = p.finished[1:]
	}
}

func (p *Plugin) progress(s *session, steps, tokens int) {
	p.mu.Lock()
	s.info.Steps, s.info.Tokens = steps, tokens
	p.mu.Unlock()
}

// errBudget ends a session that spent its steps, tokens or time.
var errBudget = errors.New("budget")

func sortTools(t []provider.Tool) {
	sort.Slice(t, func(i, j int) bool { return t[i].Name < t[j].Name })
}
