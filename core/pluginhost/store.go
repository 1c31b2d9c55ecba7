package pluginhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"alknet.dev/alknet/core/atomicfile"
)

// SupportedProtocols are the core↔plugin protocol versions this core speaks.
var SupportedProtocols = []int{1}

// Installed is one installed plugin version, as recorded in lock.json.
type Installed struct {
	Name             string    `json:"name"`
	Version          string    `json:"version"`
	SHA256           string    `json:"sha256"`
	ProtocolVersions []int     `json:"protocol_versions"`
	ALPNs            []string  `json:"alpns"`
	Operations       []string  `json:"operations"`
	Source           string    `json:"source"`
	InstalledAt      time.Time `json:"installed_at"`
	Signer           string    `json:"signer,omitempty"`
}

// Locked is everything recorded about one plugin.
type Locked struct {
	// Active is the version chosen with `alknet plugin use` (empty: the
	// config's pin, else the highest installed).
	Active string `json:"active,omitempty"`
	// RestartGeneration is bumped by `alknet plugin restart`.
	RestartGeneration int                   `json:"restart_generation,omitempty"`
	Versions          map[string]*Installed `json:"versions"`
}

// Lock is <data>/plugins/lock.json.
type Lock struct {
	Format  int                `json:"format"`
	Plugins map[string]*Locked `json:"plugins"`
}

// Store manages installed plugins under <data>/plugins.
type Store struct {
	dir string
	mu  sync.Mutex
}

// OpenStore returns the store rooted at dir (<data>/plugins).
func OpenStore(dir string) *Store { return &Store{dir: dir} }

// Dir is the plugins directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) lockPath() string { return filepath.Join(s.dir, "lock.json") }

// BinaryPath is where an installed version's executable lives.
func (s *Store) BinaryPath(name, version string) string {
	return filepath.Join(s.dir, name, version, "alknet-plugin-"+name)
}

// Load reads lock.json (empty if none).
func (s *Store) Load() (*Lock, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load()
}

func (s *Store) load() (*Lock, error) {
	l := &Lock{Format: 1, Plugins: map[string]*Locked{}}
	b, err := os.ReadFile(s.lockPath())
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("%s: %w", s.lockPath(), err)
	}
	if l.Plugins == nil {
		l.Plugins = map[string]*Locked{}
	}
	return l, nil
}

func (s *Store) save(l *Lock) error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.lockPath(), append(b, '\n'))
}

// Update applies f to the lock file under the store's lock.
func (s *Store) Update(f func(*Lock) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.load()
	if err != nil {
		return err
	}
	if err := f(l); err != nil {
		return err
	}
	return s.save(l)
}

// ensureDir makes a directory only the node's user can use (mode 0700)
// and refuses one others can write to.
func ensureDir(path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s has mode %04o and others can write to it; fix it with: chmod 700 %s", path, st.Mode().Perm(), path)
	}
	return nil
}

// FileSHA256 hashes a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Describe runs `<binary> describe` with an empty environment and parses
// the manifest it prints.
func Describe(ctx context.Context, binary string) (*Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "describe")
	cmd.Env = minimalEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s describe: %w: %s", binary, err, strings.TrimSpace(errb.String()))
	}
	m, err := ParseManifest(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s describe: %w", binary, err)
	}
	return m, nil
}

// InstallOptions are the checks an install must pass before the binary is
// executed at all.
type InstallOptions struct {
	// SHA256 is the expected digest (optional).
	SHA256 string
	// Signature is a publisher signature to verify (optional).
	Signature *Signature
	// RequireSignature refuses an unsigned binary.
	RequireSignature bool
	// TrustedPublishers, when not empty, are the only accepted signers.
	TrustedPublishers []string
}

// Install verifies, describes and copies a plugin binary into the store.
// Digest and signature are checked before the binary is executed at all.
func (s *Store) Install(ctx context.Context, src, source string, o InstallOptions) (*Installed, error) {
	sum, err := FileSHA256(src)
	if err != nil {
		return nil, fmt.Errorf("install %s: %w", src, err)
	}
	if o.SHA256 != "" && !strings.EqualFold(o.SHA256, sum) {
		return nil, fmt.Errorf("install %s: sha256 is %s but %s was expected; refusing to run it", src, sum, strings.ToLower(o.SHA256))
	}
	signer := ""
	switch {
	case o.Signature != nil:
		if signer, err = o.Signature.Verify(sum, o.TrustedPublishers); err != nil {
			return nil, fmt.Errorf("install %s: %w; refusing to run it", src, err)
		}
	case o.RequireSignature:
		return nil, fmt.Errorf("install %s: plugins.require_signature is on and no --signature was given; refusing to run it", src)
	}
	m, err := Describe(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("install %s: %w", src, err)
	}
	proto, ok := m.Speaks(SupportedProtocols)
	if !ok {
		return nil, fmt.Errorf("install %s: plugin %s %s speaks core protocol %v; this alknet speaks %v — install a plugin version built for this core", src, m.Name, m.Version, m.ProtocolVersions, SupportedProtocols)
	}
	_ = proto
	if err := ensureDir(s.dir); err != nil {
		return nil, err
	}
	vdir := filepath.Join(s.dir, m.Name, m.Version)
	if err := ensureDir(vdir); err != nil {
		return nil, err
	}
	dst := s.BinaryPath(m.Name, m.Version)
	if err := copyFile(src, dst); err != nil {
		return nil, fmt.Errorf("install %s: %w", src, err)
	}
	if got, err := FileSHA256(dst); err != nil || got != sum {
		return nil, fmt.Errorf("install %s: the copy at %s does not match (%s vs %s)", src, dst, got, sum)
	}
	ops := make([]string, 0, len(m.Operations))
	for _, op := range m.Operations {
		ops = append(ops, op.Name)
	}
	inst := &Installed{Name: m.Name, Version: m.Version, SHA256: sum, ProtocolVersions: m.ProtocolVersions, ALPNs: m.ALPNs,
		Operations: ops, Source: source, InstalledAt: time.Now().UTC().Truncate(time.Second), Signer: signer}
	err = s.Update(func(l *Lock) error {
		lp := l.Plugins[m.Name]
		if lp == nil {
			lp = &Locked{Versions: map[string]*Installed{}}
			l.Plugins[m.Name] = lp
		}
		lp.Versions[m.Version] = inst
		return nil
	})
	return inst, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o700)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Select returns the version to run: pin (config) if given, else the
// lock's active version, else the highest installed.
func (l *Lock) Select(name, pin string) (*Installed, error) {
	lp := l.Plugins[name]
	if lp == nil || len(lp.Versions) == 0 {
		return nil, fmt.Errorf("plugin %s is not installed (alknet plugin install …)", name)
	}
	for _, v := range []string{pin, lp.Active} {
		if v == "" {
			continue
		}
		if inst, ok := lp.Versions[v]; ok {
			return inst, nil
		}
		return nil, fmt.Errorf("plugin %s@%s is not installed (installed: %s)", name, v, strings.Join(lp.SortedVersions(), ", "))
	}
	vs := lp.SortedVersions()
	return lp.Versions[vs[len(vs)-1]], nil
}

// SortedVersions lists installed versions, lowest first.
func (lp *Locked) SortedVersions() []string {
	vs := make([]string, 0, len(lp.Versions))
	for v := range lp.Versions {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return compareSemver(vs[i], vs[j]) < 0 })
	return vs
}

// Names lists installed plugin names, sorted.
func (l *Lock) Names() []string {
	out := make([]string, 0, len(l.Plugins))
	for n, lp := range l.Plugins {
		if len(lp.Versions) > 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// VerifyError is a binary whose digest differs from the lock file.
type VerifyError struct {
	Path, Want, Got string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("plugin binary %s does not match its lock entry: sha256 %s, recorded %s — it was modified after install; reinstall it (alknet plugin install) if the change is yours", e.Path, e.Got, e.Want)
}

// Verify re-hashes an installed binary against its lock entry.
func (s *Store) Verify(inst *Installed) error {
	path := s.BinaryPath(inst.Name, inst.Version)
	got, err := FileSHA256(path)
	if err != nil {
		return fmt.Errorf("verify %s: %w", path, err)
	}
	if got != inst.SHA256 {
		return &VerifyError{Path: path, Want: inst.SHA256, Got: got}
	}
	return nil
}

// minimalEnv is the only environment a plugin process gets besides
// go-plugin's handshake variables (spec/plugins.md §2).
func minimalEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
