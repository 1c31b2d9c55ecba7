// Package sftp is the SFTP plugin (docs/spec/handlers.md §SFTP): SFTP v3 on
// the alknet/sftp ALPN — one stream, one session — for stock clients
// (`sftp -D 'alknet pipe …'`), and through the SSH plugin's sftp subsystem
// (OpenSSH sftp, sshfs), which reaches the same handler.
//
// Each session sees the caller's own root, <root>/<identity>/, at / and
// every shared root its identity is granted (resources{"sftp-root": [name]})
// at /<name>; all of it through os.Root, so no path leaves a root. Scopes:
// sftp:read reads files, sftp:write changes the tree; listing needs either.
// pkg/sftp's request server does the protocol; a packet shim in front of it
// adds the OpenSSH extensions it lacks (shim.go).
package sftp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/sdk"
)

// Version of the plugin (-ldflags "-X alknet.dev/alknet/plugins/sftp.Version=…").
var Version = "0.1.0"

// Names the plugin serves and checks.
const (
	ALPN         = "alknet/sftp"
	ScopeRead    = "sftp:read"
	ScopeWrite   = "sftp:write"
	ResourceRoot = "sftp-root" // resources{"sftp-root": ["team", …]}: shared roots granted by name
	OpUsage      = "sftp/usage"
)

// Settings are the keys of [plugins.sftp] (README.md lists them).
type Settings struct {
	// Root holds one directory per identity (default: the plugin's state
	// directory, <data>/sftp).
	Root string `json:"root,omitempty"`
	// QuotaBytes and QuotaFiles bound what each identity stores in its
	// own root (0: no limit).
	QuotaBytes sdk.ByteSize `json:"quota_bytes,omitempty"`
	QuotaFiles int64        `json:"quota_files,omitempty"`
	// Quotas override the defaults for single identities.
	Quotas []Quota `json:"quotas,omitempty"`
	// SharedRoots are directories granted by name through
	// resources{"sftp-root": [name]}: name → absolute path.
	SharedRoots map[string]string `json:"shared_roots,omitempty"`
	// MaxOpenHandles bounds the files and directories one session holds
	// open (default 256).
	MaxOpenHandles int `json:"max_open_handles,omitempty"`
}

// Quota is one identity's limits.
type Quota struct {
	Identity string       `json:"identity"`
	Bytes    sdk.ByteSize `json:"bytes,omitempty"`
	Files    int64        `json:"files,omitempty"`
}

type config struct {
	root    string
	quota   Quota            // defaults
	quotas  map[string]Quota // per identity
	shared  map[string]string
	handles int
}

var sharedName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func parseSettings(raw json.RawMessage, stateDir string) (*config, error) {
	var s Settings
	if err := sdk.DecodeSettings("sftp", raw, &s); err != nil {
		return nil, err
	}
	c := &config{root: s.Root, quota: Quota{Bytes: s.QuotaBytes, Files: s.QuotaFiles}, quotas: map[string]Quota{},
		shared: map[string]string{}, handles: s.MaxOpenHandles}
	if c.root == "" {
		c.root = stateDir
	}
	if c.root != "" && !filepath.IsAbs(c.root) {
		return nil, fmt.Errorf("sftp settings: root %q must be an absolute path", c.root)
	}
	if s.QuotaFiles < 0 {
		return nil, errors.New("sftp settings: quota_files must not be negative")
	}
	for _, q := range s.Quotas {
		if q.Identity == "" {
			return nil, errors.New("sftp settings: every entry of quotas needs an identity")
		}
		if _, dup := c.quotas[q.Identity]; dup {
			return nil, fmt.Errorf("sftp settings: quotas lists identity %q twice", q.Identity)
		}
		if q.Files < 0 {
			return nil, fmt.Errorf("sftp settings: quotas for %q: files must not be negative", q.Identity)
		}
		c.quotas[q.Identity] = q
	}
	for name, dir := range s.SharedRoots {
		if !sharedName.MatchString(name) {
			return nil, fmt.Errorf("sftp settings: shared_roots name %q: use letters, digits, '.', '_' and '-' (it is a directory name in /)", name)
		}
		if !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("sftp settings: shared_roots.%s = %q must be an absolute path", name, dir)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("sftp settings: shared_roots.%s = %q is not a directory", name, dir)
		}
		c.shared[name] = dir
	}
	if c.handles < 0 || c.handles > 65536 {
		return nil, errors.New("sftp settings: max_open_handles must be between 1 and 65536")
	}
	if c.handles == 0 {
		c.handles = defaultHandles
	}
	return c, nil
}

func (c *config) quotaFor(id string) Quota {
	if q, ok := c.quotas[id]; ok {
		return q
	}
	return c.quota
}

// Plugin is the SFTP plugin.
type Plugin struct {
	cfg      atomic.Pointer[config]
	stateDir string

	mu     sync.Mutex
	usages map[string]*usage // identity → its usage, measured on first use
}

var (
	_ sdk.ConnServer        = (*Plugin)(nil)
	_ sdk.OperationSet      = (*Plugin)(nil)
	_ sdk.Configurer        = (*Plugin)(nil)
	_ sdk.SettingsValidator = (*Plugin)(nil)
)

// Info describes the plugin.
func (p *Plugin) Info() sdk.Info {
	return sdk.Info{Name: "sftp", Version: Version, ALPNs: []string{ALPN},
		Description:  "SFTP for stock clients (sftp, sshfs): a root per identity, shared roots, quotas",
		ConfigSchema: json.RawMessage(configSchema)}
}

const configSchema = `{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "root": {"type": "string", "description": "absolute directory holding one root per identity (default: <data>/sftp)"},
    "quota_bytes": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}], "default": 0, "description": "bytes each identity may store in its own root (\"10GiB\"; 0: no limit)"},
    "quota_files": {"type": "integer", "minimum": 0, "default": 0, "description": "files each identity may store in its own root (0: no limit)"},
    "quotas": {"type": "array", "items": {"type": "object", "required": ["identity"], "additionalProperties": false,
      "properties": {"identity": {"type": "string"}, "bytes": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}, "files": {"type": "integer", "minimum": 0}}}},
    "shared_roots": {"type": "object", "additionalProperties": {"type": "string"}, "description": "name -> absolute directory, granted through resources {\"sftp-root\": [name]} and seen at /<name>"},
    "max_open_handles": {"type": "integer", "minimum": 1, "maximum": 65536, "default": 256, "description": "files and directories one session may hold open"}
  }
}`

// ValidateSettings checks settings as Configure would.
func (p *Plugin) ValidateSettings(settings json.RawMessage) error {
	_, err := parseSettings(settings, "/")
	return err
}

// Configure applies settings at start and on every reload (new sessions
// use them).
func (p *Plugin) Configure(_ context.Context, settings json.RawMessage, host *sdk.Host) error {
	cfg, err := parseSettings(settings, host.StateDir())
	if err != nil {
		return err
	}
	if cfg.root == "" {
		return errors.New("sftp: no root directory: set root in [plugins.sftp] (the node gave the plugin no state directory)")
	}
	if err := os.MkdirAll(cfg.root, 0o700); err != nil {
		return fmt.Errorf("sftp: create the root directory: %w", err)
	}
	p.mu.Lock()
	if p.usages == nil {
		p.usages = map[string]*usage{}
	}
	if old := p.cfg.Load(); old != nil && old.root != cfg.root {
		p.usages = map[string]*usage{} // another tree: measure again
	}
	for id, u := range p.usages {
		q := cfg.quotaFor(id)
		u.mu.Lock()
		u.bytesLimit, u.filesLimit = int64(q.Bytes), q.Files
		u.mu.Unlock()
	}
	p.mu.Unlock()
	p.cfg.Store(cfg)
	return nil
}

// homeName is the directory name of an identity's root: the id itself
// when it is a plain name, else a digest of it (ids may hold any text).
func homeName(id string) string {
	if sharedName.MatchString(id) && len(id) <= 64 {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "id-" + hex.EncodeToString(sum[:16])
}

// usageFor returns id's usage, measuring its root on first use.
func (p *Plugin) usageFor(cfg *config, id string, root *os.Root) (*usage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u, ok := p.usages[id]; ok {
		return u, nil
	}
	b, f, err := measure(root)
	if err != nil {
		return nil, fmt.Errorf("measure the root of %s: %w", id, err)
	}
	q := cfg.quotaFor(id)
	u := &usage{bytesLimit: int64(q.Bytes), filesLimit: q.Files, bytes: b, files: f}
	p.usages[id] = u
	return u, nil
}

// open builds the namespace a session of identity id sees.
func (p *Plugin) open(id *sdk.Identity) (*namespace, error) {
	cfg := p.cfg.Load()
	if cfg == nil {
		return nil, errors.New("not configured")
	}
	home := filepath.Join(cfg.root, homeName(id.ID))
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("create the root of %s: %w", id.ID, err)
	}
	root, err := os.OpenRoot(home)
	if err != nil {
		return nil, err
	}
	u, err := p.usageFor(cfg, id.ID, root)
	if err != nil {
		_ = root.Close()
		return nil, err
	}
	n := &namespace{home: &mount{dir: home, root: root, usage: u}, shared: map[string]*mount{},
		read: id.HasScope(ScopeRead), write: id.HasScope(ScopeWrite)}
	for _, name := range id.Resources[ResourceRoot] {
		dir, ok := cfg.shared[name]
		if !ok {
			continue
		}
		r, err := os.OpenRoot(dir)
		if err != nil {
			n.close()
			return nil, fmt.Errorf("open shared root %s (%s): %w", name, dir, err)
		}
		n.shared[name] = &mount{name: name, dir: dir, root: r}
	}
	return n, nil
}

func (p *Plugin) log() hclog.Logger { return sdk.Logger() }

// ServeConn serves an alknet/sftp connection: each stream is one session.
// Callers without sftp:read or sftp:write (anonymous ones included) get
// nothing: the connection is closed before any SFTP byte.
func (p *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	a := c.Auth()
	id := a.Identity
	if id == nil || (!id.HasScope(ScopeRead) && !id.HasScope(ScopeWrite)) {
		who := "anonymous caller"
		if id != nil {
			who = id.ID
		}
		p.log().Info("sftp refused", "identity", who, "remote_addr", a.RemoteAddr, "reason", "needs scope "+ScopeRead+" or "+ScopeWrite)
		return c.Close(1, "sftp needs scope "+ScopeRead+" or "+ScopeWrite)
	}
	c.EachStream(ctx, func(s *sdk.Stream) { p.session(id, a, s) })
	return nil
}

// session runs one SFTP session on s and logs it once at its end.
func (p *Plugin) session(id *sdk.Identity, a sdk.Auth, s *sdk.Stream) {
	start := time.Now()
	n, err := p.open(id)
	if err != nil {
		p.log().Error("sftp session not started", "identity", id.ID, "error", err)
		s.CancelWrite(1)
		_ = s.Close()
		return
	}
	defer n.close()
	n.overQuota = func(err error) {
		p.log().Info("sftp write refused", "identity", id.ID, "remote_addr", a.RemoteAddr, "reason", err.Error())
	}
	sh := newShim(s, handlers{n}, p.cfg.Load().handles)
	err = sh.serve()
	fields := []any{"identity", id.ID, "remote_addr", a.RemoteAddr, "transport", a.Transport,
		"bytes_read", n.bytesRead.Load(), "bytes_written", n.bytesWritten.Load(),
		"files_read", n.filesRead.Load(), "files_written", n.filesWritten.Load(),
		"duration", time.Since(start).Round(time.Millisecond).String()}
	var bad *errPacket
	switch {
	case errors.As(err, &bad):
		p.log().Warn("sftp session ended: bad packet", append(fields, "error", err)...)
		s.CancelWrite(2)
	case err != nil:
		p.log().Info("sftp session ended", append(fields, "error", err)...)
		s.CancelWrite(1)
	default:
		p.log().Info("sftp session ended", fields...)
	}
	_ = s.Close()
}

// UsageInput is the input of sftp/usage.
type UsageInput struct {
	// Identity whose usage to report (admin only; default: the caller).
	Identity string `json:"identity,omitempty"`
}

// Usage is what an identity stores against its quota.
type Usage struct {
	Identity   string `json:"identity"`
	Bytes      int64  `json:"bytes"`
	Files      int64  `json:"files"`
	QuotaBytes int64  `json:"quota_bytes"` // 0: no limit
	QuotaFiles int64  `json:"quota_files"`
}

// Operations: sftp/usage.
func (p *Plugin) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Query(OpUsage, p.usage).RemoteSafe().RequireAnyScope(ScopeRead, ScopeWrite, "admin").
			Describe("bytes and files the caller (or, for admin, any identity) stores in its SFTP root, and its quota"),
	}
}

func (p *Plugin) usage(_ context.Context, c *sdk.Call, in UsageInput) (Usage, error) {
	who := c.Identity.ID
	if in.Identity != "" && in.Identity != who {
		if !c.Identity.HasScope("admin") {
			return Usage{}, sdk.Errorf(sdk.CodeForbidden, "only admin may read another identity's usage")
		}
		who = in.Identity
	}
	cfg := p.cfg.Load()
	if cfg == nil {
		return Usage{}, sdk.Errorf(sdk.CodeInternal, "not configured")
	}
	q := cfg.quotaFor(who)
	out := Usage{Identity: who, QuotaBytes: int64(q.Bytes), QuotaFiles: q.Files}
	p.mu.Lock()
	u := p.usages[who]
	p.mu.Unlock()
	if u == nil {
		home := filepath.Join(cfg.root, homeName(who))
		root, err := os.OpenRoot(home)
		if errors.Is(err, os.ErrNotExist) {
			return out, nil // never connected: nothing stored
		}
		if err != nil {
			return Usage{}, sdk.Errorf(sdk.CodeInternal, "open the root of %s: %v", who, err)
		}
		defer root.Close()
		if u, err = p.usageFor(cfg, who, root); err != nil {
			return Usage{}, sdk.Errorf(sdk.CodeInternal, "%v", err)
		}
	}
	out.Bytes, out.Files = u.snapshot()
	return out, nil
}
