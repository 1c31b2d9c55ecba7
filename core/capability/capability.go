// Package capability carries secrets a handler needs (an SSH host key, an
// API key for a provider, …) from the vault to the handler, per call. A
// capability value prints [REDACTED] and refuses to be marshalled; it is
// never put in environment variables, files, argv or logs.
package capability

import (
	"fmt"
	"maps"
	"slices"

	"alknet.dev/alknet/core/vault"
)

// Set is a named set of capability values, attached to a registration and
// handed to its handler in the call context.
type Set struct {
	m map[string]vault.Secret
}

// New builds a Set; values are copied.
func New(values map[string][]byte) Set {
	s := Set{m: make(map[string]vault.Secret, len(values))}
	for k, v := range values {
		s.m[k] = vault.NewSecret(v)
	}
	return s
}

// Get returns the value called name.
func (s Set) Get(name string) (vault.Secret, bool) {
	v, ok := s.m[name]
	return v, ok
}

// Names lists the capability names, sorted (never the values).
func (s Set) Names() []string { return slices.Sorted(maps.Keys(s.m)) }

// Len is the number of capabilities.
func (s Set) Len() int { return len(s.m) }

// String implements fmt.Stringer with names only.
func (s Set) String() string { return fmt.Sprintf("capabilities%v", s.Names()) }

// GoString implements fmt.GoStringer with names only.
func (s Set) GoString() string { return s.String() }

// MarshalJSON refuses to serialise capability values.
func (Set) MarshalJSON() ([]byte, error) {
	return nil, fmt.Errorf("capability: refusing to serialise capability values")
}
