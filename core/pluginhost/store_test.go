package pluginhost

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Ten `alknet plugin restart echo` at once, each its own process (here
// its own Store): every restart is counted.
func TestStoreUpdateFromSeparateStoresLosesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plugins")
	if err := ensureDir(dir); err != nil {
		t.Fatal(err)
	}
	err := OpenStore(dir).Update(func(l *Lock) error {
		l.Plugins["echo"] = &Locked{Versions: map[string]*Installed{"0.1.0": {Name: "echo", Version: "0.1.0"}}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := OpenStore(dir).Update(func(l *Lock) error { l.Plugins["echo"].RestartGeneration++; return nil }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	l, err := OpenStore(dir).Load()
	if err != nil {
		t.Fatal(err)
	}
	if g := l.Plugins["echo"].RestartGeneration; g != n {
		t.Fatalf("restart generation %d after %d restarts", g, n)
	}
}

// What a killed `alknet plugin install` leaves — a staging directory with
// the candidate, a temporary lock.json — is removed; the store is not.
func TestStoreRemoveLeftovers(t *testing.T) {
	s := OpenStore(filepath.Join(t.TempDir(), "plugins"))
	stage := filepath.Join(s.Dir(), stagingDir, ".install.tmp-123")
	if err := os.MkdirAll(stage, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stage, "candidate"), []byte("binary"), 0o700); err != nil {
		t.Fatal(err)
	}
	// Named as this version names staging, and as earlier ones did.
	older := filepath.Join(s.Dir(), stagingDir, "install-123")
	if err := os.MkdirAll(older, 0o700); err != nil {
		t.Fatal(err)
	}
	tmpLock := filepath.Join(s.Dir(), ".lock.json.tmp-9")
	if err := os.WriteFile(tmpLock, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(*Lock) error { return nil }); err != nil {
		t.Fatal(err)
	}
	removed, err := s.RemoveLeftovers()
	if err != nil || len(removed) != 3 {
		t.Fatalf("removed %v, %v", removed, err)
	}
	for _, p := range []string{stage, older, tmpLock} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is still there", p)
		}
	}
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
}
