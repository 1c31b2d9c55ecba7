// Package pluginhost runs protocol handlers as separate plugin processes
// (docs/spec/plugins.md; docs/architecture.md D6, D7, D15): it installs and
// verifies them, launches them with HashiCorp go-plugin, registers their
// ALPNs with the endpoint and their operations with the call registry
// (each inside the namespaces it owns), bridges stream bytes over gRPC,
// resolves capabilities per call, and supervises and upgrades them.
//
// Files: store.go (lock file, install), manifest.go (manifest checks),
// launch.go and inprocess.go (starting a process), trampoline.go (the
// launcher's half in the child: limits, user, exec of the verified file),
// cgroup.go (plugin cgroups, v1 and v2), rundir.go (the socket directory,
// plugins.user), instance.go (one
// running process and its handles), supervisor.go (the state machine),
// route.go (connections to plugins), bridge.go (stream bytes), forward.go
// and callmux.go (operation calls to plugins), hostsvc.go (the Host
// service plugins call).
package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
)

// States of a plugin (docs/spec/plugins.md §6).
const (
	StateStarting   = "starting"
	StateReady      = "ready"
	StateRestarting = "restarting"
	StateFailed     = "failed"
	StateStopped    = "stopped"
)

// Supervision constants.
const (
	backoffMin    = 100 * time.Millisecond
	backoffMax    = 30 * time.Second
	healthyReset  = 60 * time.Second
	crashWindow   = 60 * time.Second
	crashLoopMax  = 5
	stateFileName = "state.json"
)

// CapabilityResolver turns a grant ("vault:ed25519:m/…", "credential:name",
// "file:/path") into its secret bytes.
type CapabilityResolver func(grant string) ([]byte, error)

// PluginConfig is the per-plugin configuration the host reads at every
// launch, call and reload.
type PluginConfig struct {
	Version      string
	Settings     json.RawMessage
	Capabilities map[string]string // capability name → grant
	Disabled     bool
	// RequireSignature refuses to launch — and on reload stops — a version
	// installed without a signature by one of TrustedPublishers (any
	// signer if that is empty).
	RequireSignature  bool
	TrustedPublishers []string
	// Limits bound the plugin's process from its next launch; a reload
	// that changes them restarts it without downtime.
	Limits Limits
}

// Catalog says what is installed; the Store in production.
type Catalog interface {
	Load() (*Lock, error)
}

// Options configure a Host.
type Options struct {
	// Store holds the installed plugins (binaries, lock file, sockets and
	// state file). Catalog, when set, replaces it as the list of what to
	// run (tests with an in-process Launcher need no store).
	Store   *Store
	Catalog Catalog
	// Launcher starts processes (default ProcessLauncher).
	Launcher     Launcher
	Endpoint     *endpoint.Endpoint
	Registry     *call.Registry
	Logger       hclog.Logger
	MTLS         bool
	DrainTimeout time.Duration
	Config       func(name string) PluginConfig
	Resolve      CapabilityResolver
	// Node tells plugins about the node (id, version, log level).
	Node *pluginpb.NodeInfo
	// Policy is the current auth policy (Host.Authenticate).
	Policy func() *auth.Policy
	// DefaultGrants are grants used when the config names none for a
	// capability a plugin declares (ssh_host_key → the vault's SSH host key).
	DefaultGrants map[string]string
	// DialPeer dials another node as this node for a plugin (Host.DialPeer):
	// target is "FINGERPRINT@host:port" or a known peer's "host:port".
	// Nil: plugins cannot dial other nodes.
	DialPeer func(ctx context.Context, target, alpn string) (endpoint.Conn, error)
	// StateDir names the directory each plugin keeps its data in
	// (<data>/<name>); the host creates it before configuring the plugin.
	// Nil: plugins get none.
	StateDir func(name string) (string, error)
	// User is the local user plugins run as (plugins.user; empty: the
	// node's). Start resolves it; it needs the node to run as root.
	User string
}

// Host supervises every installed plugin.
type Host struct {
	opts   Options
	log    hclog.Logger
	proc   *ProcessLauncher // the default launcher
	runAs  *RunAs
	health healthPolicy

	mu      sync.Mutex
	plugins map[string]*supervisor
	claims  map[string]string // operation namespace → plugin name
	wg      sync.WaitGroup
}

// New returns a host; Start launches the installed plugins.
func New(o Options) *Host {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 10 * time.Second
	}
	if o.Config == nil {
		o.Config = func(string) PluginConfig { return PluginConfig{} }
	}
	if o.Node == nil {
		o.Node = &pluginpb.NodeInfo{}
	}
	return &Host{opts: o, log: o.Logger, plugins: map[string]*supervisor{}, claims: map[string]string{},
		proc: &ProcessLauncher{Log: o.Logger}, health: defaultHealth}
}

func (h *Host) catalog() Catalog {
	if h.opts.Catalog != nil {
		return h.opts.Catalog
	}
	return h.opts.Store
}

func (h *Host) launcher() Launcher {
	if h.opts.Launcher != nil {
		return h.opts.Launcher
	}
	return h.proc
}

// Status is what `alknet plugin list` and node/info show.
type Status struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	State    string `json:"state"`
	Protocol int    `json:"protocol,omitempty"`
	Restarts int    `json:"restarts"`
	Pid      int    `json:"pid,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Start launches every installed, enabled plugin; it waits until each is
// ready or has failed (a failed plugin never stops the node). It refuses
// to start when the plugin socket directory is not private enough for the
// configuration, or plugins.user cannot be used.
func (h *Host) Start(ctx context.Context) error {
	if err := h.prepare(); err != nil {
		return err
	}
	lock, err := h.catalog().Load()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, name := range lock.Names() {
		if h.opts.Config(name).Disabled {
			continue
		}
		sup, _ := h.supervisor(name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sup.waitSettled(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// supervisor returns plugin name's supervisor, started now (created
// true) if it had none.
func (h *Host) supervisor(name string) (*supervisor, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.plugins[name]; ok {
		return s, false
	}
	s := newSupervisor(h, name)
	h.plugins[name] = s
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s.run()
	}()
	return s, true
}

// Statuses lists every supervised plugin, sorted by name.
func (h *Host) Statuses() []Status {
	h.mu.Lock()
	sups := make([]*supervisor, 0, len(h.plugins))
	for _, s := range h.plugins {
		sups = append(sups, s)
	}
	h.mu.Unlock()
	out := make([]Status, 0, len(sups))
	for _, s := range sups {
		out = append(out, s.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// writeState records the statuses for `alknet plugin list`.
func (h *Host) writeState() {
	if h.opts.Store == nil {
		return
	}
	b, err := json.MarshalIndent(h.Statuses(), "", "  ")
	if err != nil {
		return
	}
	_ = atomicfile.WriteFile(filepath.Join(h.opts.Store.Dir(), stateFileName), append(b, '\n'))
}

// ReadState reads the statuses a running node last recorded.
func ReadState(store *Store) ([]Status, error) {
	b, err := os.ReadFile(filepath.Join(store.Dir(), stateFileName))
	if err != nil {
		return nil, err
	}
	var st []Status
	return st, json.Unmarshal(b, &st)
}

// PluginUse is what a plugin holds now, for node/stats.
type PluginUse struct {
	Name        string `json:"name"`
	State       string `json:"state"`
	Pid         int    `json:"pid,omitempty"`
	Connections int    `json:"connections"`
	CallsActive int    `json:"calls_in_flight"`
	Streams     int64  `json:"streams"`
}

// Use lists every plugin's connections, calls and bridged streams now.
func (h *Host) Use() []PluginUse {
	var out []PluginUse
	for _, st := range h.Statuses() {
		u := PluginUse{Name: st.Name, State: st.State, Pid: st.Pid}
		h.mu.Lock()
		s := h.plugins[st.Name]
		h.mu.Unlock()
		if s == nil {
			continue
		}
		if in := s.current(); in != nil {
			in.handles.Range(func(_, v any) bool {
				switch v.(type) {
				case *connHandle:
					u.Connections++
				case *callHandle:
					u.CallsActive++
				}
				return true
			})
			u.Streams = in.active.Load()
		}
		out = append(out, u)
	}
	return out
}

// Settings returns the settings plugin name's running instance was
// configured with, and why the last reload's settings were refused (nil
// when they were taken).
func (h *Host) Settings(name string) ([]byte, error) {
	h.mu.Lock()
	s := h.plugins[name]
	h.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("plugin %s is not running", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settings, s.refused
}

// Reload re-reads the lock file and the configuration: new plugins start;
// a changed version or restart generation is switched to without
// downtime; changed settings are applied (live, or by such a switch); a
// plugin the signature rule now refuses is stopped; a failed plugin is
// tried again; removed or disabled plugins stop and lose their operations.
//
// It returns once every plugin has acted on it — a new version serves,
// new settings are in force — or ctx ends, so that whoever changed the
// configuration can rely on the change (docs/spec/plugins.md §6). The
// error lists, one per plugin, what did not apply: settings refused, a
// switch that failed (the running version stays), a plugin that failed
// to start or has not finished within ctx.
func (h *Host) Reload(ctx context.Context) error {
	lock, err := h.catalog().Load()
	if err != nil {
		h.log.Error("plugin reload", "error", err)
		return fmt.Errorf("plugins: %w", err)
	}
	names := lock.Names()
	type poked struct {
		s    *supervisor
		done <-chan struct{}
	}
	var acting []poked
	for _, name := range names {
		if h.opts.Config(name).Disabled {
			continue
		}
		s, created := h.supervisor(name)
		var done <-chan struct{} = s.settled // a new plugin's first start is its action
		if !created {
			done = s.pokeIt()
		}
		acting = append(acting, poked{s, done})
	}
	h.mu.Lock()
	var gone []*supervisor
	for name, s := range h.plugins {
		if !slices.Contains(names, name) || h.opts.Config(name).Disabled {
			gone = append(gone, s)
			delete(h.plugins, name)
		}
	}
	h.mu.Unlock()
	for _, s := range gone {
		s.shutdown(true)
	}
	var problems []error
	for _, p := range acting {
		select {
		case <-p.done:
		case <-ctx.Done():
			problems = append(problems, fmt.Errorf("plugin %s has not finished applying the change (%s); see the node's log", p.s.name, p.s.status().State))
			continue
		}
		st := p.s.status()
		p.s.mu.Lock()
		refused := p.s.refused
		p.s.mu.Unlock()
		switch {
		case st.State == StateFailed:
			problems = append(problems, fmt.Errorf("plugin %s failed: %s", p.s.name, st.Error))
		case refused != nil:
			problems = append(problems, refused)
		case st.State == StateRestarting:
			problems = append(problems, fmt.Errorf("plugin %s is restarting: %s", p.s.name, st.Error))
		}
	}
	return errors.Join(problems...)
}

// prepare readies the plugin socket directory (docs/spec/plugins.md §9):
// private (without AutoMTLS: mode 0700 and the node's user, or the node
// does not start), and emptied of what a previous run left; and resolves
// plugins.user.
func (h *Host) prepare() error {
	if h.opts.User != "" {
		ra, err := lookupRunAs(h.opts.User)
		if err != nil {
			return err
		}
		h.runAs = ra
	}
	dir := h.socketDir()
	if dir == "" {
		return nil
	}
	if err := ensureDir(dir); err != nil {
		return fmt.Errorf("plugin socket directory: %w", err)
	}
	if !h.opts.MTLS {
		if err := privateSocketDir(dir); err != nil {
			return err
		}
	}
	if gone := clearSocketDir(dir); len(gone) > 0 {
		h.log.Info("removed plugin sockets a previous run left behind", "dir", dir, "removed", strings.Join(gone, " "))
	}
	return nil
}

// Shutdown stops every plugin (after the endpoint drained its connections).
func (h *Host) Shutdown() {
	h.mu.Lock()
	sups := make([]*supervisor, 0, len(h.plugins))
	for _, s := range h.plugins {
		sups = append(sups, s)
	}
	h.mu.Unlock()
	for _, s := range sups {
		s.shutdown(false)
	}
	h.wg.Wait()
	h.proc.close()
	if dir := h.socketDir(); dir != "" {
		clearSocketDir(dir)
	}
	h.writeState()
}

// claim records namespaces as plugin name's, refusing any the core or
// another plugin owns (naming both); the plugin's other claims are
// released.
func (h *Host) claim(name string, namespaces []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ns := range namespaces {
		if slices.Contains(CoreNamespaces, ns) {
			return fmt.Errorf("plugin %s declares namespace %q, which the core owns", name, ns)
		}
		if other, ok := h.claims[ns]; ok && other != name {
			return fmt.Errorf("plugin %s declares namespace %q, which plugin %s owns", name, ns, other)
		}
		if owner, ok := h.opts.Registry.NamespaceOwner(ns); ok && owner != "plugin:"+name {
			return fmt.Errorf("plugin %s declares namespace %q, which %s owns", name, ns, describeOwner(owner))
		}
	}
	for ns, owner := range h.claims {
		if owner == name && !slices.Contains(namespaces, ns) {
			delete(h.claims, ns)
		}
	}
	for _, ns := range namespaces {
		h.claims[ns] = name
	}
	return nil
}

// release drops every namespace of plugin name.
func (h *Host) release(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ns, owner := range h.claims {
		if owner == name {
			delete(h.claims, ns)
		}
	}
}

// describeOwner turns a provenance into words for an error.
func describeOwner(provenance string) string {
	switch {
	case provenance == "local":
		return "the core"
	case len(provenance) > 7 && provenance[:7] == "plugin:":
		return "plugin " + provenance[7:]
	}
	return provenance
}

// capabilities resolves the grants of plugin name for one request.
func (h *Host) capabilities(name string, manifest *pluginpb.Manifest) ([]*pluginpb.Capability, error) {
	grants := h.grants(name, manifest)
	keys := make([]string, 0, len(grants))
	for k := range grants {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*pluginpb.Capability, 0, len(grants))
	for _, capName := range keys {
		if h.opts.Resolve == nil {
			return nil, fmt.Errorf("capability %s: no resolver", capName)
		}
		v, err := h.opts.Resolve(grants[capName])
		if err != nil {
			return nil, fmt.Errorf("capability %s of plugin %s (grant %q): %w", capName, name, grants[capName], err)
		}
		out = append(out, &pluginpb.Capability{Name: capName, Value: v})
	}
	return out, nil
}

// grants are the configured grants of plugin name plus the default grants
// for the capabilities its manifest declares and the config leaves out.
func (h *Host) grants(name string, manifest *pluginpb.Manifest) map[string]string {
	g := map[string]string{}
	for _, c := range manifest.GetCapabilities() {
		if d, ok := h.opts.DefaultGrants[c.Name]; ok {
			g[c.Name] = d
		}
	}
	for k, v := range h.opts.Config(name).Capabilities {
		g[k] = v
	}
	return g
}
