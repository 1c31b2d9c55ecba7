package sdk

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"alknet.dev/alknet/proto/pluginpb"
)

// Secret is a capability value. It prints [REDACTED] with every fmt verb
// and refuses to be marshalled; Bytes exposes it where it is consumed.
type Secret struct{ b []byte }

// Bytes returns the secret bytes; never log or store them.
func (s Secret) Bytes() []byte { return s.b }

// String implements fmt.Stringer.
func (Secret) String() string { return "[REDACTED]" }

// GoString implements fmt.GoStringer.
func (Secret) GoString() string { return "[REDACTED]" }

// Format redacts every verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[REDACTED]")) }

// MarshalJSON refuses.
func (Secret) MarshalJSON() ([]byte, error) {
	return nil, errors.New("sdk: refusing to marshal a secret")
}

// Capabilities are the secrets granted to this plugin, sent by the node
// with each connection and call.
type Capabilities struct{ m map[string]Secret }

func capsFromProto(in []*pluginpb.Capability) Capabilities {
	c := Capabilities{m: make(map[string]Secret, len(in))}
	for _, p := range in {
		c.m[p.GetName()] = Secret{b: p.GetValue()}
	}
	return c
}

// Get returns the capability called name.
func (c Capabilities) Get(name string) (Secret, bool) {
	s, ok := c.m[name]
	return s, ok
}

// Names lists the granted capability names, sorted.
func (c Capabilities) Names() []string { return slices.Sorted(maps.Keys(c.m)) }

// String shows names only.
func (c Capabilities) String() string { return fmt.Sprintf("capabilities%v", c.Names()) }

// MarshalJSON refuses.
func (Capabilities) MarshalJSON() ([]byte, error) {
	return nil, errors.New("sdk: refusing to marshal capabilities")
}
