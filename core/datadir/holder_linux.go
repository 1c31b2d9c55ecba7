package datadir

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// lockHolder asks the kernel which process holds path's exclusive flock:
// /proc/locks lists "N: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> …"
// (a pid the reader cannot see shows as 0). known is false when the kernel
// does not say.
func lockHolder(path string) (pid int, known bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		// A waiter's line has "->" in the second field; only holders count.
		if len(f) < 6 || f[1] != "FLOCK" || f[3] != "WRITE" || f[5] != want {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil {
			return max(pid, 0), true
		}
	}
	return 0, false
}
