package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/pluginhost"
	"alknet.dev/alknet/core/vault"
)

// startPlugins installs the plugins shipped next to the alknet binary
// (embedded default, D11), then launches every installed plugin and waits
// until each is ready or failed.
func (n *node) startPlugins(ctx context.Context, reg *call.Registry) error {
	store := pluginhost.OpenStore(n.dir.PluginsPath())
	if err := autoInstall(ctx, store, n); err != nil {
		n.log.Warn("auto-install of bundled plugins", "error", err)
	}
	info, _ := json.Marshal(map[string]string{"id": n.fp, "version": version})
	n.plugins = pluginhost.New(pluginhost.Options{
		Store: store, Endpoint: n.ep, Registry: reg, Logger: n.log.Named("plugin"),
		MTLS: n.cfg.Load().Plugins.MTLS, DrainTimeout: n.cfg.Load().Plugins.DrainTimeout, NodeInfo: info,
		Config: func(name string) pluginhost.PluginConfig {
			all := n.cfg.Load().Plugins
			p := all.Plugin(name)
			settings, _ := json.Marshal(p.Settings)
			return pluginhost.PluginConfig{Version: p.Version, Settings: settings, Capabilities: p.Capabilities, Disabled: p.Disabled,
				RequireSignature: all.RequireSignature, TrustedPublishers: all.TrustedPublishers}
		},
		Resolve: n.resolveCapability,
		Policy:  n.auth.Policy,
		// The SSH host key is derived from the vault unless the config
		// grants another one (spec/vault.md §2).
		DefaultGrants: map[string]string{"ssh_host_key": "vault:ed25519:" + vault.PathSSHHostKey},
	})
	return n.plugins.Start(ctx)
}

// autoInstall installs every alknet-plugin-* beside the running executable
// whose exact binary is not installed yet.
func autoInstall(ctx context.Context, store *pluginhost.Store, n *node) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	exe, _ = filepath.EvalSymlinks(exe)
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(exe), "alknet-plugin-*"))
	lock, err := store.Load()
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, lp := range lock.Plugins {
		for _, v := range lp.Versions {
			known[v.SHA256] = true
		}
	}
	for _, m := range matches {
		if st, err := os.Stat(m); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue
		}
		sum, err := pluginhost.FileSHA256(m)
		if err != nil || known[sum] {
			continue
		}
		// Bundled plugins sit beside the trusted alknet binary itself.
		inst, err := store.Install(ctx, m, "bundled:"+m, pluginhost.InstallOptions{SHA256: sum})
		if err != nil {
			n.log.Warn("bundled plugin not installed", "path", m, "error", err)
			continue
		}
		n.log.Info("installed bundled plugin", "name", inst.Name, "version", inst.Version, "sha256", inst.SHA256[:12])
	}
	return nil
}

// resolveCapability turns a grant into its secret (plugins.md §5).
func (n *node) resolveCapability(grant string) ([]byte, error) {
	switch {
	case strings.HasPrefix(grant, "vault:ed25519:"):
		if n.vault == nil {
			return nil, errors.New("the vault is not open (tls.key_file is set)")
		}
		k, err := n.vault.DeriveEd25519(strings.TrimPrefix(grant, "vault:ed25519:"))
		if err != nil {
			return nil, err
		}
		defer k.Wipe()
		s := k.Seed()
		defer s.Wipe()
		return append([]byte(nil), s.Bytes()...), nil
	case strings.HasPrefix(grant, "credential:"):
		if n.vault == nil {
			return nil, errors.New("the vault is not open (tls.key_file is set)")
		}
		s, err := vault.NewCredentialStore(n.dir.CredentialsPath(), n.vault).Get(strings.TrimPrefix(grant, "credential:"))
		if err != nil {
			return nil, err
		}
		defer s.Wipe()
		return append([]byte(nil), s.Bytes()...), nil
	case strings.HasPrefix(grant, "file:"):
		s, err := vault.ReadPassphraseFile(strings.TrimPrefix(grant, "file:"))
		if err != nil {
			return nil, err
		}
		defer s.Wipe()
		return append([]byte(nil), s.Bytes()...), nil
	}
	return nil, fmt.Errorf("unknown grant kind %q", grant)
}
