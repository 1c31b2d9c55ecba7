// Package atomicfile replaces files so that a crash leaves either the old or
// the new content, never a mix, and no named copy of the content behind: the
// vault, credentials and auth state rely on it. It also serialises
// read-modify-write cycles of one file across processes (Lock), and removes
// what a writer killed half-way left behind (RemoveLeftovers).
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// tempMarker is in the name of every temporary file or directory this
// package makes ("."+base+tempMarker+random), so that RemoveLeftovers
// recognises them.
const tempMarker = ".tmp-"

// tempName is a fresh temporary name for base.
func tempName(base string) string {
	return "." + base + tempMarker + strconv.FormatUint(rand.Uint64(), 36)
}

// isTemp reports whether name is one of this package's temporary names.
func isTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMarker)
}

// tryAnonymous is false in tests of the named way, which is what systems
// without O_TMPFILE take.
var tryAnonymous = true

// testHookWritten, when set, runs after the data is written and synced and
// before the file gets its temporary name (tests look at the directory then).
var testHookWritten func()

// WriteFile replaces path with data, mode 0600, so that a crash leaves
// either the old or the new file, never half: the data goes to a temporary
// file in the same directory, is fsynced, renamed over path, and the
// directory is fsynced.
//
// Where the kernel allows it (Linux O_TMPFILE) the temporary file has no
// name while it is written and is named only for the instant before the
// rename, so a process killed mid-write leaves nothing on disk; the vault
// writes a plaintext seed through here. Elsewhere it is created with a
// name and removed on every error path. In both cases the file is locked
// while its writer lives, so RemoveLeftovers never takes it for abandoned.
func WriteFile(path string, data []byte) error {
	dir, base := filepath.Dir(path), filepath.Base(path)
	f, tmp, err := writeTemp(dir, base, data)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// Closing f releases its lock: only after the rename, when tmp is gone.
	defer f.Close()
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// writeTemp returns an open, locked file in dir that holds data (synced)
// and its temporary name.
func writeTemp(dir, base string, data []byte) (*os.File, string, error) {
	if tryAnonymous {
		if f, err := openAnonymous(dir); err == nil {
			if err = fill(f, data); err == nil {
				var tmp string
				if tmp, err = linkAnonymous(f, dir, base); err == nil {
					return f, tmp, nil
				}
			}
			// The kernel frees an unnamed file with its last descriptor;
			// the named way below reports the error if it is not peculiar
			// to unnamed files.
			_ = f.Close()
		}
	}
	f, err := createLocked(dir, base, func(dir, pattern string) (string, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return "", err
		}
		return f.Name(), f.Close()
	}, os.O_WRONLY)
	if err != nil {
		return nil, "", err
	}
	if err := fill(f, data); err != nil {
		_ = os.Remove(f.Name())
		_ = f.Close()
		return nil, "", err
	}
	return f, f.Name(), nil
}

// fill writes data into a new temporary file with mode 0600 and syncs it.
func fill(f *os.File, data []byte) error {
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if testHookWritten != nil {
		testHookWritten()
	}
	return nil
}

// createLocked makes a temporary entry in dir with mk, opens it with flag
// and locks it. Between its creation and the lock, a RemoveLeftovers of
// another process may take it for abandoned and remove it; that is seen
// (the name no longer leads to the locked file) and another one is made.
func createLocked(dir, base string, mk func(dir, pattern string) (string, error), flag int) (*os.File, error) {
	for range 100 {
		name, err := mk(dir, "."+base+tempMarker+"*")
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(name, flag, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			_ = os.RemoveAll(name)
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			_ = f.Close()
			_ = os.RemoveAll(name)
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		if sameFile(f, name) {
			return f, nil
		}
		_ = f.Close()
	}
	return nil, fmt.Errorf("create a temporary file in %s: it was removed 100 times in a row by another process", dir)
}

// sameFile reports whether name still leads to the open file f.
func sameFile(f *os.File, name string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(name)
	return err == nil && os.SameFile(a, b)
}

// MkdirTemp makes a private directory (mode 0700) in parent for work that
// may be interrupted, such as checking a plugin before it is installed.
// It stays locked while its maker lives, so RemoveLeftovers removes it only
// once that process is gone. release removes it.
func MkdirTemp(parent, base string) (dir string, release func(), err error) {
	f, err := createLocked(parent, base, os.MkdirTemp, os.O_RDONLY)
	if err != nil {
		return "", nil, fmt.Errorf("make a temporary directory in %s: %w", parent, err)
	}
	dir = f.Name()
	return dir, func() {
		_ = os.RemoveAll(dir)
		_ = f.Close()
	}, nil
}

// RemoveLeftovers removes from dir the temporary files and directories of
// WriteFile and MkdirTemp whose writer is gone — killed, or crashed — and
// returns their paths. An entry a live process still holds is left alone,
// so this is safe while other processes write in dir.
func RemoveLeftovers(dir string) ([]string, error) {
	return removeAbandonedIn(dir, isTemp)
}

// RemoveAbandoned is RemoveLeftovers for a directory that holds nothing but
// temporary entries, such as install staging: every entry no live process
// holds is removed, whatever its name.
func RemoveAbandoned(dir string) ([]string, error) {
	return removeAbandonedIn(dir, func(string) bool { return true })
}

func removeAbandonedIn(dir string, temporary func(name string) bool) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("remove leftovers of interrupted writes in %s: %w", dir, err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		if !temporary(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		ok, err := removeAbandoned(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("remove leftover %s: %w", p, err))
		}
		if ok {
			removed = append(removed, p)
		}
	}
	return removed, errors.Join(errs...)
}

// removeAbandoned removes p if no process holds its lock.
func removeAbandoned(p string) (bool, error) {
	// O_NOFOLLOW: a symbolic link is not ours; O_NONBLOCK: nor is a FIFO,
	// and opening one must not hang.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ELOOP) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !(st.Mode().IsRegular() || st.IsDir()) {
		return false, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil // its writer is alive
		}
		return false, err
	}
	// Renamed into place since it was listed: p is gone or another file.
	if !sameFile(f, p) {
		return false, nil
	}
	if st.IsDir() {
		return true, os.RemoveAll(p)
	}
	return true, os.Remove(p)
}
