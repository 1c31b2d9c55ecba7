// Package auth resolves who is on the other end of a connection or a
// request: TLS fingerprints, SSH key fingerprints and bearer tokens map to
// identities through the node's dynamic configuration (docs/spec/identity.md §5).
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Identity is a resolved caller: an id, free-form scopes (admin, ssh:exec,
// git:write, …) and per-resource-type actions.
type Identity struct {
	ID        string              `json:"id"`
	Scopes    []string            `json:"scopes,omitempty"`
	Resources map[string][]string `json:"resources,omitempty"`
}

// HasScope reports whether the identity carries scope s.
func (i *Identity) HasScope(s string) bool {
	return i != nil && slices.Contains(i.Scopes, s)
}

// Transports of a connection, as logged.
const (
	TransportQUIC   = "quic"
	TransportTCPTLS = "tcp-tls"
	TransportTCP    = "tcp"
)

// AuthContext is what a handler learns about a connection: the identity
// resolved from the client's TLS certificate (nil if none or unknown), the
// negotiated ALPN, the remote address, the client's fingerprint ("" if it
// presented no certificate) and the transport.
type AuthContext struct {
	Identity    *Identity
	ALPN        string
	RemoteAddr  net.Addr
	Fingerprint string
	Transport   string
}

// Peer is a known remote party ([[auth.peers]]).
type Peer struct {
	PeerID        string              `json:"peer_id" mapstructure:"peer_id" toml:"peer_id"`
	DisplayName   string              `json:"display_name,omitempty" mapstructure:"display_name" toml:"display_name,omitempty"`
	Fingerprints  []string            `json:"fingerprints,omitempty" mapstructure:"fingerprints" toml:"fingerprints,omitempty"`
	SSHKeys       []string            `json:"ssh_keys,omitempty" mapstructure:"ssh_keys" toml:"ssh_keys,omitempty"`
	AuthTokenHash string              `json:"auth_token_hash,omitempty" mapstructure:"auth_token_hash" toml:"auth_token_hash,omitempty"`
	Scopes        []string            `json:"scopes,omitempty" mapstructure:"scopes" toml:"scopes,omitempty"`
	Resources     map[string][]string `json:"resources,omitempty" mapstructure:"resources" toml:"resources,omitempty"`
	// Enabled defaults to true; false keeps the peer known but refused.
	Enabled *bool `json:"enabled,omitempty" mapstructure:"enabled" toml:"enabled,omitempty"`
}

// IsEnabled reports whether the peer may authenticate.
func (p Peer) IsEnabled() bool { return p.Enabled == nil || *p.Enabled }

func (p Peer) identity() *Identity {
	return &Identity{ID: p.PeerID, Scopes: slices.Clone(p.Scopes), Resources: p.Resources}
}

// APIKey is a stored API key ([[auth.api_keys]]): only the token's first 8
// characters and its hash are kept.
type APIKey struct {
	Prefix      string   `json:"prefix" mapstructure:"prefix" toml:"prefix"`
	Hash        string   `json:"hash" mapstructure:"hash" toml:"hash"`
	Scopes      []string `json:"scopes,omitempty" mapstructure:"scopes" toml:"scopes,omitempty"`
	Description string   `json:"description,omitempty" mapstructure:"description" toml:"description,omitempty"`
	// ExpiresAt is unix seconds; 0 means no expiry.
	ExpiresAt int64 `json:"expires_at,omitempty" mapstructure:"expires_at" toml:"expires_at,omitempty"`
}

// APIKeyPrefix starts every API key token.
const APIKeyPrefix = "alk_"

// prefixLen is how much of a token is stored and logged.
const prefixLen = 8

// HashToken is "sha256:" + hex(sha256(token)).
func HashToken(token string) string {
	s := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(s[:])
}

// TokenPrefix is the first characters of a token, as stored for API keys
// (their lookup key). Not for logs of rejected tokens: see TokenLogID.
func TokenPrefix(token string) string {
	if len(token) < prefixLen {
		return token
	}
	return token[:prefixLen]
}

// MinTokenBits is the entropy a token the CLI creates or accepts must
// have at least: 2^128 guesses are out of reach, limits or not.
const MinTokenBits = 128

// TokenStrength estimates a token's entropy in bits from its length and
// the alphabet its characters come from (the smallest of: digits, hex,
// base32, base64url, printable ASCII that holds every character). It is an
// upper bound for a random token and overestimates a chosen one, so it
// only refuses tokens that are surely too weak.
func TokenStrength(tok string) int {
	classes := []struct {
		bits float64
		in   func(r rune) bool
	}{
		{3.32, func(r rune) bool { return r >= '0' && r <= '9' }},
		{4, func(r rune) bool { return strings.ContainsRune("0123456789abcdefABCDEF", r) }},
		{5, func(r rune) bool {
			return strings.ContainsRune("abcdefghijklmnopqrstuvwxyz234567ABCDEFGHIJKLMNOPQRSTUVWXYZ=", r)
		}},
		{6, func(r rune) bool {
			return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || strings.ContainsRune("-_+/=", r)
		}},
		{6.55, func(r rune) bool { return r > ' ' && r < 0x7f }},
	}
	tok = strings.TrimPrefix(strings.TrimSpace(tok), APIKeyPrefix)
	for _, c := range classes {
		all := true
		for _, r := range tok {
			if !c.in(r) {
				all = false
				break
			}
		}
		if all {
			return int(c.bits * float64(len(tok)))
		}
	}
	return 8 * len(tok)
}

// TokenLogID names a token in logs without any of its characters: the
// first 8 hex digits of its SHA-256, so repeated attempts with one token
// can be told apart while a short token is not written out whole.
func TokenLogID(token string) string {
	s := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(s[:4])
}

// NewAPIKey makes a token "alk_" + 160 random bits in base32 (no padding,
// lower case) and the record to store. The token is returned only here.
func NewAPIKey(scopes []string, description string, expiresAt int64) (string, APIKey, error) {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", APIKey{}, fmt.Errorf("generate api key: %w", err)
	}
	token := APIKeyPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	return token, APIKey{Prefix: token[:prefixLen], Hash: HashToken(token), Scopes: scopes, Description: description, ExpiresAt: expiresAt}, nil
}

// Policy is one immutable snapshot of peers and API keys.
type Policy struct {
	peers []Peer
	keys  []APIKey
}

// NewPolicy validates peers and keys: peer ids unique and non-empty,
// fingerprints and hashes well-formed. Errors name the offending entry.
func NewPolicy(peers []Peer, keys []APIKey) (*Policy, error) {
	seen := map[string]bool{}
	for i, p := range peers {
		if p.PeerID == "" {
			return nil, fmt.Errorf("auth.peers[%d].peer_id: must not be empty", i)
		}
		if seen[p.PeerID] {
			return nil, fmt.Errorf("auth.peers[%d].peer_id: duplicate peer_id %q", i, p.PeerID)
		}
		seen[p.PeerID] = true
		for j, fp := range p.Fingerprints {
			if !validFingerprint(fp) {
				return nil, fmt.Errorf("auth.peers[%d].fingerprints[%d]: %q is not ed25519:<64 hex> or SHA256:<64 hex>", i, j, fp)
			}
		}
		for j, k := range p.SSHKeys {
			if !strings.HasPrefix(k, "SHA256:") || len(k) < 20 {
				return nil, fmt.Errorf("auth.peers[%d].ssh_keys[%d]: %q is not an OpenSSH SHA256:<base64> fingerprint (ssh-keygen -lf key.pub)", i, j, k)
			}
		}
		if p.AuthTokenHash != "" && !validHash(p.AuthTokenHash) {
			return nil, fmt.Errorf("auth.peers[%d].auth_token_hash: want sha256:<64 hex>", i)
		}
	}
	prefixes := map[string]bool{}
	for i, k := range keys {
		if !strings.HasPrefix(k.Prefix, APIKeyPrefix) || len(k.Prefix) != prefixLen {
			return nil, fmt.Errorf("auth.api_keys[%d].prefix: %q must be the first %d characters of an %s… token", i, k.Prefix, prefixLen, APIKeyPrefix)
		}
		if !validHash(k.Hash) {
			return nil, fmt.Errorf("auth.api_keys[%d].hash: want sha256:<64 hex>", i)
		}
		if prefixes[k.Hash] {
			return nil, fmt.Errorf("auth.api_keys[%d]: duplicate key %s", i, k.Prefix)
		}
		prefixes[k.Hash] = true
	}
	return &Policy{peers: slices.Clone(peers), keys: slices.Clone(keys)}, nil
}

func validHash(h string) bool {
	b, err := hex.DecodeString(strings.TrimPrefix(h, "sha256:"))
	return strings.HasPrefix(h, "sha256:") && err == nil && len(b) == 32 && h == strings.ToLower(h)
}

func validFingerprint(fp string) bool {
	for _, p := range []string{"ed25519:", "SHA256:"} {
		if rest, ok := strings.CutPrefix(fp, p); ok {
			b, err := hex.DecodeString(rest)
			return err == nil && len(b) == 32 && rest == strings.ToLower(rest)
		}
	}
	return false
}

// OperatorID is the identity of a client that holds the node's own key.
const OperatorID = "node"

// WithOperator returns the policy with the node's own fingerprint added as
// an admin: a client presenting the node's key (the `alknet` CLI beside
// the node, with the same vault) holds everything the node holds anyway.
func (p *Policy) WithOperator(fingerprint string) *Policy {
	if p == nil {
		p = &Policy{}
	}
	q := &Policy{peers: slices.Clone(p.peers), keys: p.keys}
	if fingerprint != "" {
		q.peers = append(q.peers, Peer{PeerID: OperatorID, Fingerprints: []string{fingerprint}, Scopes: []string{"admin"}})
	}
	return q
}

// Peers returns the peers of the snapshot.
func (p *Policy) Peers() []Peer { return slices.Clone(p.peers) }

// APIKeys returns the API keys of the snapshot.
func (p *Policy) APIKeys() []APIKey { return slices.Clone(p.keys) }

// ResolveFingerprint maps a TLS fingerprint to the first enabled peer that
// lists it, else nil.
func (p *Policy) ResolveFingerprint(fp string) *Identity {
	if p == nil || fp == "" {
		return nil
	}
	for _, peer := range p.peers {
		if peer.IsEnabled() && slices.Contains(peer.Fingerprints, fp) {
			return peer.identity()
		}
	}
	return nil
}

// Disabled reports whether a disabled peer lists the TLS fingerprint: a
// known party that is refused, unlike an unknown one (anonymous).
func (p *Policy) Disabled(fp string) bool {
	if p == nil || fp == "" {
		return false
	}
	for _, peer := range p.peers {
		if !peer.IsEnabled() && slices.Contains(peer.Fingerprints, fp) {
			return true
		}
	}
	return false
}

// ResolveSSHKey maps an OpenSSH key fingerprint to the first enabled peer
// that lists it, else nil.
func (p *Policy) ResolveSSHKey(fp string) *Identity {
	if p == nil || fp == "" {
		return nil
	}
	for _, peer := range p.peers {
		if peer.IsEnabled() && slices.Contains(peer.SSHKeys, fp) {
			return peer.identity()
		}
	}
	return nil
}

// ResolveToken maps a bearer token to an identity: an enabled peer whose
// auth_token_hash matches, else an unexpired API key with the token's
// prefix and hash. Hash comparisons are constant time.
func (p *Policy) ResolveToken(token string, now time.Time) *Identity {
	if p == nil || token == "" {
		return nil
	}
	h := []byte(HashToken(token))
	for _, peer := range p.peers {
		if peer.AuthTokenHash != "" && subtle.ConstantTimeCompare(h, []byte(peer.AuthTokenHash)) == 1 {
			if !peer.IsEnabled() {
				return nil
			}
			return peer.identity()
		}
	}
	if !strings.HasPrefix(token, APIKeyPrefix) || len(token) < prefixLen {
		return nil
	}
	prefix := token[:prefixLen]
	for _, k := range p.keys {
		if k.Prefix != prefix || subtle.ConstantTimeCompare(h, []byte(k.Hash)) != 1 {
			continue
		}
		if k.ExpiresAt != 0 && now.Unix() >= k.ExpiresAt {
			return nil
		}
		return &Identity{ID: k.Prefix, Scopes: slices.Clone(k.Scopes)}
	}
	return nil
}

// Provider holds the current Policy and swaps it atomically on reload:
// requests in flight keep the snapshot they loaded.
type Provider struct {
	cur atomic.Pointer[Policy]
}

// NewProvider starts with policy p (nil = nobody is known).
func NewProvider(p *Policy) *Provider {
	pr := &Provider{}
	if p == nil {
		p = &Policy{}
	}
	pr.cur.Store(p)
	return pr
}

// Policy returns the current snapshot.
func (pr *Provider) Policy() *Policy { return pr.cur.Load() }

// Swap installs a new snapshot.
func (pr *Provider) Swap(p *Policy) { pr.cur.Store(p) }
