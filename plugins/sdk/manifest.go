package sdk

import "encoding/json"

// Manifest describes a plugin (spec/plugins.md §1). The core reads it with
// `alknet-plugin-<name> describe` at install time and with Describe at
// every launch.
type Manifest struct {
	Name             string           `json:"name"`
	Version          string           `json:"version"`
	ProtocolVersions []int            `json:"protocol_versions"`
	ALPNs            []string         `json:"alpns,omitempty"`
	Operations       []Operation      `json:"operations,omitempty"`
	Capabilities     []CapabilitySpec `json:"capabilities,omitempty"`
	ConfigSchema     json.RawMessage  `json:"config_schema,omitempty"`
	Description      string           `json:"description,omitempty"`
}

// Operation declares one operation (spec/call.md §4).
type Operation struct {
	Name          string          `json:"name"`
	OpType        string          `json:"op_type"` // query, mutation, subscription
	Visibility    string          `json:"visibility,omitempty"`
	RemoteSafe    bool            `json:"remote_safe,omitempty"`
	Description   string          `json:"description,omitempty"`
	InputSchema   json.RawMessage `json:"input_schema,omitempty"`
	OutputSchema  json.RawMessage `json:"output_schema,omitempty"`
	AccessControl AccessControl   `json:"access_control"`
	// Env lists the operations this one may call through Host.Invoke.
	Env []string `json:"env,omitempty"`
}

// AccessControl is checked by the core before a call reaches the plugin.
type AccessControl struct {
	RequiredScopes    []string `json:"required_scopes,omitempty"`
	RequiredScopesAny []string `json:"required_scopes_any,omitempty"`
	ResourceType      string   `json:"resource_type,omitempty"`
	ResourceAction    string   `json:"resource_action,omitempty"`
}

// CapabilitySpec declares a secret the plugin needs; the operator grants
// it in the node's config ([plugins.<name>.capabilities]).
type CapabilitySpec struct {
	Name        string `json:"name"`
	Required    bool   `json:"required,omitempty"`
	Description string `json:"description,omitempty"`
}

// Operation types.
const (
	Query        = "query"
	Mutation     = "mutation"
	Subscription = "subscription"
)
