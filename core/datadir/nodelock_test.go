package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gofrs/flock"
)

func testDir(t *testing.T) Dir {
	t.Helper()
	d, err := Open(filepath.Join(t.TempDir(), "node"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Ensure(); err != nil {
		t.Fatal(err)
	}
	return d
}

// A second node on the same data directory is refused, naming the first
// one's pid; the lock file holds that pid while the node runs; after it
// stops, another node may start.
func TestLockNodeRefusesSecondNode(t *testing.T) {
	d := testDir(t)
	if pid, running := d.RunningNode(); running {
		t.Fatalf("no node started, yet RunningNode says pid %d", pid)
	}
	first, err := d.LockNode()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(d.NodeLockPath())
	if string(b) != fmt.Sprintf("%d\n", os.Getpid()) {
		t.Fatalf("lock file holds %q, want this pid", b)
	}
	if pid, running := d.RunningNode(); !running || pid != os.Getpid() {
		t.Fatalf("RunningNode: %d %v, want %d true", pid, running, os.Getpid())
	}
	// A second LockNode opens its own descriptor: to flock, another process.
	_, err = d.LockNode()
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(err.Error(), d.Path) {
		t.Fatalf("second node: %v", err)
	}
	if err := first.Release(); err != nil {
		t.Fatal(err)
	}
	if pid, running := d.RunningNode(); running {
		t.Fatalf("node stopped, yet RunningNode says pid %d", pid)
	}
	second, err := d.LockNode()
	if err != nil {
		t.Fatalf("after the first node stopped: %v", err)
	}
	_ = second.Release()
}

// A node killed with -9 leaves its pid in the file, and the pid may be
// reused: what the file says does not matter unless the lock is held.
func TestRunningNodeIgnoresStalePID(t *testing.T) {
	d := testDir(t)
	if err := os.WriteFile(d.NodeLockPath(), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o600); err != nil {
		t.Fatal(err)
	}
	if pid, running := d.RunningNode(); running {
		t.Fatalf("stale pid file, no lock: RunningNode says pid %d", pid)
	}
}

// In the instant between a new node taking the lock and writing its pid,
// the file still holds a killed node's pid; the kernel names the holder.
func TestRunningNodeAsksTheKernelForTheHolder(t *testing.T) {
	d := testDir(t)
	if err := os.WriteFile(d.NodeLockPath(), []byte("999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fl := flock.New(d.NodeLockPath())
	if ok, err := fl.TryLock(); !ok || err != nil {
		t.Fatal(ok, err)
	}
	defer fl.Unlock()
	if _, known := lockHolder(d.NodeLockPath()); !known {
		t.Skip("the kernel does not say who holds a flock here")
	}
	if pid, running := d.RunningNode(); !running || pid != os.Getpid() {
		t.Fatalf("RunningNode: %d %v, want %d (the holder) true", pid, running, os.Getpid())
	}
}

func TestRemoveLeftoversInDataDir(t *testing.T) {
	d := testDir(t)
	tmp := filepath.Join(d.Path, ".vault.json.tmp-1")
	if err := os.WriteFile(tmp, []byte(`{"seed":"…"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	removed, err := d.RemoveLeftovers()
	if err != nil || len(removed) != 1 || removed[0] != tmp {
		t.Fatalf("removed %v, %v", removed, err)
	}
}

// A command waits for the reload its signal started: a record of an
// earlier reload is not taken for it, and the outcome comes back whole.
func TestWaitReloadTakesOnlyALaterReload(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	if _, ok := d.WaitReload(time.Now(), 0); ok {
		t.Fatal("a reload was found where none was recorded")
	}
	earlier := time.Now()
	sent := earlier.Add(time.Millisecond)
	if err := d.RecordReload(earlier, "ok"); err != nil {
		t.Fatal(err)
	}
	if r, ok := d.WaitReload(sent, 30*time.Millisecond); ok {
		t.Fatalf("the reload before the signal was taken for it: %+v", r)
	}
	if err := d.RecordReload(sent, "rejected, the running configuration stays: line 1\nline 2"); err != nil {
		t.Fatal(err)
	}
	r, ok := d.WaitReload(sent, time.Second)
	if !ok || !r.Started.Equal(sent) || r.Result != "rejected, the running configuration stays: line 1 line 2" {
		t.Fatalf("WaitReload = %+v, %v", r, ok)
	}
}
