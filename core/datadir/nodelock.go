package datadir

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gofrs/flock"

	"alknet.dev/alknet/core/atomicfile"
)

// NodeLockName is the file a serving node keeps locked (flock) for as long
// as it runs, with its pid written in it (docs/spec/identity.md §6). The
// lock, not the file's content, says whether a node runs: the kernel drops
// it when the node exits, even by kill -9, while the pid stays behind.
const NodeLockName = "alknet.lock"

// NodeLockPath is <data>/alknet.lock.
func (d Dir) NodeLockPath() string { return filepath.Join(d.Path, NodeLockName) }

// probeGrace is how long LockNode retries before it calls the directory
// taken: RunningNode takes a shared lock for an instant to look, and a
// look must not be mistaken for a node.
const probeGrace = time.Second

// pidWait bounds how long RunningNode waits for a node that has just taken
// the lock to write its pid, where the kernel does not name the holder.
const pidWait = 2 * time.Second

// InUseError is LockNode's refusal: another node serves the directory.
type InUseError struct {
	Dir string
	// PID is the serving node's pid, 0 if it is not known.
	PID int
}

func (e *InUseError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("data directory %s is in use by the node with pid %d; stop that node first (kill %d) or give this one another --data-dir", e.Dir, e.PID, e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by another node (its pid is not visible from here; `fuser -v %s` shows it); stop that node first or give this one another --data-dir", e.Dir, filepath.Join(e.Dir, NodeLockName))
}

// NodeLock is a data directory held by the node serving from it.
type NodeLock struct {
	fl   *flock.Flock
	path string
}

// LockNode takes the data directory for a node that serves from it, or
// returns an *InUseError naming the pid of the node that already does: two
// nodes on one directory would each rewrite the other's lock.json,
// state.json and plugin sockets. The lock is held until Release, or until
// the process exits however it exits.
func (d Dir) LockNode() (*NodeLock, error) {
	path := d.NodeLockPath()
	fl := flock.New(path, flock.SetFlag(os.O_CREATE|os.O_RDWR), flock.SetPermissions(0o600))
	ctx, cancel := context.WithTimeout(context.Background(), probeGrace)
	defer cancel()
	ok, err := fl.TryLockContext(ctx, 10*time.Millisecond)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("lock data directory %s: %w", d.Path, err)
	}
	if !ok {
		pid, _ := d.RunningNode()
		return nil, &InUseError{Dir: d.Path, PID: pid}
	}
	// Written in place, never replaced: a new file would be a new, unlocked
	// lock. WriteAt then Truncate: a reader sees the new pid or the old
	// one, and its first line is always one whole pid.
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt(pid, 0)
		if err == nil {
			err = f.Truncate(int64(len(pid)))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		_ = fl.Unlock()
		return nil, fmt.Errorf("record this node's pid in %s: %w", path, err)
	}
	return &NodeLock{fl: fl, path: path}, nil
}

// Release clears the pid and releases the data directory.
func (l *NodeLock) Release() error {
	_ = os.Truncate(l.path, 0)
	return l.fl.Unlock()
}

// RunningNode reports whether a node serves from d and its pid (0 if the
// node runs but its pid is not visible, e.g. from another pid namespace).
// A node runs exactly when the data directory's lock is held, whatever the
// file says: the pid of a node killed with -9 stays in the file and may
// since belong to an unrelated process, which must never get its signals.
func (d Dir) RunningNode() (pid int, running bool) {
	path := d.NodeLockPath()
	if _, err := os.Stat(path); err != nil {
		return 0, false
	}
	deadline := time.Now().Add(pidWait)
	for {
		// Shared, so that several commands may look at once; a starting
		// node retries for probeGrace rather than mistake a look for a node.
		fl := flock.New(path, flock.SetFlag(os.O_RDONLY))
		free, err := fl.TryRLock()
		if err != nil {
			return 0, false
		}
		if free {
			_ = fl.Unlock()
			return 0, false
		}
		// The kernel's answer is exact, even in the instant between a new
		// node taking the lock and writing its pid over a killed node's.
		if pid, known := lockHolder(path); known {
			return pid, true
		}
		if pid := readPID(path); pid > 0 {
			return pid, true
		}
		// Held, and no pid yet: the node has just started.
		if time.Now().After(deadline) {
			return 0, true
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readPID reads the first line of the lock file as a pid (0 if none).
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, err := strconv.Atoi(string(line))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// RemoveLeftovers removes what writers killed half-way left in the data
// directory itself (temporary files of vault.json, credentials.json,
// auth.json, ssh_known_hosts — a vault temporary file may hold the seed in
// clear) and returns the paths removed. Files a live process is writing
// are left alone, so any command may call it while a node runs.
func (d Dir) RemoveLeftovers() ([]string, error) {
	return atomicfile.RemoveLeftovers(d.Path)
}

// ReloadName is the file in which a serving node records the outcome of
// its last reload, so that the command that asked for it (SIGHUP) can wait
// for the change to apply and report a rejection (docs/spec/identity.md
// §6): the signal itself carries no answer.
const ReloadName = "node.reload"

// ReloadPath is <data>/node.reload.
func (d Dir) ReloadPath() string { return filepath.Join(d.Path, ReloadName) }

// Reload is one reload as the node recorded it.
type Reload struct {
	// Started is when the node took the signal, before it read any file:
	// every change written before the signal was sent is in this reload
	// when Started is not before the sending.
	Started time.Time
	// Result is "ok", or what was not applied and why.
	Result string
}

// RecordReload writes the outcome of the reload the node started at
// started (result "ok", else what went wrong), replacing the last one.
func (d Dir) RecordReload(started time.Time, result string) error {
	line := strconv.FormatInt(started.UnixNano(), 10) + " " + strings.ReplaceAll(result, "\n", " ") + "\n"
	return atomicfile.WriteFile(d.ReloadPath(), []byte(line))
}

// LastReload reads the node's last recorded reload (ok false: none, or
// the file is unreadable).
func (d Dir) LastReload() (r Reload, ok bool) {
	b, err := os.ReadFile(d.ReloadPath())
	if err != nil {
		return Reload{}, false
	}
	ts, result, found := strings.Cut(strings.TrimSuffix(string(b), "\n"), " ")
	ns, err := strconv.ParseInt(ts, 10, 64)
	if !found || err != nil {
		return Reload{}, false
	}
	return Reload{Started: time.Unix(0, ns), Result: result}, true
}

// WaitReload waits until the node records a reload it started at or
// after since, polling the record (a signal's outcome has no other way
// back to its sender), for at most timeout.
func (d Dir) WaitReload(since time.Time, timeout time.Duration) (Reload, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if r, ok := d.LastReload(); ok && !r.Started.Before(since) {
			return r, true
		}
		if time.Now().After(deadline) {
			return Reload{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
