//go:build unix

package fs

import (
	"os"
	"syscall"
)

// mapFile maps the first n bytes (n > 0) of f read-only, so that serving
// a large blob does not copy its outboard (0.4 % of the content) onto the
// heap. The mapping outlives f; unmap releases it.
func mapFile(f *os.File, n int) (b []byte, unmap func(), err error) {
	b, err = syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = syscall.Munmap(b) }, nil
}
