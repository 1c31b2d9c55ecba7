package vault

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
)

// redacted is what every secret type prints instead of its contents.
const redacted = "[REDACTED]"

// errNoMarshal is returned when code tries to serialise a secret.
var errNoMarshal = errors.New("vault: refusing to serialise a secret value")

// Secret holds secret bytes (a seed, a symmetric key, a credential). Its
// contents are unexported: fmt verbs (%v, %+v, %#v, %s, %q, %x) print
// [REDACTED], and JSON/text marshalling fails. Call Wipe when done.
type Secret struct {
	b []byte
}

// NewSecret copies b into a Secret. The caller should wipe its own copy.
func NewSecret(b []byte) Secret {
	c := make([]byte, len(b))
	copy(c, b)
	return Secret{b: c}
}

// Bytes exposes the secret bytes. Use it only at the point where the bytes
// are consumed (a cipher, a signer) and never log or store the result.
func (s Secret) Bytes() []byte { return s.b }

// Len reports the secret's length without revealing it.
func (s Secret) Len() int { return len(s.b) }

// Wipe overwrites the secret with zeros.
func (s Secret) Wipe() { wipe(s.b) }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter so that every verb redacts.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON refuses to serialise the secret.
func (Secret) MarshalJSON() ([]byte, error) { return nil, errNoMarshal }

// MarshalText refuses to serialise the secret.
func (Secret) MarshalText() ([]byte, error) { return nil, errNoMarshal }

// PrivateKey is an Ed25519 signing key derived from the vault. It redacts
// like Secret; the public half is freely printable via Public.
type PrivateKey struct {
	k ed25519.PrivateKey
}

// newPrivateKey builds the RFC 8032 key whose 32-byte seed is seed.
func newPrivateKey(seed []byte) PrivateKey {
	return PrivateKey{k: ed25519.NewKeyFromSeed(seed)}
}

// PrivateKeyFromSeed builds a PrivateKey from a 32-byte RFC 8032 seed (for
// example a key file). It returns an error for any other length.
func PrivateKeyFromSeed(seed []byte) (PrivateKey, error) {
	if len(seed) != ed25519.SeedSize {
		return PrivateKey{}, fmt.Errorf("ed25519 seed must be %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	return newPrivateKey(seed), nil
}

// ReadSeedFile reads an Ed25519 key from a file only its owner can read:
// the 32-byte RFC 8032 seed, raw or as 64 hex digits.
func ReadSeedFile(path string) (PrivateKey, error) {
	s, err := ReadPassphraseFile(path)
	if err != nil {
		return PrivateKey{}, err
	}
	defer s.Wipe()
	seed := s.Bytes()
	if len(seed) == 2*ed25519.SeedSize {
		if b, err := hex.DecodeString(string(seed)); err == nil {
			defer wipe(b)
			seed = b
		}
	}
	k, err := PrivateKeyFromSeed(seed)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%s: %w (32 raw bytes or 64 hex digits)", path, err)
	}
	return k, nil
}

// Public returns the Ed25519 public key.
func (p PrivateKey) Public() ed25519.PublicKey {
	if p.k == nil {
		return nil
	}
	return p.k.Public().(ed25519.PublicKey)
}

// Signer returns the key as a crypto.Signer-compatible ed25519.PrivateKey
// for TLS and SSH. The returned value is the secret itself: do not print it.
func (p PrivateKey) Signer() ed25519.PrivateKey { return p.k }

// Seed returns the 32-byte RFC 8032 seed as a Secret (a copy).
func (p PrivateKey) Seed() Secret { return NewSecret(p.k.Seed()) }

// Wipe overwrites the key material.
func (p PrivateKey) Wipe() { wipe(p.k) }

// String implements fmt.Stringer.
func (PrivateKey) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (PrivateKey) GoString() string { return redacted }

// Format implements fmt.Formatter so that every verb redacts.
func (PrivateKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON refuses to serialise the key.
func (PrivateKey) MarshalJSON() ([]byte, error) { return nil, errNoMarshal }

// MarshalText refuses to serialise the key.
func (PrivateKey) MarshalText() ([]byte, error) { return nil, errNoMarshal }

func wipe(b []byte) { clear(b) }
