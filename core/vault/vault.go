package vault

import (
	"errors"
	"fmt"
	"sync"
)

// ErrLocked is returned by every key operation while the vault is locked.
var ErrLocked = errors.New("vault is locked: unlock it with the vault passphrase (or `alknet vault recover`) first")

// cacheLimit bounds the number of derived keys kept in memory.
const cacheLimit = 64

// Vault holds the BIP39 seed while unlocked and derives keys on demand.
// It is safe for concurrent use.
type Vault struct {
	mu    sync.Mutex
	seed  Secret // empty while locked
	cache map[string]ExtendedKey
	order []string // insertion order, for eviction
}

// New returns a locked vault.
func New() *Vault { return &Vault{} }

// Unlock derives the seed from a mnemonic and optional BIP39 passphrase.
func (v *Vault) Unlock(m Mnemonic, passphrase string) error {
	seed, err := m.Seed(passphrase)
	if err != nil {
		return err
	}
	v.UnlockSeed(seed)
	return nil
}

// UnlockSeed unlocks with a 64-byte BIP39 seed; the vault takes ownership.
func (v *Vault) UnlockSeed(seed Secret) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lockLocked()
	v.seed = seed
	v.cache = make(map[string]ExtendedKey)
}

// Lock wipes the seed and every cached key.
func (v *Vault) Lock() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.lockLocked()
}

func (v *Vault) lockLocked() {
	v.seed.Wipe()
	v.seed = Secret{}
	for _, x := range v.cache {
		x.Wipe()
	}
	v.cache = nil
	v.order = nil
}

// Locked reports whether the vault holds no seed.
func (v *Vault) Locked() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seed.Len() == 0
}

// Seed returns a copy of the BIP39 seed (for writing the vault file).
func (v *Vault) Seed() (Secret, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seed.Len() == 0 {
		return Secret{}, ErrLocked
	}
	return NewSecret(v.seed.Bytes()), nil
}

// derive returns a copy of the node at path, from the cache when possible.
func (v *Vault) derive(path string) (ExtendedKey, error) {
	p, err := ParsePath(path)
	if err != nil {
		return ExtendedKey{}, err
	}
	key := "ed25519:" + p.String() // cache keyed by scheme + canonical path
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seed.Len() == 0 {
		return ExtendedKey{}, ErrLocked
	}
	x, ok := v.cache[key]
	if !ok {
		x = DeriveSLIP10(v.seed.Bytes(), p)
		if len(v.order) >= cacheLimit {
			oldest := v.order[0]
			v.cache[oldest].Wipe()
			delete(v.cache, oldest)
			v.order = v.order[1:]
		}
		v.cache[key] = x
		v.order = append(v.order, key)
	}
	// Callers get copies: Lock wipes the cache, not keys already handed out.
	return ExtendedKey{Key: NewSecret(x.Key.Bytes()), ChainCode: NewSecret(x.ChainCode.Bytes())}, nil
}

// DeriveEd25519 returns the Ed25519 key at a hardened SLIP-0010 path.
func (v *Vault) DeriveEd25519(path string) (PrivateKey, error) {
	x, err := v.derive(path)
	if err != nil {
		return PrivateKey{}, err
	}
	defer x.Wipe()
	return newPrivateKey(x.Key.Bytes()), nil
}

// NodeKey is the node identity key at m/74'/0'/0'/0'.
func (v *Vault) NodeKey() (PrivateKey, error) { return v.DeriveEd25519(PathNodeIdentity) }

// credentialKey is the AES-256 key for key version ver (>= 2).
func (v *Vault) credentialKey(ver int) (Secret, error) {
	if err := checkKeyVersion(ver); err != nil {
		return Secret{}, err
	}
	x, err := v.derive(CredentialKeyPath(ver))
	if err != nil {
		return Secret{}, err
	}
	x.ChainCode.Wipe()
	return x.Key, nil
}

// cachedPaths lists the cache keys (tests).
func (v *Vault) cachedPaths() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.order...)
}

func checkKeyVersion(ver int) error {
	if ver < MinKeyVersion || ver > MaxKeyVersion {
		return fmt.Errorf("%w %d: versions start at %d", ErrInvalidKeyVersion, ver, MinKeyVersion)
	}
	return nil
}
