package vault

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"sync"

	"alknet.dev/alknet/core/atomicfile"
)

// CredentialsFileName is the credential store inside the data directory.
const CredentialsFileName = "credentials.json"

// credentialName: what `alknet credential set NAME` accepts.
var credentialName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ErrNoCredential is returned (wrapped) for an unknown credential name.
var ErrNoCredential = errors.New("no such credential")

// credentialsJSON is the on-disk shape: only EncryptedData, never plaintext.
type credentialsJSON struct {
	Format      int                      `json:"format"`
	KeyVersion  int                      `json:"key_version"`
	Credentials map[string]EncryptedData `json:"credentials"`
}

// CredentialStore keeps named secrets as EncryptedData blobs in a 0600 JSON
// file, written atomically. It is safe for concurrent use, in one process
// and across processes: every change holds the file's lock
// (credentials.json.lock, atomicfile.Lock) from its read to its write.
type CredentialStore struct {
	mu   sync.Mutex
	path string
	v    *Vault
}

// NewCredentialStore returns a store backed by path and sealed by v.
func NewCredentialStore(path string, v *Vault) *CredentialStore {
	return &CredentialStore{path: path, v: v}
}

// CheckCredentialName validates a credential name.
func CheckCredentialName(name string) error {
	if !credentialName.MatchString(name) {
		return fmt.Errorf("credential name %q: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

func (c *CredentialStore) load() (credentialsJSON, error) {
	empty := credentialsJSON{Format: 1, KeyVersion: DefaultKeyVersion, Credentials: map[string]EncryptedData{}}
	b, err := readPrivateFile(c.path, "credential store")
	if errors.Is(err, fs.ErrNotExist) {
		return empty, nil
	}
	if err != nil {
		return credentialsJSON{}, err
	}
	j, err := parseCredentials(b)
	if err != nil {
		return credentialsJSON{}, fmt.Errorf("%s: %w", c.path, err)
	}
	return j, nil
}

func parseCredentials(b []byte) (credentialsJSON, error) {
	var raw struct {
		Format      int                        `json:"format"`
		KeyVersion  int                        `json:"key_version"`
		Credentials map[string]json.RawMessage `json:"credentials"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return credentialsJSON{}, fmt.Errorf("not a credential store: %w", err)
	}
	if raw.Format != 1 {
		return credentialsJSON{}, fmt.Errorf("credential store format %d is not supported", raw.Format)
	}
	if err := checkKeyVersion(raw.KeyVersion); err != nil {
		return credentialsJSON{}, err
	}
	j := credentialsJSON{Format: 1, KeyVersion: raw.KeyVersion, Credentials: make(map[string]EncryptedData, len(raw.Credentials))}
	for name, rm := range raw.Credentials {
		if err := CheckCredentialName(name); err != nil {
			return credentialsJSON{}, err
		}
		e, err := ParseEncryptedData(rm)
		if err != nil {
			return credentialsJSON{}, fmt.Errorf("credential %q: %w", name, err)
		}
		j.Credentials[name] = e
	}
	return j, nil
}

// change runs f on the store's current content and saves the result,
// holding the in-process mutex and the file lock throughout, so that
// concurrent changes — other goroutines, other `alknet` processes — each
// see the previous one's result instead of overwriting it.
func (c *CredentialStore) change(f func(*credentialsJSON) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	unlock, err := atomicfile.Lock(c.path)
	if err != nil {
		return err
	}
	defer unlock()
	j, err := c.load()
	if err != nil {
		return err
	}
	if err := f(&j); err != nil {
		return err
	}
	return c.save(j)
}

func (c *CredentialStore) save(j credentialsJSON) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(c.path, append(b, '\n'))
}

// Set encrypts secret at the store's current key version and saves it
// under name, replacing any previous value.
func (c *CredentialStore) Set(name string, secret []byte) error {
	if err := CheckCredentialName(name); err != nil {
		return err
	}
	return c.change(func(j *credentialsJSON) error {
		e, err := c.v.Encrypt(secret, j.KeyVersion)
		if err != nil {
			return fmt.Errorf("encrypt credential %q: %w", name, err)
		}
		j.Credentials[name] = e
		return nil
	})
}

// Get decrypts the credential called name.
func (c *CredentialStore) Get(name string) (Secret, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.load()
	if err != nil {
		return Secret{}, err
	}
	e, ok := j.Credentials[name]
	if !ok {
		return Secret{}, fmt.Errorf("%w %q (see `alknet credential list`)", ErrNoCredential, name)
	}
	s, err := c.v.Decrypt(e)
	if err != nil {
		return Secret{}, fmt.Errorf("credential %q: %w", name, err)
	}
	return s, nil
}

// CredentialInfo describes a stored credential without its value.
type CredentialInfo struct {
	Name       string `json:"name"`
	KeyVersion int    `json:"key_version"`
}

// List returns the stored credentials sorted by name.
func (c *CredentialStore) List() ([]CredentialInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.load()
	if err != nil {
		return nil, err
	}
	out := make([]CredentialInfo, 0, len(j.Credentials))
	for name, e := range j.Credentials {
		out = append(out, CredentialInfo{Name: name, KeyVersion: e.KeyVersion})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// Remove deletes the credential called name.
func (c *CredentialStore) Remove(name string) error {
	return c.change(func(j *credentialsJSON) error {
		if _, ok := j.Credentials[name]; !ok {
			return fmt.Errorf("%w %q (see `alknet credential list`)", ErrNoCredential, name)
		}
		delete(j.Credentials, name)
		return nil
	})
}

// KeyVersion is the version new credentials are written with.
func (c *CredentialStore) KeyVersion() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	j, err := c.load()
	return j.KeyVersion, err
}

// RotateAll re-encrypts every credential at version to and makes to the
// version for new writes. All blobs are re-encrypted in memory first and
// written in one atomic replace, so a failure leaves the store unchanged.
func (c *CredentialStore) RotateAll(to int) (int, error) {
	if err := checkKeyVersion(to); err != nil {
		return 0, err
	}
	n := 0
	err := c.change(func(j *credentialsJSON) error {
		for name, e := range j.Credentials {
			ne, err := c.v.Rotate(e, to)
			if err != nil {
				return fmt.Errorf("rotate credential %q: %w", name, err)
			}
			j.Credentials[name] = ne
		}
		j.KeyVersion = to
		n = len(j.Credentials)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
