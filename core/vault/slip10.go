package vault

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Hardened is the SLIP-0010 offset for hardened child indices (2^31).
const Hardened uint32 = 1 << 31

// Well-known derivation paths (docs/spec/vault.md §2; coin type 74').
const (
	PathNodeIdentity = "m/74'/0'/0'/0'"
	PathSSHHostKey   = "m/74'/0'/1'/0'"
	PathMessageKey   = "m/74'/3'/0'/0'"
)

// DevicePath is the path of device key n (n = 0 is the node identity).
func DevicePath(n uint32) string { return fmt.Sprintf("m/74'/0'/0'/%d'", n) }

// CredentialKeyPath is the path of the AES-256-GCM key for credentials
// encrypted at key version v (v >= 2).
func CredentialKeyPath(v int) string { return fmt.Sprintf("m/74'/2'/0'/%d'", v-2) }

// ErrInvalidPath is returned (wrapped) for a path outside the grammar.
var ErrInvalidPath = errors.New("invalid derivation path")

// Path is a parsed SLIP-0010 ed25519 path: hardened indices only, stored
// without the 2^31 offset.
type Path []uint32

// ParsePath parses `m` followed by zero or more `/<n>'` or `/<n>h` with
// 0 <= n < 2^31, in decimal without sign or leading zeros. Nothing else
// is accepted; a non-hardened component is refused with the path named,
// because ed25519 has no public derivation.
func ParsePath(s string) (Path, error) {
	if s == "m" {
		return Path{}, nil
	}
	if !strings.HasPrefix(s, "m/") {
		return nil, fmt.Errorf("%w %q: must start with \"m\" (e.g. m/74'/0'/0'/0')", ErrInvalidPath, s)
	}
	parts := strings.Split(s[2:], "/")
	p := make(Path, 0, len(parts))
	for i, part := range parts {
		if part == "" {
			return nil, fmt.Errorf("%w %q: component %d is empty", ErrInvalidPath, s, i+1)
		}
		last := part[len(part)-1]
		num := part
		if last == '\'' || last == 'h' {
			num = part[:len(part)-1]
		}
		if num == "" || (len(num) > 1 && num[0] == '0') || strings.TrimLeft(num, "0123456789") != "" {
			return nil, fmt.Errorf("%w %q: component %d (%q) is not a decimal index", ErrInvalidPath, s, i+1, part)
		}
		n, err := strconv.ParseUint(num, 10, 32)
		if err != nil || uint32(n) >= Hardened {
			return nil, fmt.Errorf("%w %q: index %s in component %d is out of range (0 <= n < 2^31)", ErrInvalidPath, s, num, i+1)
		}
		if last != '\'' && last != 'h' {
			return nil, fmt.Errorf("%w %q: component %d (%s) is not hardened; ed25519 (SLIP-0010) allows hardened indices only, write %s'", ErrInvalidPath, s, i+1, part, part)
		}
		p = append(p, uint32(n))
	}
	return p, nil
}

// String renders the path in canonical form (apostrophes).
func (p Path) String() string {
	var b strings.Builder
	b.WriteString("m")
	for _, n := range p {
		fmt.Fprintf(&b, "/%d'", n)
	}
	return b.String()
}

// ExtendedKey is a SLIP-0010 node: the 32-byte key and the chain code.
type ExtendedKey struct {
	Key       Secret
	ChainCode Secret
}

// Wipe overwrites both halves.
func (x ExtendedKey) Wipe() { x.Key.Wipe(); x.ChainCode.Wipe() }

// DeriveSLIP10 derives the ed25519 node at path from a BIP39 seed.
//
// Written by hand (about 20 lines of HMAC) because the maintained Go BIP32
// libraries implement secp256k1 or the BIP32-Ed25519 variant, not SLIP-0010
// (docs/architecture.md D3); the official test vectors pin the behaviour.
func DeriveSLIP10(seed []byte, path Path) ExtendedKey {
	mac := hmac.New(sha512.New, []byte("ed25519 seed"))
	mac.Write(seed)
	i := mac.Sum(nil)
	defer wipe(i)
	k, c := make([]byte, 32), make([]byte, 32)
	copy(k, i[:32])
	copy(c, i[32:])
	data := make([]byte, 37)
	defer wipe(data)
	for _, n := range path {
		data[0] = 0
		copy(data[1:33], k)
		binary.BigEndian.PutUint32(data[33:], n+Hardened)
		mac := hmac.New(sha512.New, c)
		mac.Write(data)
		i2 := mac.Sum(i[:0])
		copy(k, i2[:32])
		copy(c, i2[32:])
	}
	x := ExtendedKey{Key: NewSecret(k), ChainCode: NewSecret(c)}
	wipe(k)
	wipe(c)
	return x
}
