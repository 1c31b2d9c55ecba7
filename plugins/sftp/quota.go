package sftp

import (
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

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

// ByteSize is a size in bytes, written in the config as a number or a
// string with a unit: "10GiB", "500MB", "1048576".
type ByteSize int64

// UnmarshalJSON accepts a number or a string with a unit.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	s := strings.TrimSpace(string(data))
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b = ByteSize(n)
	return nil
}

var units = []struct {
	suffix string
	mult   int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"kB", 1e3}, {"B", 1},
}

func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || (mult > 1 && n > (1<<62)/mult) {
		return 0, fmt.Errorf("size %q: want a number of bytes or a number with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	return n * mult, nil
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + " GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
