//go:build !linux

package atomicfile

import (
	"errors"
	"os"
)

// openAnonymous: unnamed files (O_TMPFILE) are Linux's; elsewhere
// WriteFile names its temporary file from the start.
func openAnonymous(string) (*os.File, error) { return nil, errors.ErrUnsupported }

func linkAnonymous(*os.File, string, string) (string, error) { return "", errors.ErrUnsupported }
