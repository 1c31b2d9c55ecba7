// Package pluginhost runs protocol handlers as separate plugin processes
// (spec/plugins.md, D6, D7): it installs and verifies them, launches them
// with HashiCorp go-plugin, registers their ALPNs with the endpoint and
// their operations with the call registry, bridges stream bytes over gRPC,
// resolves capabilities per call, and supervises and upgrades them.
package pluginhost

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
)

// States of a plugin (spec/plugins.md §6).
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
// launch and call (it may change on reload).
type PluginConfig struct {
	Version      string
	Settings     json.RawMessage
	Capabilities map[string]string // capability name → grant
	Disabled     bool
	// RequireSignature refuses to launch a version installed without a
	// signature by one of TrustedPublishers (any signer if that is empty).
	RequireSignature  bool
	TrustedPublishers []string
}

// Options configure a Host.
type Options struct {
	Store        *Store
	Endpoint     *endpoint.Endpoint
	Registry     *call.Registry
	Logger       hclog.Logger
	MTLS         bool
	DrainTimeout time.Duration
	Config       func(name string) PluginConfig
	Resolve      CapabilityResolver
	NodeInfo     json.RawMessage
	// Policy is the current auth policy (for ResolveIdentity).
	Policy func() *auth.Policy
	// DefaultGrants are grants used when the config names none for a
	// capability a plugin declares (ssh_host_key → the vault's SSH host key).
	DefaultGrants map[string]string
}

// Host supervises every installed plugin.
type Host struct {
	opts Options
	log  hclog.Logger

	mu      sync.Mutex
	plugins map[string]*supervisor
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
	return &Host{opts: o, log: o.Logger, plugins: map[string]*supervisor{}}
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
// ready or has failed (a failed plugin never stops the node).
func (h *Host) Start(ctx context.Context) error {
	lock, err := h.opts.Store.Load()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, name := range lock.Names() {
		if h.opts.Config(name).Disabled {
			continue
		}
		sup := h.supervisor(name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sup.waitSettled(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (h *Host) supervisor(name string) *supervisor {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.plugins[name]; ok {
		return s
	}
	s := newSupervisor(h, name)
	h.plugins[name] = s
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		s.run()
	}()
	return s
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

// Reload re-reads the lock file: new plugins start, a changed version is
// switched to without downtime, a bumped restart generation or a failed
// plugin restarts, removed plugins stop.
func (h *Host) Reload() {
	lock, err := h.opts.Store.Load()
	if err != nil {
		h.log.Error("plugin reload", "error", err)
		return
	}
	names := lock.Names()
	for _, name := range names {
		if h.opts.Config(name).Disabled {
			continue
		}
		h.supervisor(name).pokeIt()
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
		s.shutdown()
	}
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
		s.shutdown()
	}
	h.wg.Wait()
	h.writeState()
}

// capabilities resolves the grants of plugin name for one request.
func (h *Host) capabilities(name string) ([]*pluginpb.Capability, error) {
	grants := h.grants(name)
	out := make([]*pluginpb.Capability, 0, len(grants))
	for _, capName := range sortedKeys(grants) {
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
// for the capabilities its running manifest declares and the config leaves
// out.
func (h *Host) grants(name string) map[string]string {
	g := map[string]string{}
	h.mu.Lock()
	sup := h.plugins[name]
	h.mu.Unlock()
	if sup != nil {
		if in := sup.current(); in != nil {
			for _, c := range in.manifest.Capabilities {
				if d, ok := h.opts.DefaultGrants[c.Name]; ok {
					g[c.Name] = d
				}
			}
		}
	}
	for k, v := range h.opts.Config(name).Capabilities {
		g[k] = v
	}
	return g
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func identityJSON(id *auth.Identity) []byte {
	if id == nil {
		return nil
	}
	b, _ := json.Marshal(id)
	return b
}
