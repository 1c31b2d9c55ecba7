package main

import (
	"encoding/json"
	"time"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/pluginhost"
)

// The shapes printed by --json, documented in docs/json.md. Fields may be
// added; none is renamed, removed or retyped without a note there. Lists
// print as [] when empty, never null.

// printJSON writes v as JSON indented by two spaces, one value per run.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nonNil turns a nil slice into an empty one so it prints as [].
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// idJSON is `alknet id --json`.
type idJSON struct {
	Fingerprint string `json:"fingerprint"`
}

// peerJSON is one entry of `alknet peers list --json`. The token's hash
// is not printed; has_token says whether the peer has one.
type peerJSON struct {
	PeerID       string              `json:"peer_id"`
	DisplayName  string              `json:"display_name,omitempty"`
	Enabled      bool                `json:"enabled"`
	Fingerprints []string            `json:"fingerprints"`
	SSHKeys      []string            `json:"ssh_keys"`
	Scopes       []string            `json:"scopes"`
	Resources    map[string][]string `json:"resources,omitempty"`
	HasToken     bool                `json:"has_token"`
}

func peersJSON(peers []auth.Peer) []peerJSON {
	out := []peerJSON{}
	for _, p := range peers {
		out = append(out, peerJSON{PeerID: p.PeerID, DisplayName: p.DisplayName, Enabled: p.IsEnabled(),
			Fingerprints: nonNil(p.Fingerprints), SSHKeys: nonNil(p.SSHKeys), Scopes: nonNil(p.Scopes),
			Resources: p.Resources, HasToken: p.AuthTokenHash != ""})
	}
	return out
}

// apiKeyJSON is one entry of `alknet apikey list --json`; never the token
// nor its hash.
type apiKeyJSON struct {
	Prefix      string   `json:"prefix"`
	Scopes      []string `json:"scopes"`
	Description string   `json:"description,omitempty"`
	// ExpiresAt is RFC 3339 UTC; absent: the key never expires.
	ExpiresAt string `json:"expires_at,omitempty"`
	Expired   bool   `json:"expired"`
}

func apiKeysJSON(keys []auth.APIKey, now time.Time) []apiKeyJSON {
	out := []apiKeyJSON{}
	for _, k := range keys {
		j := apiKeyJSON{Prefix: k.Prefix, Scopes: nonNil(k.Scopes), Description: k.Description}
		if k.ExpiresAt != 0 {
			j.ExpiresAt = time.Unix(k.ExpiresAt, 0).UTC().Format(time.RFC3339)
			j.Expired = now.Unix() >= k.ExpiresAt
		}
		out = append(out, j)
	}
	return out
}

// pluginJSON is one entry (one installed version) of `alknet plugin list
// --json`.
type pluginJSON struct {
	Name             string   `json:"name"`
	Version          string   `json:"version"`
	Active           bool     `json:"active"`
	SHA256           string   `json:"sha256"`
	ProtocolVersions []int    `json:"protocol_versions"`
	ALPNs            []string `json:"alpns"`
	// State is the running node's state of this version, or "not running".
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
	Pid      int    `json:"pid,omitempty"`
	Signer   string `json:"signer,omitempty"`
}

// pluginInfoJSON is `alknet plugin info NAME --json`.
type pluginInfoJSON struct {
	Name     string                  `json:"name"`
	Versions []*pluginhost.Installed `json:"versions"`
}

// serviceJSON is one entry of `alknet services --json`: the fields of
// services/list, each equal to what `alknet schema` prints for the
// operation.
type serviceJSON struct {
	Name        string          `json:"name"`
	Namespace   string          `json:"namespace"`
	OpType      call.OpType     `json:"op_type"`
	Visibility  call.Visibility `json:"visibility"`
	RemoteSafe  bool            `json:"remote_safe"`
	Provenance  string          `json:"provenance"`
	Description string          `json:"description,omitempty"`
}

func servicesJSON(ops []call.Spec) []serviceJSON {
	out := []serviceJSON{}
	for _, s := range ops {
		out = append(out, serviceJSON{s.Name, s.Namespace, s.OpType, s.Visibility, s.RemoteSafe, s.Provenance, s.Description})
	}
	return out
}

// dnsQueryJSON is `alknet dns query --json`: the answer's status (its
// rcode: NOERROR, NXDOMAIN, …) and the records of its answer and
// authority sections, each as one line of dig's.
type dnsQueryJSON struct {
	Status    string   `json:"status"`
	Answer    []string `json:"answer"`
	Authority []string `json:"authority"`
}
