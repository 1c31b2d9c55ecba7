// Package node assembles a node from its configuration — TLS identity,
// endpoint, auth, call registry, plugin host — and runs it: the
// composition root of `alknet serve` (docs/architecture.md). cmd/alknet
// parses flags, reads the configuration and opens the vault; everything
// else a running node is made of is wired here, once.
package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/diag"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/pluginhost"
	"alknet.dev/alknet/core/vault"
	"alknet.dev/alknet/proto/pluginpb"
)

// Options configure a node.
type Options struct {
	// Config is the validated configuration.
	Config *config.Config
	// Dir is the data directory (it exists).
	Dir datadir.Dir
	// Vault is the node's open vault (capabilities and, in raw_key mode
	// without tls.key_file, the node key are derived from it).
	Vault *vault.Vault
	// Version is the node's version, reported by node/info and to plugins.
	Version string
	// BundledDir holds alknet-plugin-* executables installed at start
	// (beside the alknet binary: the embedded default, docs/architecture.md D11). Empty: none.
	BundledDir string
	Logger     hclog.Logger
}

// Node is one running core process.
type Node struct {
	opts    Options
	log     hclog.Logger
	cfg     atomic.Pointer[config.Config]
	auth    *auth.Provider
	ep      *endpoint.Endpoint
	reg     *call.Registry
	plugins *pluginhost.Host
	fp      string
	acme    func(context.Context) error

	reloadMu sync.Mutex
	stopBG   context.CancelFunc
	bg       sync.WaitGroup

	callAdapter *call.Adapter
	importers   []*importer     // [[call.imports]], set by Start
	budget      *call.Budget    // node-wide request bytes in flight
	penalties   *auth.Penalties // rejected tokens per source
	started     time.Time
}

// New assembles the node; Start serves it.
func New(o Options) (*Node, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	cfg := o.Config
	n := &Node{opts: o, log: o.Logger, started: time.Now()}
	n.cfg.Store(cfg)
	pol, err := cfg.Policy()
	if err != nil {
		return nil, err
	}
	for i, imp := range cfg.Call.Imports {
		if _, _, err := dial.ParseTarget(imp.Target); err != nil {
			return nil, fmt.Errorf("call.imports[%d].target: %w", i, err)
		}
	}
	certs, fp, runACME, err := n.identity(cfg)
	if err != nil {
		return nil, err
	}
	n.fp, n.acme = fp, runACME
	n.auth = auth.NewProvider(pol.WithOperator(fp))
	n.ep = endpoint.New(endpoint.Options{
		Listen:       cfg.Listen,
		Plain:        cfg.Listeners.Plain,
		Certs:        certs,
		Auth:         n.auth,
		Limits:       func() config.Limits { return n.cfg.Load().Limits },
		DrainTimeout: cfg.DrainTimeout,
		Logger:       n.log.Named("endpoint"),
	})
	n.reg = call.NewRegistry(n.log.Named("call"))
	n.reg.SetDeadline(cfg.Call.Deadline)
	if err := n.reg.Register(n.nodeInfo()); err != nil {
		return nil, err
	}
	if cfg.EnableDiag {
		if _, err := diag.Register(n.reg); err != nil {
			return nil, err
		}
	}
	n.budget = call.NewBudget(cfg.Limits.MaxRequestBytes)
	n.penalties = auth.NewPenalties()
	n.callAdapter = &call.Adapter{Registry: n.reg, Policy: n.auth.Policy, CallTimeout: cfg.Call.Deadline, Logger: n.log.Named("call"),
		Limits: n.callLimits, NodeBudget: n.budget}
	if err := n.ep.Register(call.ALPN, "core", n.callAdapter); err != nil {
		return nil, err
	}
	if err := n.reg.Register(n.nodeStats()); err != nil {
		return nil, err
	}
	n.plugins = pluginhost.New(pluginhost.Options{
		Store:    pluginhost.OpenStore(o.Dir.PluginsPath()),
		Endpoint: n.ep, Registry: n.reg, Logger: n.log.Named("plugin"),
		MTLS: cfg.Plugins.MTLS, DrainTimeout: cfg.Plugins.DrainTimeout,
		Node:    &pluginpb.NodeInfo{Id: fp, Version: o.Version, LogLevel: logLevel(cfg.LogLevel, n.log)},
		Config:  n.pluginConfig,
		Resolve: n.resolveCapability,
		Policy:  n.auth.Policy,
		// The SSH host key is derived from the vault unless the config
		// grants another one (docs/spec/vault.md §2).
		DefaultGrants: map[string]string{"ssh_host_key": "vault:ed25519:" + vault.PathSSHHostKey},
		User:          cfg.Plugins.User,
		StateDir:      o.Dir.PluginStatePath,
		DialPeer:      n.dialPeer,
	})
	return n, nil
}

func logLevel(configured string, log hclog.Logger) string {
	if configured != "" {
		return configured
	}
	return log.GetLevel().String()
}

// Start binds the listeners, installs bundled plugins, launches every
// plugin (waiting until each is ready or failed) and starts background
// work (ACME renewal).
func (n *Node) Start(ctx context.Context) error {
	if err := n.ep.Start(); err != nil {
		return err
	}
	if n.opts.BundledDir != "" {
		if err := n.installBundled(ctx); err != nil {
			n.log.Warn("auto-install of bundled plugins", "error", err)
		}
	}
	if err := n.plugins.Start(ctx); err != nil {
		n.ep.Shutdown()
		return err
	}
	bg, stop := context.WithCancel(context.Background())
	n.stopBG = stop
	n.startImports(bg)
	if n.acme != nil {
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			_ = n.acme(bg)
		}()
	}
	n.log.Info("node ready", "fingerprint", n.fp, "data_dir", n.opts.Dir.Path, "alpns", fmt.Sprint(n.ep.ALPNs()))
	return nil
}

// Shutdown drains the endpoint, then stops the plugins (after their
// connections) and background work.
func (n *Node) Shutdown() {
	n.ep.Shutdown()
	n.plugins.Shutdown()
	if n.stopBG != nil {
		n.stopBG()
	}
	n.bg.Wait()
}

// Reloaded is what a reload applied only in part.
type Reloaded struct {
	// Static lists the static keys that changed: the running values stay
	// until a restart.
	Static []string
	// Plugins says, one line per plugin, what the plugins did not apply
	// (nil: they all did).
	Plugins error
}

// Reload applies next's dynamic settings — auth peers and API keys,
// limits, plugin settings, capability grants, signature rules, the
// plugin set — and keeps the running values of static ones. It returns
// once the plugins have acted on it (a new version serves, new settings
// are in force), or ctx ends. next must be validated; an error means
// nothing was applied.
func (n *Node) Reload(ctx context.Context, next *config.Config) (Reloaded, error) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	old := n.cfg.Load()
	r := Reloaded{Static: config.StaticChanges(old, next)}
	applied := config.ApplyDynamic(old, next)
	pol, err := applied.Policy()
	if err != nil {
		return r, err
	}
	n.cfg.Store(applied)
	n.auth.Swap(pol.WithOperator(n.fp))
	r.Plugins = n.plugins.Reload(ctx)
	n.refreshImports()
	return r, nil
}

// Config is the configuration in force.
func (n *Node) Config() *config.Config { return n.cfg.Load() }

// Fingerprint is the node's identity (ed25519:<hex> in raw_key mode).
func (n *Node) Fingerprint() string { return n.fp }

// UDPAddr and TCPAddr are the bound addresses (same port).
func (n *Node) UDPAddr() net.Addr { return n.ep.UDPAddr() }

// TCPAddr is the bound TCP+TLS address.
func (n *Node) TCPAddr() net.Addr { return n.ep.TCPAddr() }

// ALPNs are the protocols the node serves now.
func (n *Node) ALPNs() []string { return n.ep.ALPNs() }

// Registry is the node's call registry.
func (n *Node) Registry() *call.Registry { return n.reg }

// Plugins are the statuses of the node's plugins.
func (n *Node) Plugins() []pluginhost.Status { return n.plugins.Statuses() }

// callLimits are the bounds of a new alknet/call connection, from the
// configuration in force.
func (n *Node) callLimits() call.Limits {
	l := n.cfg.Load().Limits
	return call.Limits{MaxFrameBytes: l.MaxFrameBytes, MaxRequestBytes: l.MaxRequestBytesPerConn, MaxInFlight: l.MaxStreamsPerConnection,
		MaxAuthFailures: l.MaxAuthAttempts, AuthPenalty: n.penalties}
}

// ScopeNodeRead lets an identity see node/info in full.
const ScopeNodeRead = "node:read"

// nodeInfo is the built-in node/info operation. Anyone learns the node's
// fingerprint and ALPNs (what a peer needs to talk to it); its version and
// its plugins' versions, states and pids only an identity with node:read
// or admin (an attacker should not learn what to aim at).
func (n *Node) nodeInfo() call.Registration {
	return call.Registration{
		Spec: call.Spec{Name: "node/info", OpType: call.Query, RemoteSafe: true,
			Description: "node id and ALPNs; with scope node:read or admin also its version and plugins"},
		Call: func(ctx context.Context, _ json.RawMessage) (any, error) {
			info := map[string]any{"id": n.fp, "alpns": n.ep.ALPNs()}
			if ci, ok := call.FromContext(ctx); ok && (ci.Identity.HasScope(ScopeNodeRead) || ci.Identity.HasScope("admin")) {
				info["version"], info["plugins"] = n.opts.Version, n.plugins.Statuses()
			}
			return info, nil
		},
	}
}

// pluginConfig is what the plugin host reads for plugin name, from the
// configuration in force (a reload changes it).
func (n *Node) pluginConfig(name string) pluginhost.PluginConfig {
	all := n.cfg.Load().Plugins
	p := all.Plugin(name)
	var settings json.RawMessage
	if len(p.Settings) > 0 {
		settings, _ = json.Marshal(p.Settings)
	}
	l := p.ResourceLimits()
	return pluginhost.PluginConfig{Version: p.Version, Settings: settings, Capabilities: p.Capabilities, Disabled: p.Disabled,
		RequireSignature: all.RequireSignature, TrustedPublishers: all.TrustedPublishers,
		Limits: pluginhost.Limits{Memory: l.MemoryBytes, OpenFiles: l.OpenFiles, Processes: l.Processes, CPU: l.CPU}}
}

// installBundled installs every alknet-plugin-* in BundledDir whose exact
// binary is not installed yet, unless `alknet plugin remove` removed that
// version (docs/spec/plugins.md §7). Bundled plugins sit beside the trusted
// alknet binary itself; a rebuilt one replaces the installed build of the
// same version (nothing runs yet).
func (n *Node) installBundled(ctx context.Context) error {
	store := pluginhost.OpenStore(n.opts.Dir.PluginsPath())
	matches, _ := filepath.Glob(filepath.Join(n.opts.BundledDir, "alknet-plugin-*"))
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
		inst, err := store.Install(ctx, m, "bundled:"+m, pluginhost.InstallOptions{SHA256: sum, Force: true, Bundled: true})
		if errors.Is(err, pluginhost.ErrAlreadyInstalled) {
			continue
		}
		if errors.Is(err, pluginhost.ErrRemoved) {
			n.log.Info("bundled plugin stays removed; `alknet plugin install` of it brings it back", "name", inst.Name, "version", inst.Version, "path", m)
			continue
		}
		if err != nil {
			n.log.Warn("bundled plugin not installed", "path", m, "error", err)
			continue
		}
		n.log.Info("installed bundled plugin", "name", inst.Name, "version", inst.Version, "sha256", inst.SHA256[:12])
	}
	return nil
}

// resolveCapability turns a grant into its secret (docs/spec/plugins.md
// §5).
func (n *Node) resolveCapability(grant string) ([]byte, error) {
	v := n.opts.Vault
	switch {
	case strings.HasPrefix(grant, "vault:ed25519:"):
		if v == nil {
			return nil, errors.New("the vault is not open")
		}
		k, err := v.DeriveEd25519(strings.TrimPrefix(grant, "vault:ed25519:"))
		if err != nil {
			return nil, err
		}
		defer k.Wipe()
		s := k.Seed()
		defer s.Wipe()
		return append([]byte(nil), s.Bytes()...), nil
	case strings.HasPrefix(grant, "credential:"):
		if v == nil {
			return nil, errors.New("the vault is not open")
		}
		s, err := vault.NewCredentialStore(n.opts.Dir.CredentialsPath(), v).Get(strings.TrimPrefix(grant, "credential:"))
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
