package ssh

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// ptyRequest is an accepted pty-req: the terminal a later shell or exec
// request runs in.
type ptyRequest struct {
	Term    string
	Columns uint32
	Rows    uint32
	Width   uint32
	Height  uint32
	Modes   string
}

// windowChange is the payload of a window-change request.
type windowChange struct {
	Columns uint32
	Rows    uint32
	Width   uint32
	Height  uint32
}

// openPTY opens a pseudo-terminal. The master is returned in non-blocking
// mode, registered with Go's poller, so that closing it ends a pending
// Read (creack/pty hands it out in blocking mode, where a Read blocked on a
// terminal still held open by a background process could never be
// interrupted and its goroutine would outlive the session).
func openPTY() (master, tty *os.File, err error) {
	m, t, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	fd, err := unix.Dup(int(m.Fd()))
	_ = m.Close()
	if err != nil {
		_ = t.Close()
		return nil, nil, fmt.Errorf("dup pty: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		_ = t.Close()
		return nil, nil, fmt.Errorf("pty non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), "/dev/ptmx"), t, nil
}

// setWinsize resizes the terminal without putting master back into
// blocking mode (which os.File.Fd would do).
func setWinsize(master *os.File, cols, rows, width, height uint32) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	ws := &unix.Winsize{Row: clamp16(rows), Col: clamp16(cols), Xpixel: clamp16(width), Ypixel: clamp16(height)}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil {
		return err
	}
	return ierr
}

func clamp16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}

// signalByName maps an SSH signal name ("TERM", RFC 4254 §6.10) to the
// signal; ok is false for names that are not signals here.
func signalByName(name string) (syscall.Signal, bool) {
	s := unix.SignalNum("SIG" + name)
	return s, s != 0
}

// signalName is the SSH name of sig ("TERM"), as sent in exit-signal.
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return strings.TrimPrefix(n, "SIG")
	}
	return fmt.Sprintf("SIG%d@alknet.dev", int(sig))
}
