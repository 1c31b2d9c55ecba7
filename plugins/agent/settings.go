package agent

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// Settings are the keys of [plugins.agent] (README.md lists them).
type Settings struct {
	// Providers are the OpenAI-compatible APIs sessions may use, by name;
	// the key of provider <name> is the capability <name>, granted in
	// [plugins.agent.capabilities] (<name> = "credential:<name>").
	Providers map[string]ProviderSettings `json:"providers,omitempty"`
	// DefaultProvider is used when a session names none (default: the
	// only provider, when there is one).
	DefaultProvider string `json:"default_provider,omitempty"`
	// Tools are the operation patterns (path.Match: "echo/*") sessions may
	// use as tools when they name none (default: every operation the
	// session's identity may call, but agent/*).
	Tools []string `json:"tools,omitempty"`
	// MaxSteps bounds the model requests of one session (default 16).
	MaxSteps int `json:"max_steps,omitempty"`
	// MaxTokens bounds the tokens one session spends, prompt and
	// completion together (default 200000).
	MaxTokens int `json:"max_tokens,omitempty"`
	// TimeBudget bounds one session's wall time (default "5m").
	TimeBudget string `json:"time_budget,omitempty"`
	// MaxSessionsPerIdentity bounds the sessions one identity runs at once
	// (default 4).
	MaxSessionsPerIdentity int `json:"max_sessions_per_identity,omitempty"`
	// MaxParallelTools bounds the tool calls of one step run at once
	// (default 4).
	MaxParallelTools int `json:"max_parallel_tools,omitempty"`
	// MaxSubscriptionItems is how many items a subscription used as a tool
	// collects before it is stopped (default 20).
	MaxSubscriptionItems int `json:"max_subscription_items,omitempty"`
	// Persist keeps each session's history in <state>/<id>.jsonl.
	Persist bool `json:"persist,omitempty"`
	// DebugContent logs prompts, model output and tool results at debug
	// level (never the key). Off by default: content is the user's.
	DebugContent bool `json:"debug_content,omitempty"`
	// Peers are other nodes whose operations sessions may use as tools
	// (<name>__<tool>), through their agent plugins, as this node.
	Peers []PeerSettings `json:"peers,omitempty"`
}

// PeerSettings are one [[plugins.agent.peers]] entry.
type PeerSettings struct {
	// Name prefixes the peer's tools ("b": b/echo/say, tool b__echo__say).
	Name string `json:"name"`
	// Target is "FINGERPRINT@host:port", or the "host:port" of a node in
	// known_peers: the peer is always pinned.
	Target string `json:"target"`
}

// ProviderSettings are one [plugins.agent.providers.<name>] table.
type ProviderSettings struct {
	// BaseURL is the API's base, up to /v1 ("https://api.openai.com/v1").
	BaseURL string `json:"base_url"`
	// Model is the model sessions ask for unless they name another.
	Model string `json:"model"`
	// Timeout bounds one model request, retries included (default "2m").
	Timeout string `json:"timeout,omitempty"`
	// MaxRetries bounds the attempts after a 429 or 5xx (default 3).
	MaxRetries *int `json:"max_retries,omitempty"`
}

// Defaults of the bounds (docs/architecture.md D14).
const (
	defaultMaxSteps       = 16
	defaultMaxTokens      = 200000
	defaultTimeBudget     = 5 * time.Minute
	defaultSessionsPerID  = 4
	defaultParallelTools  = 4
	defaultSubItems       = 20
	defaultRequestTimeout = 2 * time.Minute
	maxFinishedKept       = 64 // finished sessions agent/sessions still lists
)

type providerConfig struct {
	name, baseURL, model string
	timeout              time.Duration
	maxRetries           int
}

type peerConfig struct{ name, target string }

type config struct {
	peers         []peerConfig
	providers     map[string]providerConfig
	defaultProv   string
	tools         []string
	maxSteps      int
	maxTokens     int
	timeBudget    time.Duration
	sessionsPerID int
	parallelTools int
	subItems      int
	persist       bool
	debugContent  bool
}

var providerName = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

func parseSettings(raw json.RawMessage) (*config, error) {
	var s Settings
	if err := sdk.DecodeSettings("agent", raw, &s); err != nil {
		return nil, err
	}
	c := &config{providers: map[string]providerConfig{}, tools: s.Tools, maxSteps: defaultMaxSteps, maxTokens: defaultMaxTokens,
		timeBudget: defaultTimeBudget, sessionsPerID: defaultSessionsPerID, parallelTools: defaultParallelTools,
		subItems: defaultSubItems, persist: s.Persist, debugContent: s.DebugContent}
	names := make([]string, 0, len(s.Providers))
	for name := range s.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := s.Providers[name]
		if !providerName.MatchString(name) {
			return nil, fmt.Errorf("agent settings: provider %q: a name is [a-z][a-z0-9_-]* (it names the capability holding its key)", name)
		}
		u, err := url.Parse(p.BaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("agent settings: providers.%s.base_url %q: want an http(s) URL such as \"https://api.openai.com/v1\"", name, p.BaseURL)
		}
		if p.Model == "" {
			return nil, fmt.Errorf("agent settings: providers.%s.model is missing", name)
		}
		pc := providerConfig{name: name, baseURL: p.BaseURL, model: p.Model, timeout: defaultRequestTimeout, maxRetries: 3}
		if p.Timeout != "" {
			d, err := time.ParseDuration(p.Timeout)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("agent settings: providers.%s.timeout %q: want a positive Go duration such as \"2m\"", name, p.Timeout)
			}
			pc.timeout = d
		}
		if p.MaxRetries != nil {
			if *p.MaxRetries < 0 {
				return nil, fmt.Errorf("agent settings: providers.%s.max_retries must not be negative", name)
			}
			pc.maxRetries = *p.MaxRetries
		}
		c.providers[name] = pc
	}
	switch {
	case s.DefaultProvider != "":
		if _, ok := c.providers[s.DefaultProvider]; !ok {
			return nil, fmt.Errorf("agent settings: default_provider %q is not among the providers %v", s.DefaultProvider, names)
		}
		c.defaultProv = s.DefaultProvider
	case len(names) == 1:
		c.defaultProv = names[0]
	}
	seenPeer := map[string]bool{}
	for _, pe := range s.Peers {
		if !providerName.MatchString(pe.Name) || strings.Contains(pe.Name, "__") || seenPeer[pe.Name] {
			return nil, fmt.Errorf("agent settings: peers name %q: want a unique [a-z][a-z0-9_-]* (it prefixes the peer's tools)", pe.Name)
		}
		if pe.Target == "" {
			return nil, fmt.Errorf("agent settings: peer %s has no target: give \"FINGERPRINT@host:port\"", pe.Name)
		}
		seenPeer[pe.Name] = true
		c.peers = append(c.peers, peerConfig{name: pe.Name, target: pe.Target})
	}
	for _, t := range s.Tools {
		if _, err := path.Match(t, ""); err != nil {
			return nil, fmt.Errorf("agent settings: tools pattern %q: %v", t, err)
		}
	}
	for _, n := range []struct {
		key string
		v   int
		to  *int
	}{{"max_steps", s.MaxSteps, &c.maxSteps}, {"max_tokens", s.MaxTokens, &c.maxTokens}, {"max_sessions_per_identity", s.MaxSessionsPerIdentity, &c.sessionsPerID},
		{"max_parallel_tools", s.MaxParallelTools, &c.parallelTools}, {"max_subscription_items", s.MaxSubscriptionItems, &c.subItems}} {
		if n.v < 0 {
			return nil, fmt.Errorf("agent settings: %s must not be negative", n.key)
		}
		if n.v > 0 {
			*n.to = n.v
		}
	}
	if s.TimeBudget != "" {
		d, err := time.ParseDuration(s.TimeBudget)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("agent settings: time_budget %q: want a positive Go duration such as \"5m\"", s.TimeBudget)
		}
		c.timeBudget = d
	}
	return c, nil
}

const configSchema = `{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "providers": {"type": "object", "additionalProperties": {
      "type": "object", "additionalProperties": false, "required": ["base_url", "model"],
      "properties": {"base_url": {"type": "string"}, "model": {"type": "string"}, "timeout": {"type": "string"}, "max_retries": {"type": "integer", "minimum": 0}}}},
    "default_provider": {"type": "string"},
    "tools": {"type": "array", "items": {"type": "string"}},
    "max_steps": {"type": "integer", "minimum": 0},
    "max_tokens": {"type": "integer", "minimum": 0},
    "time_budget": {"type": "string"},
    "max_sessions_per_identity": {"type": "integer", "minimum": 0},
    "max_parallel_tools": {"type": "integer", "minimum": 0},
    "max_subscription_items": {"type": "integer", "minimum": 0},
    "persist": {"type": "boolean"},
    "peers": {"type": "array", "items": {"type": "object", "additionalProperties": false, "required": ["name", "target"],
      "properties": {"name": {"type": "string"}, "target": {"type": "string"}}}},
    "debug_content": {"type": "boolean"}
  }
}`
