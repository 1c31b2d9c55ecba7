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
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// SupportedProtocols are the core↔plugin protocol versions this core speaks.
var SupportedProtocols = []int{pluginrpc.ProtocolVersion}

// Installed is one installed plugin version, as recorded in lock.json.
type Installed struct {
	Name             string    `json:"name"`
	Version          string    `json:"version"`
	SHA256           string    `json:"sha256"`
	ProtocolVersions []int     `json:"protocol_versions"`
	ALPNs            []string  `json:"alpns"`
	Namespaces       []string  `json:"namespaces,omitempty"`
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
	// Removed records what `alknet plugin remove` removed, "name@version"
	// or "name" (every version), so that the node does not install it
	// again from the plugins bundled beside it; installing it by hand
	// clears the record (docs/spec/plugins.md §7).
	Removed []string `json:"removed,omitempty"`
}

// MarkRemoved records that version of plugin name ("" for every version)
// was removed on purpose.
func (l *Lock) MarkRemoved(name, version string) {
	l.Removed = slices.DeleteFunc(l.Removed, func(r string) bool {
		return r == name || (version == "" && strings.HasPrefix(r, name+"@"))
	})
	if version == "" {
		l.Removed = append(l.Removed, name)
	} else {
		l.Removed = append(l.Removed, name+"@"+version)
	}
	slices.Sort(l.Removed)
}

// IsRemoved reports whether version of plugin name was removed on purpose.
func (l *Lock) IsRemoved(name, version string) bool {
	return slices.Contains(l.Removed, name) || slices.Contains(l.Removed, name+"@"+version)
}

// clearRemoved forgets the removal of plugin name: it is installed again.
func (l *Lock) clearRemoved(name string) {
	l.Removed = slices.DeleteFunc(l.Removed, func(r string) bool { return r == name || strings.HasPrefix(r, name+"@") })
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

// Update applies f to the lock file and saves it, holding the store's
// mutex and the file lock (lock.json.lock, atomicfile.Lock) from the read
// to the write, so that concurrent `alknet plugin` commands and a node
// installing its bundled plugins each build on the other's result. An
// error from f leaves the file as it was.
func (s *Store) Update(f func(*Lock) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := atomicfile.Lock(s.lockPath())
	if err != nil {
		return err
	}
	defer unlock()
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
func Describe(ctx context.Context, binary string) (*pluginpb.Manifest, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "describe")
	cmd.Env = minimalEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limitedWriter{w: &out, n: maxManifest + 1}, &limitedWriter{w: &errb, n: 4 << 10}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s describe: %w: %s", binary, err, strings.TrimSpace(errb.String()))
	}
	m, err := ParseManifest(out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s describe: %w", binary, err)
	}
	return m, nil
}

// limitedWriter keeps the first n bytes and discards the rest.
type limitedWriter struct {
	w *bytes.Buffer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if room := l.n - l.w.Len(); room > 0 {
		l.w.Write(p[:min(len(p), room)])
	}
	return len(p), nil
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
	// Force replaces an installed version whose binary differs; the
	// plugin's restart generation is bumped so a running node switches to
	// it with zero downtime.
	Force bool
	// Bundled installs a plugin found beside the alknet binary: one that
	// `alknet plugin remove` removed stays removed (ErrRemoved). Any other
	// install clears that record.
	Bundled bool
}

// ErrRemoved is returned by a Bundled install of a plugin version that
// was removed on purpose (Lock.IsRemoved); nothing was changed.
var ErrRemoved = errors.New("removed with `alknet plugin remove`")

// ErrAlreadyInstalled is returned by Install for the very binary that is
// installed already (nothing was changed).
var ErrAlreadyInstalled = errors.New("already installed")

// Install verifies, describes and copies a plugin binary into the store
// (docs/spec/plugins.md §7, §9). The candidate is first copied into a
// private staging directory — opened without following a symlink — and
// only that copy is hashed, checked (digest, signature), run for
// `describe` and finally moved into place: what was checked is what runs,
// whatever happens to src meanwhile. A failure leaves nothing behind.
func (s *Store) Install(ctx context.Context, src, source string, o InstallOptions) (*Installed, error) {
	if err := ensureDir(s.dir); err != nil {
		return nil, err
	}
	stageRoot := filepath.Join(s.dir, stagingDir)
	if err := ensureDir(stageRoot); err != nil {
		return nil, err
	}
	// Locked while this process lives: RemoveLeftovers clears it only
	// after a kill -9 left it behind.
	stage, release, err := atomicfile.MkdirTemp(stageRoot, "install")
	if err != nil {
		return nil, fmt.Errorf("install %s: %w", src, err)
	}
	defer release()
	staged := filepath.Join(stage, "candidate")
	sum, err := stageCopy(src, staged)
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
	m, err := Describe(ctx, staged)
	if err != nil {
		return nil, fmt.Errorf("install %s: %w", src, err)
	}
	if _, ok := Speaks(m, SupportedProtocols); !ok {
		return nil, fmt.Errorf("install %s: plugin %s %s speaks core protocol %v; this alknet speaks %v — install a plugin version built for this core", src, m.Name, m.Version, m.ProtocolVersions, SupportedProtocols)
	}
	ops := make([]string, 0, len(m.Operations))
	for _, op := range m.Operations {
		ops = append(ops, op.Name)
	}
	protos := make([]int, len(m.ProtocolVersions))
	for i, v := range m.ProtocolVersions {
		protos[i] = int(v)
	}
	inst := &Installed{Name: m.Name, Version: m.Version, SHA256: sum, ProtocolVersions: protos, ALPNs: m.Alpns, Namespaces: m.Namespaces,
		Operations: ops, Source: source, InstalledAt: time.Now().UTC().Truncate(time.Second), Signer: signer}
	err = s.Update(func(l *Lock) error {
		if o.Bundled && l.IsRemoved(m.Name, m.Version) {
			return ErrRemoved
		}
		if err := l.conflicts(inst); err != nil {
			return err
		}
		if !o.Bundled {
			l.clearRemoved(m.Name)
		}
		lp := l.Plugins[m.Name]
		if lp == nil {
			lp = &Locked{Versions: map[string]*Installed{}}
			l.Plugins[m.Name] = lp
		}
		if old, ok := lp.Versions[m.Version]; ok {
			if old.SHA256 == sum {
				return ErrAlreadyInstalled
			}
			if !o.Force {
				return fmt.Errorf("%s %s is already installed with another binary (sha256 %s, this one %s); install it with --force to replace it (a running node switches to it without dropping connections), or give the new build another version", m.Name, m.Version, old.SHA256[:12], sum[:12])
			}
			lp.RestartGeneration++
		}
		vdir := filepath.Join(s.dir, m.Name, m.Version)
		if err := ensureDir(filepath.Join(s.dir, m.Name)); err != nil {
			return err
		}
		if err := ensureDir(vdir); err != nil {
			return err
		}
		// Same file system: the rename is atomic, and the checked copy is
		// the file that runs.
		if err := os.Rename(staged, s.BinaryPath(m.Name, m.Version)); err != nil {
			return err
		}
		lp.Versions[m.Version] = inst
		return nil
	})
	if errors.Is(err, ErrAlreadyInstalled) || errors.Is(err, ErrRemoved) {
		return inst, err
	}
	if err != nil {
		return nil, fmt.Errorf("install %s: %w", src, err)
	}
	return inst, nil
}

// stagingDir holds install candidates while they are checked.
const stagingDir = ".staging"

// RemoveLeftovers removes what interrupted commands left in the store:
// temporary files of lock.json and state.json, and install staging
// directories whose process is gone. It returns the paths removed.
func (s *Store) RemoveLeftovers() ([]string, error) {
	removed, err := atomicfile.RemoveLeftovers(s.dir)
	more, err2 := atomicfile.RemoveAbandoned(filepath.Join(s.dir, stagingDir))
	return append(removed, more...), errors.Join(err, err2)
}

// conflicts refuses a version whose ALPNs or namespaces another installed
// plugin claims, naming both owners (docs/architecture.md D15).
func (l *Lock) conflicts(inst *Installed) error {
	for _, name := range l.Names() {
		if name == inst.Name {
			continue
		}
		for _, other := range l.Plugins[name].Versions {
			for _, a := range inst.ALPNs {
				if slices.Contains(other.ALPNs, a) {
					return fmt.Errorf("plugin %s claims ALPN %s, which plugin %s (%s) serves; remove one of them", inst.Name, a, name, other.Version)
				}
			}
			for _, ns := range inst.Namespaces {
				if slices.Contains(other.Namespaces, ns) || (len(other.Namespaces) == 0 && other.Name == ns) {
					return fmt.Errorf("plugin %s claims operation namespace %s, which plugin %s (%s) owns; remove one of them", inst.Name, ns, name, other.Version)
				}
			}
		}
	}
	return nil
}

// stageCopy copies src into dst (a new file, mode 0700) and returns the
// SHA-256 of the bytes written. src is opened without following a
// symlink and must be a regular file.
func stageCopy(src, dst string) (string, error) {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return "", fmt.Errorf("it is a symbolic link; give the path of the file itself (readlink -f %s)", src)
		}
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o700)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
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
// go-plugin's handshake variables (docs/spec/plugins.md §2).
func minimalEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}
