package atomicfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/gofrs/flock"
)

// LockSuffix names the lock file beside a file that is changed by
// read-modify-write: <file>.lock (e.g. credentials.json.lock).
const LockSuffix = ".lock"

// lockWait bounds how long Lock waits for another process; a
// read-modify-write takes milliseconds, so a minute means a stuck holder.
const lockWait = time.Minute

// lockRetry is how often a waiting Lock tries again.
const lockRetry = 5 * time.Millisecond

// Lock takes the advisory lock (flock) that serialises read-modify-write
// cycles of path across processes and returns the function that releases
// it. Hold it from before reading path until after WriteFile replaced it:
// two `alknet credential set` run at once would otherwise both read the
// old file and the later rename would drop the other's change.
//
// The lock is on a sibling file, path+LockSuffix, which is never removed:
// path itself is replaced by every write, so a lock on it would lock a file
// that is gone. The kernel releases the lock when its holder exits, however
// it exits. If path's directory does not exist there is nothing to read or
// replace, and Lock returns a no-op.
func Lock(path string) (unlock func(), err error) {
	l := flock.New(path+LockSuffix, flock.SetPermissions(0o600))
	ctx, cancel := context.WithTimeout(context.Background(), lockWait)
	defer cancel()
	ok, err := l.TryLockContext(ctx, lockRetry)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return func() {}, nil
	case err != nil && !errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("lock %s: %w", l.Path(), err)
	case !ok:
		return nil, fmt.Errorf("%s is being changed by another process that has held %s for over %v; let it finish (`fuser -v %s` shows which process) and retry", path, l.Path(), lockWait, l.Path())
	}
	return func() { _ = l.Unlock() }, nil
}
