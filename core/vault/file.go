package vault

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/crypto/argon2"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/core/identity"
)

// FileName is the vault file inside the data directory.
const FileName = "vault.json"

// FileFormat is the current version of the vault file format.
const FileFormat = 1

// Mode says how the seed is kept at rest.
type Mode string

// Vault file modes (docs/spec/vault.md §4).
const (
	// ModePlain keeps the seed in the 0600 file, like an SSH host key. It is
	// the embedded default so that a daemon restarts unattended.
	ModePlain Mode = "plain"
	// ModeSealed encrypts the seed under a key from Argon2id(passphrase).
	ModeSealed Mode = "sealed"
)

// KDFParams are the Argon2id parameters stored in a sealed file.
type KDFParams struct {
	Name      string `json:"name"`
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
	Salt      string `json:"salt"`
}

// DefaultKDF is t=3, m=64 MiB, p=2 (docs/spec/vault.md §4).
var DefaultKDF = KDFParams{Name: "argon2id", Time: 3, MemoryKiB: 64 * 1024, Threads: 2}

// Bounds on KDF parameters read from a file: a hostile or corrupted file
// must not make `alknet id` allocate gigabytes or spin for hours.
const (
	maxKDFTime      = 64
	minKDFMemoryKiB = 8 * 1024
	maxKDFMemoryKiB = 1024 * 1024
	maxKDFThreads   = 64
	kdfSaltSize     = 32
	seedSize        = 64
	sealCipher      = "aes-256-gcm"
)

var (
	// ErrUnlock is the one error for a wrong passphrase or a damaged sealed
	// file: it never says which.
	ErrUnlock = errors.New("unlock vault: wrong passphrase or damaged vault file")
	// ErrNoVault is returned when the data directory has no vault file.
	ErrNoVault = errors.New("no vault")
	// ErrPassphraseRequired is returned when a sealed vault is opened
	// without a passphrase.
	ErrPassphraseRequired = errors.New("the vault is sealed: a passphrase is required (terminal prompt or --vault-passphrase-file)")
)

// Info is the part of a vault file that is not secret.
type Info struct {
	Format      int        `json:"format"`
	Mode        Mode       `json:"mode"`
	Fingerprint string     `json:"fingerprint"`
	KDF         *KDFParams `json:"kdf,omitempty"`
}

// fileJSON is the on-disk shape. Kept unexported: it can hold the seed.
type fileJSON struct {
	Format      int        `json:"format"`
	Mode        Mode       `json:"mode"`
	Fingerprint string     `json:"fingerprint"`
	Seed        string     `json:"seed,omitempty"`
	KDF         *KDFParams `json:"kdf,omitempty"`
	Cipher      string     `json:"cipher,omitempty"`
	Nonce       string     `json:"nonce,omitempty"`
	Ciphertext  string     `json:"ciphertext,omitempty"`
}

// File is a parsed vault file. It prints as its Info, never its contents.
type File struct {
	info  Info
	seed  []byte // plain
	salt  []byte // sealed
	nonce []byte // sealed
	ct    []byte // sealed
}

// Info returns the non-secret header.
func (f *File) Info() Info { return f.info }

// String implements fmt.Stringer without secrets.
func (f *File) String() string {
	return fmt.Sprintf("vault file (%s, %s)", f.info.Mode, f.info.Fingerprint)
}

// GoString implements fmt.GoStringer without secrets.
func (f *File) GoString() string { return f.String() }

// ParseFile validates a vault file's bytes. It is a parser of untrusted
// input (fuzzed): every field is checked for presence, encoding and bounds.
func ParseFile(b []byte) (*File, error) {
	var j fileJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("not a vault file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a vault file: trailing bytes after the JSON object")
	}
	if j.Format != FileFormat {
		return nil, fmt.Errorf("vault file format %d is not supported (this alknet reads format %d); upgrade alknet", j.Format, FileFormat)
	}
	fp, err := identity.ParseFingerprint(j.Fingerprint)
	if err != nil || !strings.HasPrefix(fp, identity.PrefixEd25519) {
		return nil, fmt.Errorf("vault file: fingerprint %q is not ed25519:<64 hex>", j.Fingerprint)
	}
	f := &File{info: Info{Format: j.Format, Mode: j.Mode, Fingerprint: fp}}
	switch j.Mode {
	case ModePlain:
		if j.KDF != nil || j.Cipher != "" || j.Nonce != "" || j.Ciphertext != "" {
			return nil, errors.New("vault file: plain mode must not carry kdf, cipher, nonce or ciphertext")
		}
		if f.seed, err = decodeB64(j.Seed); err != nil || len(f.seed) != seedSize {
			return nil, fmt.Errorf("vault file: seed must be %d bytes of base64", seedSize)
		}
	case ModeSealed:
		if j.Seed != "" {
			return nil, errors.New("vault file: sealed mode must not carry a plain seed")
		}
		if j.KDF == nil {
			return nil, errors.New("vault file: sealed mode needs kdf parameters")
		}
		k := *j.KDF
		if k.Name != "argon2id" {
			return nil, fmt.Errorf("vault file: kdf %q is not supported (want argon2id)", k.Name)
		}
		if k.Time < 1 || k.Time > maxKDFTime || k.MemoryKiB < minKDFMemoryKiB || k.MemoryKiB > maxKDFMemoryKiB || k.Threads < 1 || k.Threads > maxKDFThreads {
			return nil, fmt.Errorf("vault file: argon2id parameters out of range (time 1..%d, memory_kib %d..%d, threads 1..%d)", maxKDFTime, minKDFMemoryKiB, maxKDFMemoryKiB, maxKDFThreads)
		}
		if f.salt, err = decodeB64(k.Salt); err != nil || len(f.salt) < 16 || len(f.salt) > 64 {
			return nil, errors.New("vault file: kdf salt must be 16 to 64 bytes of base64")
		}
		if j.Cipher != sealCipher {
			return nil, fmt.Errorf("vault file: cipher %q is not supported (want %s)", j.Cipher, sealCipher)
		}
		if f.nonce, err = decodeB64(j.Nonce); err != nil || len(f.nonce) != ivSize {
			return nil, fmt.Errorf("vault file: nonce must be %d bytes of base64", ivSize)
		}
		if f.ct, err = decodeB64(j.Ciphertext); err != nil || len(f.ct) != seedSize+16 {
			return nil, errors.New("vault file: ciphertext has the wrong length")
		}
		f.info.KDF = &k
	default:
		return nil, fmt.Errorf("vault file: mode %q is not plain or sealed", j.Mode)
	}
	return f, nil
}

// sealAAD binds the header to the ciphertext, so that editing the
// fingerprint or the KDF parameters of a sealed file makes it fail to open.
func sealAAD(fp string, k KDFParams) []byte {
	return fmt.Appendf(nil, "alknet-vault/%d|%s|%s|%s|%d|%d|%d|%s", FileFormat, ModeSealed, fp, k.Name, k.Time, k.MemoryKiB, k.Threads, k.Salt)
}

func argonKey(passphrase []byte, salt []byte, k KDFParams) []byte {
	return argon2.IDKey(passphrase, salt, k.Time, k.MemoryKiB, k.Threads, 32)
}

// Seed opens the file and returns the 64-byte BIP39 seed. A sealed file
// needs the passphrase; a plain file ignores it. The seed is checked
// against the stored fingerprint.
func (f *File) Seed(passphrase []byte) (Secret, error) {
	var seed []byte
	switch f.info.Mode {
	case ModePlain:
		seed = append([]byte(nil), f.seed...)
	case ModeSealed:
		if len(passphrase) == 0 {
			return Secret{}, ErrPassphraseRequired
		}
		key := argonKey(passphrase, f.salt, *f.info.KDF)
		defer wipe(key)
		aead, err := newGCM(key)
		if err != nil {
			return Secret{}, ErrUnlock
		}
		seed, err = aead.Open(nil, f.nonce, f.ct, sealAAD(f.info.Fingerprint, *f.info.KDF))
		if err != nil {
			return Secret{}, ErrUnlock
		}
	}
	s := NewSecret(seed)
	wipe(seed)
	fp := seedFingerprint(s)
	if subtle.ConstantTimeCompare([]byte(fp), []byte(f.info.Fingerprint)) != 1 {
		s.Wipe()
		return Secret{}, fmt.Errorf("vault file is damaged: its fingerprint %s does not match its seed; restore it with `alknet vault recover`", f.info.Fingerprint)
	}
	return s, nil
}

// seedFingerprint is the node fingerprint for a seed.
func seedFingerprint(seed Secret) string {
	p, _ := ParsePath(PathNodeIdentity)
	x := DeriveSLIP10(seed.Bytes(), p)
	defer x.Wipe()
	k := newPrivateKey(x.Key.Bytes())
	defer k.Wipe()
	return identity.KeyFingerprint(k.Public())
}

// EncodeFile serialises seed in the given mode. For ModeSealed, passphrase
// must be non-empty and kdf gives the Argon2id cost (salt is drawn here).
func EncodeFile(seed Secret, mode Mode, passphrase []byte, kdf KDFParams) ([]byte, error) {
	if seed.Len() != seedSize {
		return nil, fmt.Errorf("vault seed must be %d bytes", seedSize)
	}
	j := fileJSON{Format: FileFormat, Mode: mode, Fingerprint: seedFingerprint(seed)}
	switch mode {
	case ModePlain:
		j.Seed = base64.StdEncoding.EncodeToString(seed.Bytes())
	case ModeSealed:
		if len(passphrase) == 0 {
			return nil, errors.New("sealing the vault needs a non-empty passphrase")
		}
		salt := make([]byte, kdfSaltSize)
		nonce := make([]byte, ivSize)
		if _, err := rand.Read(salt); err != nil {
			return nil, err
		}
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		kdf.Name = "argon2id"
		kdf.Salt = base64.StdEncoding.EncodeToString(salt)
		key := argonKey(passphrase, salt, kdf)
		defer wipe(key)
		aead, err := newGCM(key)
		if err != nil {
			return nil, err
		}
		j.KDF = &kdf
		j.Cipher = sealCipher
		j.Nonce = base64.StdEncoding.EncodeToString(nonce)
		j.Ciphertext = base64.StdEncoding.EncodeToString(aead.Seal(nil, nonce, seed.Bytes(), sealAAD(j.Fingerprint, kdf)))
	default:
		return nil, fmt.Errorf("unknown vault mode %q", mode)
	}
	out, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ReadFile reads and parses a vault file, refusing one that group or
// others can read.
func ReadFile(path string) (*File, error) {
	b, err := readPrivateFile(path, "vault file")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s: create one with `alknet init` or `alknet vault recover`", ErrNoVault, path)
		}
		return nil, err
	}
	defer wipe(b)
	f, err := ParseFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// WriteFile writes the vault file atomically with mode 0600.
func WriteFile(path string, seed Secret, mode Mode, passphrase []byte, kdf KDFParams) error {
	b, err := EncodeFile(seed, mode, passphrase, kdf)
	if err != nil {
		return err
	}
	defer wipe(b)
	return atomicfile.WriteFile(path, b)
}

// Open reads the vault file at path and returns an unlocked vault.
func Open(path string, passphrase []byte) (*Vault, Info, error) {
	f, err := ReadFile(path)
	if err != nil {
		return nil, Info{}, err
	}
	seed, err := f.Seed(passphrase)
	if err != nil {
		return nil, f.info, err
	}
	v := New()
	v.UnlockSeed(seed)
	return v, f.info, nil
}

// ReadPassphraseFile reads a passphrase from a file that only its owner can
// read, dropping one trailing newline.
func ReadPassphraseFile(path string) (Secret, error) {
	b, err := readPrivateFile(path, "passphrase file")
	if err != nil {
		return Secret{}, err
	}
	defer wipe(b)
	p := bytes.TrimSuffix(b, []byte("\n"))
	p = bytes.TrimSuffix(p, []byte("\r"))
	if len(p) == 0 {
		return Secret{}, fmt.Errorf("passphrase file %s is empty", path)
	}
	return NewSecret(p), nil
}

// readPrivateFile reads a file after checking that neither group nor others
// have any permission on it (docs/architecture.md D8: secrets at rest are 0600).
func readPrivateFile(path, what string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %04o and can be read by other users; fix it with: chmod 600 %s", what, path, perm, path)
	}
	return os.ReadFile(path)
}
