package pluginhost

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// TrampolineCommand is the hidden command of the alknet executable that
// runs TrampolineMain. Only the plugin launcher runs it.
const TrampolineCommand = "__plugin-exec"

// TrampolineMain is the second half of a plugin launch, run as
// `alknet __plugin-exec [options] -- argv0` by ProcessLauncher with the
// verified plugin binary open as file descriptor 3: it joins the plugin's
// cgroups, sets its rlimits, switches to plugins.user, sets no_new_privs
// and the parent-death signal, and executes that descriptor — the file
// that was verified, whatever its path names by now — with the
// environment it was given (the plugin's, nothing more). It executes it
// through -exec, a link to /proc/self/fd/3 named after the plugin, so
// that the process carries the plugin's name. It never
// returns: on failure it says why on stderr, which the core logs under
// the plugin's name, and exits with status 126.
func TrampolineMain(args []string) {
	err := trampoline(args)
	// go-plugin logs "[ERROR]" lines of a plugin's stderr as errors.
	fmt.Fprintf(os.Stderr, "[ERROR] plugin launcher: %v\n", err)
	os.Exit(126)
}

// cgroupDirs collects repeated -cgroup options.
type cgroupDirs []string

func (c *cgroupDirs) String() string     { return strings.Join(*c, ",") }
func (c *cgroupDirs) Set(v string) error { *c = append(*c, v); return nil }

func trampoline(args []string) error {
	// Thread attributes (no_new_privs, the parent-death signal) are set on
	// this thread, and execve runs on it.
	runtime.LockOSThread()
	fs := flag.NewFlagSet(TrampolineCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	ppid := fs.Int("ppid", 0, "the core's pid")
	nofile := fs.Int("nofile", 0, "RLIMIT_NOFILE")
	data := fs.Int64("data", 0, "RLIMIT_DATA in bytes")
	nproc := fs.Int("nproc", 0, "RLIMIT_NPROC")
	uid := fs.Int("uid", -1, "user id to run as")
	gid := fs.Int("gid", -1, "group id to run as")
	link := fs.String("exec", "", "a symbolic link to /proc/self/fd/3 named after the plugin, to execute")
	var cgroups cgroupDirs
	fs.Var(&cgroups, "cgroup", "cgroup directory to join (repeatable)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%v; this command is run by `alknet serve` to start plugins, not by hand", err)
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return errors.New("no plugin to run; this command is run by `alknet serve` to start plugins, not by hand")
	}
	var st unix.Stat_t
	if err := unix.Fstat(pluginFD, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errors.New("file descriptor 3 is not a plugin binary; this command is run by `alknet serve` to start plugins, not by hand")
	}
	// The link's directory is opened now: after a change of user the path
	// to it may no longer be walkable, its descriptor still is.
	self := "/proc/self/fd/" + strconv.Itoa(pluginFD)
	if *link != "" {
		dfd, err := unix.Open(filepath.Dir(*link), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", filepath.Dir(*link), err)
		}
		self = "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + filepath.Base(*link)
	}
	pid := strconv.Itoa(os.Getpid())
	for _, dir := range cgroups {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(pid), 0o644); err != nil {
			return fmt.Errorf("join cgroup %s: %w", dir, err)
		}
	}
	if *nofile > 0 {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(*nofile), Max: uint64(*nofile)}); err != nil {
			return fmt.Errorf("set open_files limit to %d: %w (above the node's own hard limit? raise that, e.g. LimitNOFILE= of its service, or lower plugins.<name>.limits.open_files)", *nofile, err)
		}
	}
	if *data > 0 {
		if err := syscall.Setrlimit(syscall.RLIMIT_DATA, &syscall.Rlimit{Cur: uint64(*data), Max: uint64(*data)}); err != nil {
			return fmt.Errorf("set memory limit (RLIMIT_DATA) to %d bytes: %w", *data, err)
		}
	}
	if *nproc > 0 {
		if err := unix.Prlimit(0, unix.RLIMIT_NPROC, &unix.Rlimit{Cur: uint64(*nproc), Max: uint64(*nproc)}, nil); err != nil {
			return fmt.Errorf("set processes limit (RLIMIT_NPROC) to %d: %w", *nproc, err)
		}
	}
	if *uid >= 0 {
		if err := syscall.Setgroups([]int{*gid}); err != nil {
			return fmt.Errorf("run as uid %d: setgroups: %w (plugins.user needs the node to run as root)", *uid, err)
		}
		if err := syscall.Setgid(*gid); err != nil {
			return fmt.Errorf("run as gid %d: %w (plugins.user needs the node to run as root)", *gid, err)
		}
		if err := syscall.Setuid(*uid); err != nil {
			return fmt.Errorf("run as uid %d: %w (plugins.user needs the node to run as root)", *uid, err)
		}
	}
	// Nothing the plugin executes gains privileges (setuid bits, file
	// capabilities).
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	// A change of user clears the parent-death signal: set it again, then
	// make sure the node did not die before it was set.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set the parent-death signal: %w", err)
	}
	if *ppid > 0 && os.Getppid() != *ppid {
		return errors.New("the node exited before its plugin started")
	}
	// The plugin does not keep its own binary open.
	if _, err := unix.FcntlInt(pluginFD, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		return fmt.Errorf("file descriptor 3: %w", err)
	}
	err := syscall.Exec(self, argv, os.Environ())
	return fmt.Errorf("execute the verified plugin binary %s (file descriptor 3, through %s): %w; plugins are executables (not scripts) and /proc must be mounted", argv[0], self, err)
}
