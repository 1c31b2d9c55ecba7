package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// Plugins configures the plugin host. Besides mtls and drain_timeout,
// every table [plugins.<name>] configures one plugin.
type Plugins struct {
	MTLS         bool          `mapstructure:"mtls" doc:"go-plugin AutoMTLS on the plugin sockets (default true)"`
	DrainTimeout time.Duration `mapstructure:"drain_timeout" doc:"how long a replaced plugin version may finish its connections"`
	// RequireSignature makes installs (and launches) need a publisher
	// signature; turned on by a reload, it stops unsigned running plugins.
	RequireSignature  bool     `mapstructure:"require_signature" reload:"dynamic" doc:"plugins must carry a valid publisher signature (alknet plugin install --signature); a reload that turns it on stops unsigned running plugins"`
	TrustedPublishers []string `mapstructure:"trusted_publishers" reload:"dynamic" doc:"publisher keys (ed25519:<hex>) whose signatures are accepted"`
	// User runs every plugin as another local user (the node must run as
	// root); docs/spec/plugins.md §9.
	User string `mapstructure:"user" doc:"run plugins as this local user (name or uid; the node must run as root), so that a plugin cannot read the node's files; empty: the node's own user"`
	// Entries holds [plugins.<name>] tables: version, settings, capabilities, disabled, limits.
	Entries map[string]any `mapstructure:",remain"`
	parsed  map[string]Plugin
}

// Plugin configures one plugin ([plugins.<name>]). Keys other than
// version, settings, capabilities, disabled and limits are the plugin's
// own settings too, so `[plugins.ssh] exec_allow = [...]` works as the
// handler specs write it; a key given in both places is an error.
type Plugin struct {
	Version      string            `mapstructure:"version"`
	Settings     map[string]any    `mapstructure:"settings"`
	Capabilities map[string]string `mapstructure:"capabilities"`
	Disabled     bool              `mapstructure:"disabled"`
	Limits       PluginLimits      `mapstructure:"limits"`
	Extra        map[string]any    `mapstructure:",remain"`
}

// PluginLimits is [plugins.<name>.limits] as written; absent keys take the
// defaults below (docs/spec/plugins.md §9). ResourceLimits resolves them.
type PluginLimits struct {
	// Memory is bytes, or a size such as "512MiB" or "1GiB".
	Memory    string   `mapstructure:"memory"`
	OpenFiles *int     `mapstructure:"open_files"`
	Processes *int     `mapstructure:"processes"`
	CPU       *float64 `mapstructure:"cpu"`
}

// Defaults of [plugins.<name>.limits].
const (
	DefaultPluginMemory    = 1 << 30 // 1 GiB
	DefaultPluginOpenFiles = 4096
	DefaultPluginProcesses = 256
	DefaultPluginCPU       = 1.0
)

// ResourceLimits are the limits a plugin runs under: [plugins.<name>.limits]
// with the defaults applied.
type ResourceLimits struct {
	MemoryBytes int64
	OpenFiles   int
	Processes   int
	CPU         float64 // a fraction of one CPU
}

var limitKeys = []string{"memory", "open_files", "processes", "cpu"}

// resolve applies the defaults and checks every value; errors name the key
// under prefix (plugins.<name>.limits).
func (l PluginLimits) resolve(prefix string) (ResourceLimits, error) {
	r := ResourceLimits{MemoryBytes: DefaultPluginMemory, OpenFiles: DefaultPluginOpenFiles, Processes: DefaultPluginProcesses, CPU: DefaultPluginCPU}
	if l.Memory != "" {
		n, err := ParseSize(l.Memory)
		if err != nil {
			return r, fmt.Errorf("%s.memory: %w", prefix, err)
		}
		// Below this a Go plugin cannot even start; it would crash-loop.
		if n < 16<<20 {
			return r, fmt.Errorf("%s.memory: %q is below the 16MiB a plugin needs to start", prefix, l.Memory)
		}
		r.MemoryBytes = n
	}
	if l.OpenFiles != nil {
		if *l.OpenFiles < 64 || *l.OpenFiles > 1<<20 {
			return r, fmt.Errorf("%s.open_files: %d is out of range (64 to 1048576)", prefix, *l.OpenFiles)
		}
		r.OpenFiles = *l.OpenFiles
	}
	if l.Processes != nil {
		// A Go plugin needs a handful of threads, and every thread counts.
		if *l.Processes < 16 || *l.Processes > 1<<22 {
			return r, fmt.Errorf("%s.processes: %d is out of range (16 to 4194304; threads count too)", prefix, *l.Processes)
		}
		r.Processes = *l.Processes
	}
	if l.CPU != nil {
		// The kernel's smallest quota is 1 ms per 100 ms period.
		if !(*l.CPU >= 0.01 && *l.CPU <= 1024) {
			return r, fmt.Errorf("%s.cpu: %v is out of range (0.01 to 1024 CPUs, e.g. 0.5 or 2)", prefix, *l.CPU)
		}
		r.CPU = *l.CPU
	}
	return r, nil
}

// ResourceLimits are the limits plugin p runs under (the defaults for a
// plugin the configuration does not mention).
func (p Plugin) ResourceLimits() ResourceLimits {
	r, _ := p.Limits.resolve("") // validated when the configuration was parsed
	return r
}

// ParseSize reads a size in bytes: a plain number, or a number with a
// unit — KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, TB (powers of
// 1000), case-insensitive, e.g. "512MiB". Written here rather than taken
// from a units module: it is a few lines, and the core adds no module for
// it.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}[unit]
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || mult == 0 || v < 0 {
		return 0, fmt.Errorf("%q is not a size: give bytes, or a number with KiB, MiB, GiB (or kB, MB, GB), e.g. \"512MiB\"", s)
	}
	if v*mult > float64(1<<62) {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(v * mult), nil
}

// Plugin returns the settings of plugin name (zero value if none).
func (p Plugins) Plugin(name string) Plugin { return p.parsed[name] }

// Names lists the plugins the configuration has a [plugins.<name>] table
// for, sorted.
func (p Plugins) Names() []string {
	out := make([]string, 0, len(p.parsed))
	for n := range p.parsed {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (p *Plugins) parse() error {
	p.parsed = map[string]Plugin{}
	for name, raw := range p.Entries {
		var pl Plugin
		dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{ErrorUnused: true, Result: &pl, WeaklyTypedInput: true})
		if err != nil {
			return err
		}
		t, ok := raw.(map[string]any)
		if !ok {
			// Not a [plugins.<name>] table: a misspelled key of [plugins].
			return fmt.Errorf("plugins.%s: unknown setting%s; a plugin's own settings go in a [plugins.%s] table, and every setting is listed by `alknet config docs`", name, didYouMean("plugins."+name, knownKeys()), name)
		}
		if lim, ok := t["limits"].(map[string]any); ok {
			for k := range lim {
				if !slices.Contains(limitKeys, k) {
					return fmt.Errorf("plugins.%s.limits.%s: unknown limit (known: %s)", name, k, strings.Join(limitKeys, ", "))
				}
			}
		}
		if err := dec.Decode(raw); err != nil {
			return fmt.Errorf("plugins.%s: %w", name, err)
		}
		if _, err := pl.Limits.resolve("plugins." + name + ".limits"); err != nil {
			return err
		}
		if len(pl.Extra) > 0 && pl.Settings == nil {
			pl.Settings = map[string]any{}
		}
		for k, v := range pl.Extra {
			if _, dup := pl.Settings[k]; dup {
				return fmt.Errorf("plugins.%s.%s: given both directly and in plugins.%s.settings", name, k, name)
			}
			pl.Settings[k] = v
		}
		pl.Extra = nil
		for capName, grant := range pl.Capabilities {
			if !validGrant(grant) {
				return fmt.Errorf("plugins.%s.capabilities.%s: %q is not vault:ed25519:<path>, credential:<name> or file:<path>", name, capName, grant)
			}
		}
		p.parsed[name] = pl
	}
	return nil
}

func validGrant(g string) bool {
	for _, prefix := range []string{"vault:ed25519:m/", "credential:", "file:/"} {
		if strings.HasPrefix(g, prefix) && len(g) > len(prefix) {
			return true
		}
	}
	return false
}
