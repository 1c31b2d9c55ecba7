//go:build !unix

package fs

import (
	"io"
	"os"
)

// mapFile reads the first n bytes of f (systems without mmap).
func mapFile(f *os.File, n int) (b []byte, unmap func(), err error) {
	b = make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, err
	}
	return b, func() {}, nil
}
