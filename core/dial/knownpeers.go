package dial

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/core/identity"
)

// KnownPeers is the client-side `known_peers` file: one `host:port
// fingerprint` per line, like SSH's known_hosts (docs/spec/identity.md §4).
type KnownPeers struct {
	mu   sync.Mutex
	path string
}

// OpenKnownPeers returns the file at path (it may not exist yet).
func OpenKnownPeers(path string) *KnownPeers { return &KnownPeers{path: path} }

// Path is where the file lives.
func (k *KnownPeers) Path() string { return k.path }

// ParseKnownPeers parses the file's bytes. Blank lines and lines starting
// with '#' are ignored; anything else must be `host:port fingerprint`.
// The first entry for an address wins; errors name the line.
func ParseKnownPeers(b []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"host:port fingerprint\"", n)
		}
		if _, _, err := splitAddr(f[0]); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		fp, err := identity.ParseFingerprint(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if _, dup := out[f[0]]; !dup {
			out[f[0]] = fp
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func (k *KnownPeers) load() (map[string]string, error) {
	b, err := os.ReadFile(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := ParseKnownPeers(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.path, err)
	}
	return m, nil
}

// Lookup returns the recorded fingerprint for addr ("" if none).
func (k *KnownPeers) Lookup(addr string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	m, err := k.load()
	if err != nil {
		return "", err
	}
	return m[addr], nil
}

// Add records addr → fp, refusing to replace a different fingerprint. The
// check and the append hold the file's lock (known_peers.lock,
// atomicfile.Lock): two clients trusting the same address at once must not
// both append, each with the fingerprint it saw.
func (k *KnownPeers) Add(addr, fp string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	unlock, err := atomicfile.Lock(k.path)
	if err != nil {
		return err
	}
	defer unlock()
	m, err := k.load()
	if err != nil {
		return err
	}
	if old, ok := m[addr]; ok {
		if old == fp {
			return nil
		}
		return fmt.Errorf("%s is already recorded with %s in %s", addr, old, k.path)
	}
	f, err := os.OpenFile(k.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record known peer: %w", err)
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "%s %s\n", addr, fp); err != nil {
		return fmt.Errorf("record known peer in %s: %w", k.path, err)
	}
	return f.Sync()
}
