package pluginhost

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"alknet.dev/alknet/core/call"
)

// Manifest is a plugin's self-description as the core reads it
// (spec/plugins.md §1). It mirrors plugins/sdk.Manifest; the core parses
// it itself because the bytes come from a binary it has not trusted yet.
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

// Operation is an operation declared by a plugin.
type Operation struct {
	Name          string             `json:"name"`
	OpType        call.OpType        `json:"op_type"`
	Visibility    call.Visibility    `json:"visibility,omitempty"`
	RemoteSafe    bool               `json:"remote_safe,omitempty"`
	Description   string             `json:"description,omitempty"`
	InputSchema   json.RawMessage    `json:"input_schema,omitempty"`
	OutputSchema  json.RawMessage    `json:"output_schema,omitempty"`
	AccessControl call.AccessControl `json:"access_control"`
	Env           []string           `json:"env,omitempty"`
}

// CapabilitySpec is a secret a plugin asks for.
type CapabilitySpec struct {
	Name        string `json:"name"`
	Required    bool   `json:"required,omitempty"`
	Description string `json:"description,omitempty"`
}

var (
	pluginName = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	semverRE   = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
)

// maxManifest bounds what a plugin may print as its manifest.
const maxManifest = 1 << 20

// ParseManifest validates a manifest (untrusted bytes; fuzzed): name and
// semver version, protocol versions, ALPNs, operation names and types.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest is %d bytes; the limit is %d", len(b), maxManifest)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest is not JSON: %w", err)
	}
	if !pluginName.MatchString(m.Name) || len(m.Name) > 64 {
		return nil, fmt.Errorf("manifest name %q: want [a-z][a-z0-9-]*", m.Name)
	}
	if !semverRE.MatchString(m.Version) {
		return nil, fmt.Errorf("plugin %s: version %q is not semver (e.g. 1.2.3)", m.Name, m.Version)
	}
	if len(m.ProtocolVersions) == 0 {
		return nil, fmt.Errorf("plugin %s: protocol_versions is empty", m.Name)
	}
	for _, a := range m.ALPNs {
		if a == "" || len(a) > 255 || a == "acme-tls/1" {
			return nil, fmt.Errorf("plugin %s: ALPN %q is not allowed", m.Name, a)
		}
	}
	seen := map[string]bool{}
	for i, op := range m.Operations {
		name := strings.TrimPrefix(op.Name, "/")
		if name == "" || !strings.Contains(name, "/") {
			return nil, fmt.Errorf("plugin %s: operations[%d] name %q: want service/op", m.Name, i, op.Name)
		}
		if seen[name] {
			return nil, fmt.Errorf("plugin %s: operation %s declared twice", m.Name, name)
		}
		seen[name] = true
		if !slices.Contains([]call.OpType{call.Query, call.Mutation, call.Subscription}, op.OpType) {
			return nil, fmt.Errorf("plugin %s: operation %s: op_type %q", m.Name, name, op.OpType)
		}
		if op.Visibility != "" && op.Visibility != call.External && op.Visibility != call.Internal {
			return nil, fmt.Errorf("plugin %s: operation %s: visibility %q", m.Name, name, op.Visibility)
		}
		m.Operations[i].Name = name
	}
	for _, c := range m.Capabilities {
		if c.Name == "" {
			return nil, errors.New("plugin " + m.Name + ": a capability has no name")
		}
	}
	return &m, nil
}

// Speaks reports the highest protocol version both sides support.
func (m *Manifest) Speaks(supported []int) (int, bool) {
	best := 0
	for _, v := range m.ProtocolVersions {
		if slices.Contains(supported, v) && v > best {
			best = v
		}
	}
	return best, best > 0
}

// compareSemver orders two semver strings (pre-release sorts first).
func compareSemver(a, b string) int {
	pa, pb := splitSemver(a), splitSemver(b)
	for i := range 3 {
		if pa.n[i] != pb.n[i] {
			if pa.n[i] < pb.n[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case pa.pre == pb.pre:
		return 0
	case pa.pre == "":
		return 1
	case pb.pre == "":
		return -1
	}
	return strings.Compare(pa.pre, pb.pre)
}

type semver struct {
	n   [3]int
	pre string
}

func splitSemver(s string) semver {
	var v semver
	s, _, _ = strings.Cut(s, "+")
	s, v.pre, _ = strings.Cut(s, "-")
	for i, p := range strings.SplitN(s, ".", 3) {
		v.n[i], _ = strconv.Atoi(p)
	}
	return v
}
