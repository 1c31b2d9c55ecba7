// Package config loads, validates and reloads the node's configuration
// (docs/spec/identity.md §6). Settings resolve flag → environment (ALKNET_*) →
// file → default; secrets never come from any of them (docs/architecture.md D8).
//
// Every key is either static (a restart applies it) or dynamic (a reload
// applies it), declared once by a `reload:"dynamic"` tag on its field or
// an enclosing table's; that one declaration drives StaticChanges,
// ApplyDynamic and Docs (`alknet config docs`). A bad file is rejected
// whole on reload, naming the key, and the old configuration stays.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"alknet.dev/alknet/core/auth"
)

// DefaultPort is the UDP (QUIC) and TCP (TLS) port of a node (docs/architecture.md D1).
const DefaultPort = 4433

// TLS identity modes (docs/spec/identity.md §2).
const (
	TLSRawKey     = "raw_key"
	TLSX509       = "x509"
	TLSACME       = "acme"
	TLSSelfSigned = "self_signed"
)

// Config is the whole node configuration.
type Config struct {
	Listen       string        `mapstructure:"listen" doc:"UDP (QUIC) and TCP (TLS) listen address, same port for both"`
	DataDir      string        `mapstructure:"data_dir" doc:"data directory (vault, credentials, plugins, known_peers)"`
	DrainTimeout time.Duration `mapstructure:"drain_timeout" doc:"how long connections may finish on SIGINT/SIGTERM before they are closed"`
	EnableDiag   bool          `mapstructure:"enable_diag" doc:"serve the diag/* test operations on alknet/call (testing and benchmarks)"`
	LogLevel     string        `mapstructure:"log_level" doc:"trace, debug, info, warn or error"`
	LogJSON      bool          `mapstructure:"log_json" doc:"write logs as JSON lines"`
	TLS          TLS           `mapstructure:"tls"`
	Listeners    Listeners     `mapstructure:"listeners"`
	Limits       Limits        `mapstructure:"limits" reload:"dynamic"`
	Auth         Auth          `mapstructure:"auth" reload:"dynamic"`
	Call         Call          `mapstructure:"call"`
	Plugins      Plugins       `mapstructure:"plugins"`
}

// Call configures the alknet/call protocol.
type Call struct {
	Deadline time.Duration `mapstructure:"deadline" doc:"default deadline of queries and mutations served by this node (TIMEOUT after it)"`
	Imports  []CallImport  `mapstructure:"imports" doc:"[[call.imports]]: name, target, operations, scopes — another node's remote-safe operations served here as <name>/svc/op, forwarded over alknet/call as this node (docs/spec/call.md §7)"`
}

// CallImport is one [[call.imports]] entry: a peer whose operations this
// node forwards to.
type CallImport struct {
	// Name prefixes the operations locally (name/svc/op).
	Name string `mapstructure:"name"`
	// Target is the peer's dial string, FINGERPRINT@HOST[:PORT] (pinned),
	// or HOST[:PORT] with its key in known_peers; nothing else is trusted.
	Target string `mapstructure:"target"`
	// Operations are patterns (path.Match) on the peer's names; empty:
	// every remote-safe operation the peer lets this node see.
	Operations []string `mapstructure:"operations"`
	// Scopes: a caller here needs one of them (or admin) to call the
	// imported operations; default ["peer:<name>"].
	Scopes []string `mapstructure:"scopes"`
}

// ImportScopes are the scopes that let a caller use imp's operations.
func (imp CallImport) ImportScopes() []string {
	s := imp.Scopes
	if len(s) == 0 {
		s = []string{"peer:" + imp.Name}
	}
	if !slices.Contains(s, "admin") {
		s = append(slices.Clone(s), "admin")
	}
	return s
}

// TLS selects the node's TLS identity.
type TLS struct {
	Mode     string `mapstructure:"mode" doc:"raw_key (vault key, default), x509 (files), acme, self_signed (development)"`
	CertFile string `mapstructure:"cert_file" doc:"x509: PEM certificate chain, leaf first"`
	KeyFile  string `mapstructure:"key_file" doc:"x509: PEM private key; raw_key: optional 32-byte seed file (mode 0600) instead of the vault"`
	ACME     ACME   `mapstructure:"acme"`
}

// ACME configures the acme TLS mode.
type ACME struct {
	Domains   []string `mapstructure:"domains" doc:"names to obtain certificates for"`
	CacheDir  string   `mapstructure:"cache_dir" doc:"account key and certificate cache (default <data_dir>/acme)"`
	Directory string   `mapstructure:"directory" doc:"ACME directory URL (default Let's Encrypt production)"`
	Email     string   `mapstructure:"email" doc:"contact address given to the CA"`
	CAFile    string   `mapstructure:"ca_file" doc:"extra PEM root trusted for the ACME directory's HTTPS (private CAs)"`
}

// Listeners holds the optional plain-TCP listeners.
type Listeners struct {
	Plain []PlainListener `mapstructure:"plain" doc:"plain-TCP ports mapped to one ALPN, e.g. {addr = \"127.0.0.1:2222\", alpn = \"alknet/ssh\"}"`
}

// PlainListener maps a plain TCP port to one ALPN (no TLS).
type PlainListener struct {
	Addr string `mapstructure:"addr"`
	ALPN string `mapstructure:"alpn"`
}

// Limits bound what remote parties can make the node hold
// (docs/architecture.md D14). Dynamic unless marked: a reload applies to
// new connections and requests.
type Limits struct {
	MaxConnections          int           `mapstructure:"max_connections" doc:"concurrent connections to the node, all transports (0 = unlimited)"`
	MaxConnectionsPerIP     int           `mapstructure:"max_connections_per_ip" doc:"concurrent connections per source: an IPv4 address or an IPv6 prefix of ipv6_prefix_len bits (0 = unlimited)"`
	IPv6PrefixLen           int           `mapstructure:"ipv6_prefix_len" reload:"restart" doc:"how many leading bits of an IPv6 address make one source for max_connections_per_ip and auth penalties (a host usually has a /64)"`
	MaxAuthAttempts         int           `mapstructure:"max_auth_attempts" doc:"rejected auth tokens a connection may present before it is closed; each is answered later than the last, and failures count per source too"`
	HandshakeTimeout        time.Duration `mapstructure:"handshake_timeout" reload:"restart" doc:"TLS/QUIC handshake timeout"`
	IdleTimeout             time.Duration `mapstructure:"idle_timeout" reload:"restart" doc:"a connection with no bytes moving and no request in progress is closed after this (QUIC and TCP)"`
	MaxStreamsPerConnection int           `mapstructure:"max_streams_per_connection" reload:"restart" doc:"concurrent incoming streams per QUIC connection, and requests served at once per call connection (QUIC or TCP)"`
	MaxFrameBytes           int           `mapstructure:"max_frame_bytes" doc:"largest alknet/call frame a node reads (the protocol allows 64 MiB)"`
	MaxRequestBytes         int64         `mapstructure:"max_request_bytes" doc:"node-wide budget of alknet/call request bytes in flight (frames being read and requests being served); a stream over it is reset"`
	MaxRequestBytesPerConn  int64         `mapstructure:"max_request_bytes_per_connection" doc:"per-connection budget of alknet/call request bytes in flight; a stream over it is reset"`
}

// Auth is the dynamic identity configuration.
type Auth struct {
	Peers   []auth.Peer   `mapstructure:"peers" doc:"[[auth.peers]]: peer_id, fingerprints, ssh_keys, auth_token_hash, scopes, resources, display_name, enabled"`
	APIKeys []auth.APIKey `mapstructure:"api_keys" doc:"[[auth.api_keys]]: prefix, hash, scopes, description, expires_at"`
}

// Defaults sets every default on v.
func Defaults(v *viper.Viper) {
	v.SetDefault("listen", fmt.Sprintf("0.0.0.0:%d", DefaultPort))
	v.SetDefault("data_dir", "")
	v.SetDefault("drain_timeout", 2*time.Second)
	v.SetDefault("log_level", "info")
	v.SetDefault("log_json", false)
	v.SetDefault("tls.mode", TLSRawKey)
	v.SetDefault("tls.cert_file", "")
	v.SetDefault("tls.key_file", "")
	v.SetDefault("tls.acme.domains", []string{})
	v.SetDefault("tls.acme.cache_dir", "")
	v.SetDefault("tls.acme.directory", "https://acme-v02.api.letsencrypt.org/directory")
	v.SetDefault("tls.acme.email", "")
	v.SetDefault("tls.acme.ca_file", "")
	v.SetDefault("limits.max_connections", 10000)
	v.SetDefault("limits.max_connections_per_ip", 100)
	v.SetDefault("limits.ipv6_prefix_len", 64)
	v.SetDefault("limits.max_auth_attempts", 5)
	v.SetDefault("limits.max_frame_bytes", 16<<20)
	v.SetDefault("limits.max_request_bytes", int64(256<<20))
	v.SetDefault("limits.max_request_bytes_per_connection", int64(64<<20))
	v.SetDefault("limits.handshake_timeout", 5*time.Second)
	v.SetDefault("limits.idle_timeout", 30*time.Second)
	v.SetDefault("limits.max_streams_per_connection", 100)
	v.SetDefault("call.deadline", 30*time.Second)
	v.SetDefault("plugins.mtls", true)
	v.SetDefault("plugins.drain_timeout", 10*time.Second)
	v.SetDefault("plugins.require_signature", false)
	v.SetDefault("plugins.trusted_publishers", []string{})
	v.SetDefault("plugins.user", "")
	v.SetDefault("enable_diag", false)
}

// NewViper returns a viper with defaults and the ALKNET_ environment
// prefix (ALKNET_LISTEN, ALKNET_LIMITS_MAX_CONNECTIONS_PER_IP, …).
func NewViper() *viper.Viper {
	v := viper.New()
	Defaults(v)
	v.SetEnvPrefix("ALKNET")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	v.AutomaticEnv()
	return v
}

// flagOnlyKeys are bound on the command line but are not config keys.
var flagOnlyKeys = []string{"config"}

// FromViper decodes and validates v. Keys that are not settings are refused
// by name (a typo must not silently do nothing).
func FromViper(v *viper.Viper) (*Config, error) {
	known := knownKeys()
	for _, k := range v.AllKeys() {
		if !known[k] && !slices.Contains(flagOnlyKeys, k) && !underTable(k, known) && !strings.HasPrefix(k, "plugins.") {
			return nil, fmt.Errorf("%s: unknown setting%s; every setting is listed by `alknet config docs`", k, didYouMean(k, known))
		}
	}
	var c Config
	if err := v.Unmarshal(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(), mapstructure.StringToSliceHookFunc(",")))); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	if err := strictTables(v); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// underTable reports whether k lies inside a key that is a list of tables
// (viper reports auth.peers as one key, but maps may appear as prefixes).
func underTable(k string, known map[string]bool) bool {
	for prefix := range known {
		if strings.HasPrefix(k, prefix+".") && (prefix == "auth.peers" || prefix == "auth.api_keys" || prefix == "listeners.plain" || prefix == "call.imports") {
			return true
		}
	}
	return false
}

// strictTables decodes the arrays of tables with ErrorUnused so that a
// misspelled field inside [[auth.peers]] is named too.
func strictTables(v *viper.Viper) error {
	checks := map[string]any{"auth.peers": &[]auth.Peer{}, "auth.api_keys": &[]auth.APIKey{}, "listeners.plain": &[]PlainListener{}, "call.imports": &[]CallImport{}}
	keys := make([]string, 0, len(checks))
	for k := range checks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw := v.Get(k)
		if raw == nil {
			continue
		}
		dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{ErrorUnused: true, Result: checks[k], WeaklyTypedInput: true})
		if err != nil {
			return err
		}
		if err := dec.Decode(raw); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

// knownKeys lists every dotted key of Config from its mapstructure tags.
func knownKeys() map[string]bool {
	out := map[string]bool{}
	walkKeys(func(l leaf) { out[l.key] = true })
	return out
}

// leaf is one setting of Config: its dotted key, its field, the index path
// to it, and whether a reload applies it (its own reload tag, else the
// nearest enclosing table's, else restart).
type leaf struct {
	key     string
	field   reflect.StructField
	index   []int
	dynamic bool
}

// walkKeys calls f for every leaf setting of Config.
func walkKeys(f func(leaf)) {
	var walk func(t reflect.Type, prefix string, index []int, dynamic bool)
	walk = func(t reflect.Type, prefix string, index []int, dynamic bool) {
		for i := range t.NumField() {
			fld := t.Field(i)
			name := fld.Tag.Get("mapstructure")
			if name == "" || strings.HasPrefix(name, ",") {
				continue
			}
			dyn := dynamic
			switch fld.Tag.Get("reload") {
			case "dynamic":
				dyn = true
			case "restart":
				dyn = false
			}
			idx := append(slices.Clone(index), i)
			if fld.Type.Kind() == reflect.Struct && fld.Type != reflect.TypeOf(time.Duration(0)) {
				walk(fld.Type, prefix+name+".", idx, dyn)
				continue
			}
			f(leaf{key: prefix + name, field: fld, index: idx, dynamic: dyn})
		}
	}
	walk(reflect.TypeOf(Config{}), "", nil, false)
}

// Parse reads a config file's bytes (format: toml, yaml or json) on top of
// the defaults, without flags or environment. It is what `alknet config
// check` and the fuzz target use.
func Parse(data []byte, format string) (*Config, error) {
	v := viper.New()
	Defaults(v)
	v.SetConfigType(format)
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("parse %s: %w", format, err)
	}
	return FromViper(v)
}

// ParseFile is Parse on a file; the format comes from its extension.
func ParseFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b, formatOf(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func formatOf(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return "yaml"
	case ".json":
		return "json"
	default:
		return "toml"
	}
}

// Validate checks every setting and names the first bad key.
func (c *Config) Validate() error {
	if _, _, err := SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if c.DrainTimeout <= 0 || c.DrainTimeout > 10*time.Minute {
		return fmt.Errorf("drain_timeout: %v is out of range (0 < d <= 10m)", c.DrainTimeout)
	}
	switch c.TLS.Mode {
	case TLSRawKey, TLSSelfSigned:
	case TLSX509:
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			return errors.New("tls.cert_file and tls.key_file: both are required when tls.mode = \"x509\"")
		}
	case TLSACME:
		if len(c.TLS.ACME.Domains) == 0 {
			return errors.New("tls.acme.domains: at least one domain is required when tls.mode = \"acme\"")
		}
		if c.TLS.ACME.Directory == "" {
			return errors.New("tls.acme.directory: must not be empty")
		}
	default:
		return fmt.Errorf("tls.mode: %q is not raw_key, x509, acme or self_signed", c.TLS.Mode)
	}
	seen := map[string]bool{}
	for i, p := range c.Listeners.Plain {
		if _, _, err := SplitHostPort(p.Addr); err != nil {
			return fmt.Errorf("listeners.plain[%d].addr: %w", i, err)
		}
		if p.ALPN == "" {
			return fmt.Errorf("listeners.plain[%d].alpn: required (e.g. \"alknet/ssh\")", i)
		}
		if seen[p.Addr] {
			return fmt.Errorf("listeners.plain[%d].addr: %s is listed twice", i, p.Addr)
		}
		seen[p.Addr] = true
	}
	l := c.Limits
	switch {
	case l.MaxConnections < 0:
		return fmt.Errorf("limits.max_connections: %d is negative (0 = unlimited)", l.MaxConnections)
	case l.MaxConnectionsPerIP < 0:
		return fmt.Errorf("limits.max_connections_per_ip: %d is negative (0 = unlimited)", l.MaxConnectionsPerIP)
	case l.IPv6PrefixLen < 16 || l.IPv6PrefixLen > 128:
		return fmt.Errorf("limits.ipv6_prefix_len: %d, want 16..128 (64 is one host's usual allocation)", l.IPv6PrefixLen)
	case l.MaxFrameBytes < 1024 || l.MaxFrameBytes > 64<<20:
		return fmt.Errorf("limits.max_frame_bytes: %d, want 1024..67108864", l.MaxFrameBytes)
	case l.MaxRequestBytesPerConn < int64(l.MaxFrameBytes):
		return fmt.Errorf("limits.max_request_bytes_per_connection: %d is below limits.max_frame_bytes (%d): no frame of that size could be read", l.MaxRequestBytesPerConn, l.MaxFrameBytes)
	case l.MaxRequestBytes < l.MaxRequestBytesPerConn:
		return fmt.Errorf("limits.max_request_bytes: %d is below limits.max_request_bytes_per_connection (%d)", l.MaxRequestBytes, l.MaxRequestBytesPerConn)
	case l.MaxAuthAttempts < 1:
		return fmt.Errorf("limits.max_auth_attempts: %d, want >= 1", l.MaxAuthAttempts)
	case l.HandshakeTimeout <= 0:
		return fmt.Errorf("limits.handshake_timeout: %v, want > 0", l.HandshakeTimeout)
	case l.IdleTimeout <= 0:
		return fmt.Errorf("limits.idle_timeout: %v, want > 0", l.IdleTimeout)
	case l.MaxStreamsPerConnection < 1:
		return fmt.Errorf("limits.max_streams_per_connection: %d, want >= 1", l.MaxStreamsPerConnection)
	}
	if err := c.Plugins.parse(); err != nil {
		return err
	}
	if c.Call.Deadline <= 0 {
		return fmt.Errorf("call.deadline: %v, want > 0", c.Call.Deadline)
	}
	names := map[string]bool{}
	for i, imp := range c.Call.Imports {
		switch {
		case !importName.MatchString(imp.Name):
			return fmt.Errorf("call.imports[%d].name: %q, want [a-z0-9][a-z0-9_.-]* (it prefixes the imported operations: name/svc/op)", i, imp.Name)
		case names[imp.Name]:
			return fmt.Errorf("call.imports[%d].name: %q is listed twice", i, imp.Name)
		case imp.Target == "":
			return fmt.Errorf("call.imports[%d].target: required: the peer's FINGERPRINT@HOST[:PORT] as its `alknet serve` prints it", i)
		}
		names[imp.Name] = true
		for _, p := range imp.Operations {
			if _, err := path.Match(p, ""); err != nil {
				return fmt.Errorf("call.imports[%d].operations: %q is not a pattern: %v", i, p, err)
			}
		}
		for _, s := range imp.Scopes {
			if s == "" {
				return fmt.Errorf("call.imports[%d].scopes: an empty scope", i)
			}
		}
	}
	if _, err := c.Policy(); err != nil {
		return err
	}
	return nil
}

// importName is a [[call.imports]] name: the first part of an operation
// name.
var importName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// Policy builds the auth snapshot of this configuration.
func (c *Config) Policy() (*auth.Policy, error) {
	return auth.NewPolicy(c.Auth.Peers, c.Auth.APIKeys)
}

// SplitHostPort parses host:port with a numeric port 0..65535.
func SplitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("%q: port must be a number 0..65535", addr)
	}
	return host, n, nil
}

// StaticChanges lists the static keys whose values differ between two
// configs: they need a restart; a reload keeps the running values.
func StaticChanges(old, new *Config) []string {
	var out []string
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(new).Elem()
	walkKeys(func(l leaf) {
		if !l.dynamic && !reflect.DeepEqual(ov.FieldByIndex(l.index).Interface(), nv.FieldByIndex(l.index).Interface()) {
			out = append(out, l.key)
		}
	})
	return out
}

// ApplyDynamic returns running with the dynamic settings of next: what a
// reload applies. Static settings keep their running values.
func ApplyDynamic(running, next *Config) *Config {
	out := *running
	ov, nv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(next).Elem()
	walkKeys(func(l leaf) {
		if l.dynamic {
			ov.FieldByIndex(l.index).Set(nv.FieldByIndex(l.index))
		}
	})
	// [plugins.<name>] tables are dynamic: settings, grants, pins, disabled.
	out.Plugins.Entries, out.Plugins.parsed = next.Plugins.Entries, next.Plugins.parsed
	return &out
}

// Docs lists every key with its description and whether a reload applies
// it, for `alknet config docs`.
func Docs() []KeyDoc {
	var out []KeyDoc
	defaults := viper.New()
	Defaults(defaults)
	walkKeys(func(l leaf) {
		d := KeyDoc{Key: l.key, Doc: l.field.Tag.Get("doc"), Dynamic: l.dynamic, Type: typeName(l.field.Type)}
		if defaults.IsSet(l.key) {
			d.Default = fmt.Sprint(defaults.Get(l.key))
			// Only keys with a default are read from the environment
			// (NewViper); no setting is a secret (docs/architecture.md D8).
			d.Env = EnvVar(l.key)
		}
		out = append(out, d)
	})
	out = append(out,
		KeyDoc{Key: "plugins.<name>.version", Type: "string", Dynamic: true, Doc: "pin this plugin's version (else `alknet plugin use`, else the highest installed)"},
		KeyDoc{Key: "plugins.<name>.settings", Type: "table", Dynamic: true, Doc: "the plugin's own settings (a table; see the plugin's README); keys may also sit directly under [plugins.<name>]"},
		KeyDoc{Key: "plugins.<name>.capabilities", Type: "table", Dynamic: true, Doc: "grants: name = \"vault:ed25519:<path>\" | \"credential:<name>\" | \"file:<path>\""},
		KeyDoc{Key: "plugins.<name>.disabled", Type: "bool", Dynamic: true, Default: "false", Doc: "do not run this plugin"},
		KeyDoc{Key: "plugins.<name>.limits.memory", Type: "size", Dynamic: true, Default: "1GiB",
			Doc: "memory the plugin may use (bytes, or e.g. \"512MiB\"); over it the plugin is killed and restarted as a crash. cgroup memory limit, else RLIMIT_DATA of it plus 256MiB (the Go runtime reserves address space it does not use). " + limitsReload},
		KeyDoc{Key: "plugins.<name>.limits.open_files", Type: "integer", Dynamic: true, Default: fmt.Sprint(DefaultPluginOpenFiles),
			Doc: "open files and sockets of the plugin (RLIMIT_NOFILE). " + limitsReload},
		KeyDoc{Key: "plugins.<name>.limits.processes", Type: "integer", Dynamic: true, Default: fmt.Sprint(DefaultPluginProcesses),
			Doc: "processes and threads of the plugin (cgroup pids limit; else RLIMIT_NPROC when plugins.user is set). " + limitsReload},
		KeyDoc{Key: "plugins.<name>.limits.cpu", Type: "float", Dynamic: true, Default: "1.0",
			Doc: "CPU quota as a fraction of one CPU (e.g. 0.5, 2); the plugin is throttled to it (cgroup cpu controller; not enforced without one), and its GOMAXPROCS is the quota rounded up. " + limitsReload},
	)
	return out
}

// limitsReload is how a reload applies [plugins.<name>.limits].
const limitsReload = "Limits apply at the plugin's launch; a reload that changes them restarts the plugin without downtime"

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "array of tables"
	case t.Kind() == reflect.Slice:
		return "list of " + typeName(t.Elem())
	case t.Kind() == reflect.Int:
		return "integer"
	}
	return t.Kind().String()
}

// KeyDoc is one documented key.
type KeyDoc struct {
	Key, Doc, Type, Default string
	// Env is the environment variable that sets the key ("" if none).
	Env string
	// Dynamic: a reload (SIGHUP) applies it; otherwise a restart does.
	Dynamic bool
}

// Dynamic reports whether a reload applies key.
func Dynamic(key string) bool {
	for _, d := range Docs() {
		if d.Key == key {
			return d.Dynamic
		}
	}
	return strings.HasPrefix(key, "plugins.")
}
