package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/core/auth"
)

// AuthFileName is the file in the data directory where `alknet peers` and
// `alknet apikey` keep the peers and API keys they manage. It is dynamic
// configuration: merged with the config file's [[auth.*]] tables on every
// load and reload.
const AuthFileName = "auth.json"

// AuthFilePath is <dataDir>/auth.json.
func AuthFilePath(dataDir string) string { return filepath.Join(dataDir, AuthFileName) }

type authFileJSON struct {
	Peers   []auth.Peer   `json:"peers"`
	APIKeys []auth.APIKey `json:"api_keys"`
}

// LoadAuthFile reads the managed peers and keys (empty if the file does
// not exist). Unknown fields are refused by name.
func LoadAuthFile(path string) (Auth, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Auth{}, nil
	}
	if err != nil {
		return Auth{}, err
	}
	var j authFileJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return Auth{}, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := auth.NewPolicy(j.Peers, j.APIKeys); err != nil {
		return Auth{}, fmt.Errorf("%s: %w", path, err)
	}
	return Auth{Peers: j.Peers, APIKeys: j.APIKeys}, nil
}

// SaveAuthFile writes the managed peers and keys atomically (mode 0600).
func SaveAuthFile(path string, a Auth) error {
	if _, err := auth.NewPolicy(a.Peers, a.APIKeys); err != nil {
		return err
	}
	j := authFileJSON{Peers: a.Peers, APIKeys: a.APIKeys}
	if j.Peers == nil {
		j.Peers = []auth.Peer{}
	}
	if j.APIKeys == nil {
		j.APIKeys = []auth.APIKey{}
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'))
}

// UpdateAuthFile applies change to the managed peers and keys and saves
// the result, holding the file's lock (auth.json.lock, atomicfile.Lock)
// from the read to the write: concurrent `alknet peers add` and `alknet
// apikey create` each build on the other's result instead of replacing it.
// A change that returns an error leaves the file as it was.
func UpdateAuthFile(path string, change func(*Auth) error) error {
	unlock, err := atomicfile.Lock(path)
	if err != nil {
		return err
	}
	defer unlock()
	cur, err := LoadAuthFile(path)
	if err != nil {
		return err
	}
	if err := change(&cur); err != nil {
		return err
	}
	return SaveAuthFile(path, cur)
}

// MergeAuth adds the managed peers and keys to c and validates the result
// (a peer_id present in both places is a duplicate).
func (c *Config) MergeAuth(managed Auth) error {
	c.Auth.Peers = append(c.Auth.Peers, managed.Peers...)
	c.Auth.APIKeys = append(c.Auth.APIKeys, managed.APIKeys...)
	if _, err := c.Policy(); err != nil {
		return fmt.Errorf("%w (the config file and %s together)", err, AuthFileName)
	}
	return nil
}
