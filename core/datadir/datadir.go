// Package datadir locates and creates a node's data directory: the vault,
// credentials, known peers, plugins and repositories of one node live there
// (docs/spec/identity.md §6). It also holds the directory for the one node
// that serves from it (LockNode) and tells commands which node that is
// (RunningNode).
package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"alknet.dev/alknet/core/vault"
)

// Dir is a node's data directory.
type Dir struct {
	Path string
}

// Default is $XDG_DATA_HOME/alknet, else ~/.local/share/alknet.
func Default() (string, error) {
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "alknet"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find a data directory: %w (give --data-dir)", err)
	}
	return filepath.Join(home, ".local", "share", "alknet"), nil
}

// Open returns the directory at path (made absolute); it does not create it.
func Open(path string) (Dir, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Dir{}, fmt.Errorf("data directory %q: %w", path, err)
	}
	return Dir{Path: abs}, nil
}

// Ensure creates the directory with mode 0700 if needed and refuses one
// that other users can write to (they could swap the vault or a plugin).
func (d Dir) Ensure() error {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return fmt.Errorf("create data directory %s: %w", d.Path, err)
	}
	st, err := os.Stat(d.Path)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", d.Path)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("data directory %s has mode %04o and other users can write to it; fix it with: chmod 700 %s", d.Path, st.Mode().Perm(), d.Path)
	}
	return nil
}

// Exists reports whether the directory exists.
func (d Dir) Exists() bool {
	st, err := os.Stat(d.Path)
	return err == nil && st.IsDir()
}

// VaultPath is <data>/vault.json.
func (d Dir) VaultPath() string { return filepath.Join(d.Path, vault.FileName) }

// CredentialsPath is <data>/credentials.json.
func (d Dir) CredentialsPath() string { return filepath.Join(d.Path, vault.CredentialsFileName) }

// KnownPeersPath is <data>/known_peers.
func (d Dir) KnownPeersPath() string { return filepath.Join(d.Path, "known_peers") }

// PluginsPath is <data>/plugins.
func (d Dir) PluginsPath() string { return filepath.Join(d.Path, "plugins") }

// nodeEntries are the names the node itself uses in its data directory; a
// plugin of one of these names gets no state directory.
var nodeEntries = map[string]bool{
	vault.FileName: true, vault.CredentialsFileName: true, "known_peers": true, "plugins": true,
	NodeLockName: true, "acme": true, "ssh_known_hosts": true,
}

// PluginStatePath is <data>/<name>: the directory the plugin name keeps
// its data in (docs/spec/plugins.md §9). A name the node uses for its own
// files is refused.
func (d Dir) PluginStatePath(name string) (string, error) {
	if name == "" || name == "." || name == ".." || filepath.Base(name) != name || nodeEntries[name] {
		return "", fmt.Errorf("plugin name %q cannot name a state directory in %s: the node uses that name itself", name, d.Path)
	}
	return filepath.Join(d.Path, name), nil
}

// HasVault reports whether a vault file exists.
func (d Dir) HasVault() bool {
	_, err := os.Lstat(d.VaultPath())
	return !errors.Is(err, os.ErrNotExist)
}
