package vault

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Key versions for credential encryption (docs/spec/vault.md §3).
const (
	MinKeyVersion     = 2
	DefaultKeyVersion = 2
	// MaxKeyVersion keeps the version path index far inside 2^31 and stops
	// a hostile blob from asking for absurd derivations.
	MaxKeyVersion = 1 << 20
)

var (
	// ErrInvalidKeyVersion is returned for key_version < 2.
	ErrInvalidKeyVersion = errors.New("invalid key version")
	// ErrDecrypt is the one error for every decryption failure: it never says
	// whether the key, the IV or the data was wrong.
	ErrDecrypt = errors.New("decryption failed: wrong key or damaged data")
)

// EncryptedData is the credential blob, field for field as the Rust design:
// AES-256-GCM, 12-byte IV, data = ciphertext || 16-byte tag, no AAD.
type EncryptedData struct {
	KeyVersion int    `json:"key_version"`
	Salt       string `json:"salt"`
	IV         string `json:"iv"`
	Data       string `json:"data"`
}

const (
	ivSize   = 12
	saltSize = 32
)

// ParseEncryptedData decodes a JSON blob strictly: all four fields present,
// base64 standard with padding and no whitespace, a 12-byte IV and at least
// a tag's worth of data. It is a parser of untrusted bytes (fuzzed).
func ParseEncryptedData(b []byte) (EncryptedData, error) {
	var raw struct {
		KeyVersion *int    `json:"key_version"`
		Salt       *string `json:"salt"`
		IV         *string `json:"iv"`
		Data       *string `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return EncryptedData{}, fmt.Errorf("encrypted data: not a JSON object: %w", err)
	}
	if dec.More() {
		return EncryptedData{}, errors.New("encrypted data: trailing bytes after the JSON object")
	}
	if raw.KeyVersion == nil || raw.Salt == nil || raw.IV == nil || raw.Data == nil {
		return EncryptedData{}, errors.New("encrypted data: key_version, salt, iv and data are all required")
	}
	e := EncryptedData{KeyVersion: *raw.KeyVersion, Salt: *raw.Salt, IV: *raw.IV, Data: *raw.Data}
	if _, _, err := e.decode(); err != nil {
		return EncryptedData{}, err
	}
	return e, nil
}

// decode returns the IV and ciphertext||tag bytes after strict checks.
func (e EncryptedData) decode() (iv, data []byte, err error) {
	if _, err := decodeB64(e.Salt); err != nil {
		return nil, nil, fmt.Errorf("encrypted data: salt: %w", err)
	}
	iv, err = decodeB64(e.IV)
	if err != nil || len(iv) != ivSize {
		return nil, nil, fmt.Errorf("encrypted data: iv must be %d bytes of base64", ivSize)
	}
	data, err = decodeB64(e.Data)
	if err != nil || len(data) < 16 {
		return nil, nil, errors.New("encrypted data: data must be base64 of ciphertext plus a 16-byte tag")
	}
	return iv, data, nil
}

// decodeB64 is standard base64 with padding; unlike encoding/base64 it
// rejects embedded CR/LF, which the format forbids.
func decodeB64(s string) ([]byte, error) {
	if bytes.ContainsAny([]byte(s), "\r\n") {
		return nil, errors.New("base64 must not contain line breaks")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// Encrypt seals plaintext under the key for version ver with a fresh random
// IV and salt.
func (v *Vault) Encrypt(plaintext []byte, ver int) (EncryptedData, error) {
	iv := make([]byte, ivSize)
	salt := make([]byte, saltSize)
	if _, err := rand.Read(iv); err != nil {
		return EncryptedData{}, err
	}
	if _, err := rand.Read(salt); err != nil {
		return EncryptedData{}, err
	}
	return v.encryptWith(plaintext, ver, iv, salt)
}

func (v *Vault) encryptWith(plaintext []byte, ver int, iv, salt []byte) (EncryptedData, error) {
	key, err := v.credentialKey(ver)
	if err != nil {
		return EncryptedData{}, err
	}
	defer key.Wipe()
	aead, err := newGCM(key.Bytes())
	if err != nil {
		return EncryptedData{}, err
	}
	ct := aead.Seal(nil, iv, plaintext, nil)
	return EncryptedData{
		KeyVersion: ver,
		Salt:       base64.StdEncoding.EncodeToString(salt),
		IV:         base64.StdEncoding.EncodeToString(iv),
		Data:       base64.StdEncoding.EncodeToString(ct),
	}, nil
}

// Decrypt opens a blob. key_version < 2 gives ErrInvalidKeyVersion; a locked
// vault gives ErrLocked; every other failure is ErrDecrypt.
func (v *Vault) Decrypt(e EncryptedData) (Secret, error) {
	if err := checkKeyVersion(e.KeyVersion); err != nil {
		return Secret{}, err
	}
	iv, data, err := e.decode()
	if err != nil {
		return Secret{}, ErrDecrypt
	}
	key, err := v.credentialKey(e.KeyVersion)
	if err != nil {
		return Secret{}, err
	}
	defer key.Wipe()
	aead, err := newGCM(key.Bytes())
	if err != nil {
		return Secret{}, ErrDecrypt
	}
	pt, err := aead.Open(nil, iv, data, nil)
	if err != nil {
		return Secret{}, ErrDecrypt
	}
	s := NewSecret(pt)
	wipe(pt)
	return s, nil
}

// Rotate decrypts a blob and encrypts it again at version to.
func (v *Vault) Rotate(e EncryptedData, to int) (EncryptedData, error) {
	pt, err := v.Decrypt(e)
	if err != nil {
		return EncryptedData{}, err
	}
	defer pt.Wipe()
	return v.Encrypt(pt.Bytes(), to)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
