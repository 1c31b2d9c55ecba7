package sftp

import (
	"io/fs"
	"os"
	"strconv"
	"sync"
	"syscall"

	"alknet.dev/alknet/plugins/sdk"
	"github.com/pkg/sftp"
)

// usage is what one identity stores in its own root, against its quota.
// It is measured once per plugin process (a walk of the root, counting
// each inode's bytes once) and then kept up to date by every session of
// the identity: writes that grow a file are charged before they happen,
// so a write past the quota fails and nothing past it reaches the disk.
// Sessions of the same identity share one usage.
type usage struct {
	bytesLimit int64 // 0: unlimited
	filesLimit int64 // 0: unlimited

	mu    sync.Mutex
	bytes int64
	files int64
}

// quotaError is the status a client sees for a write past the quota:
// SSH_FX_FAILURE (v3 has no quota code; OpenSSH's sftp prints "Failure",
// clients that show the server's message — WinSCP, FileZilla, pkg/sftp —
// show this one), as SFTPGo answers it.
func quotaError(what string, used, limit int64) error {
	return &quotaErr{coded(sftp.ErrSSHFxFailure, "quota exceeded: %s would pass this identity's limit of %s (in use: %s); delete files or ask the node's operator for more", what, formatQuota(what, limit), formatQuota(what, used))}
}

// quotaErr marks a refusal for the quota (the session logs the first).
type quotaErr struct{ error }

func (e *quotaErr) Unwrap() error { return e.error }

func formatQuota(what string, n int64) string {
	if what == "files" {
		return strconv.FormatInt(n, 10) + " files"
	}
	return formatBytes(n)
}

// addBytes charges (or, negative, returns) n bytes; a charge past the
// limit is refused and changes nothing.
func (u *usage) addBytes(n int64) error {
	if u == nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if n > 0 && u.bytesLimit > 0 && u.bytes+n > u.bytesLimit {
		return quotaError("bytes", u.bytes, u.bytesLimit)
	}
	u.bytes = max(0, u.bytes+n)
	return nil
}

// addFiles charges (or returns) n files.
func (u *usage) addFiles(n int64) error {
	if u == nil {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if n > 0 && u.filesLimit > 0 && u.files+n > u.filesLimit {
		return quotaError("files", u.files, u.filesLimit)
	}
	u.files = max(0, u.files+n)
	return nil
}

// removed accounts for a name that no longer exists: one file less, and
// its bytes unless another hard link still holds them.
func (u *usage) removed(st os.FileInfo) {
	if u == nil || !st.Mode().IsRegular() {
		return
	}
	_ = u.addFiles(-1)
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Nlink > 1 {
		return
	}
	_ = u.addBytes(-st.Size())
}

func (u *usage) bytesUsed() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bytes
}

func (u *usage) snapshot() (bytes, files int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bytes, u.files
}

// measure walks root and counts regular files (every name) and their bytes
// (every inode once).
func measure(root *os.Root) (bytes, files int64, err error) {
	seen := map[[2]uint64]bool{}
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		files++
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			key := [2]uint64{uint64(sys.Dev), sys.Ino}
			if seen[key] {
				return nil
			}
			seen[key] = true
		}
		bytes += info.Size()
		return nil
	})
	return bytes, files, err
}

func formatBytes(n int64) string { return sdk.ByteSize(n).String() }
