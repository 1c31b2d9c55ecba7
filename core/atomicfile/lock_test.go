package atomicfile

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// Each goroutine stands for a process: every Lock opens its own
// descriptor, and flock locks on separate descriptors exclude each other
// as they do between processes. Without the lock, read-modify-write
// cycles overwrite each other and increments are lost.
func TestLockSerialisesReadModifyWrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "counter")
	if err := WriteFile(p, []byte("0")); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := Lock(p)
			if err != nil {
				t.Error(err)
				return
			}
			defer unlock()
			b, err := os.ReadFile(p)
			if err != nil {
				t.Error(err)
				return
			}
			v, _ := strconv.Atoi(string(b))
			if err := WriteFile(p, []byte(strconv.Itoa(v+1))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if b, _ := os.ReadFile(p); string(b) != strconv.Itoa(n) {
		t.Fatalf("counter %s after %d locked increments", b, n)
	}
	if st, err := os.Stat(p + LockSuffix); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v", err)
	}
}

func TestLockInMissingDirectoryIsNoOp(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing", "credentials.json")
	unlock, err := Lock(p)
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if _, err := os.Stat(filepath.Dir(p)); err == nil {
		t.Fatal("Lock created the directory")
	}
}
