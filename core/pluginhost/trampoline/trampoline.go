// Package trampoline is the second half of a plugin launch: the code the
// node's own executable runs, as `alknet __plugin-exec`, between the
// launcher's fork and the plugin's exec (docs/spec/plugins.md §2). The
// executable runs it from a package initializer, before the rest of the
// node's packages initialize (cmd/alknet/internal/pluginexec), so that a
// plugin's launch does not pay for the node's startup. For that it
// imports only errors, os, runtime, strconv and syscall, which Go
// initializes first: no flag, fmt, strings, path/filepath or
// golang.org/x/sys/unix (their place in the initialization order comes
// after many of the node's heavier dependencies), hence the small hand-
// written option parser and the raw prctl calls below.
package trampoline

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"syscall"
)

// Command is the hidden command of the alknet executable that runs Main.
// Only the plugin launcher runs it.
const Command = "__plugin-exec"

// PluginFD is the file descriptor the trampoline finds the verified
// binary at; PluginDirFD the socket directory, when the plugin runs as
// another user.
const (
	PluginFD    = 3
	PluginDirFD = 4
)

// Linux constants the syscall package does not define on every
// architecture (they have these values on amd64 and arm64).
const (
	oPath             = 0x200000 // O_PATH
	rlimitNPROC       = 6        // RLIMIT_NPROC
	prSetPdeathsig    = 1        // PR_SET_PDEATHSIG
	prSetNoNewPrivs   = 38       // PR_SET_NO_NEW_PRIVS
	notByHand         = "; this command is run by `alknet serve` to start plugins, not by hand"
	launcherErrPrefix = "[ERROR] plugin launcher: " // go-plugin logs "[ERROR]" lines of a plugin's stderr as errors
)

// Main is the second half of a plugin launch, run as
// `alknet __plugin-exec [options] -- argv0` by the plugin launcher with the
// verified plugin binary open as file descriptor 3: it joins the plugin's
// cgroups, sets its rlimits, switches to plugins.user, sets no_new_privs
// and the parent-death signal, and executes that descriptor — the file
// that was verified, whatever its path names by now — with the
// environment it was given (the plugin's, nothing more). It executes it
// through -exec, a link to /proc/self/fd/3 named after the plugin, so
// that the process carries the plugin's name. It never returns: on
// failure it says why on stderr, which the core logs under the plugin's
// name, and exits with status 126.
func Main(args []string) {
	err := trampoline(args)
	_, _ = os.Stderr.WriteString(launcherErrPrefix + err.Error() + "\n")
	os.Exit(126)
}

// options are the launcher's: -name value pairs, then -- and the argv.
type options struct {
	ppid, nofile, nproc int
	uid, gid            int
	data                int64
	link                string
	cgroups             []string
	argv                []string
}

func parse(args []string) (*options, error) {
	o := &options{uid: -1, gid: -1}
	for i := 0; i < len(args); i++ {
		name := args[i]
		if name == "--" {
			o.argv = args[i+1:]
			return o, nil
		}
		if i+1 >= len(args) {
			return nil, errors.New("option " + name + " has no value" + notByHand)
		}
		i++
		v := args[i]
		var err error
		switch name {
		case "-ppid":
			o.ppid, err = strconv.Atoi(v)
		case "-nofile":
			o.nofile, err = strconv.Atoi(v)
		case "-nproc":
			o.nproc, err = strconv.Atoi(v)
		case "-uid":
			o.uid, err = strconv.Atoi(v)
		case "-gid":
			o.gid, err = strconv.Atoi(v)
		case "-data":
			o.data, err = strconv.ParseInt(v, 10, 64)
		case "-exec":
			o.link = v
		case "-cgroup":
			o.cgroups = append(o.cgroups, v)
		default:
			return nil, errors.New("unknown option " + name + notByHand)
		}
		if err != nil {
			return nil, errors.New("option " + name + " " + strconv.Quote(v) + ": not a number" + notByHand)
		}
	}
	return nil, errors.New("no plugin to run" + notByHand)
}

// dirBase splits a path at its last slash (path/filepath's Dir and Base
// for the absolute paths the launcher passes).
func dirBase(p string) (dir, base string) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			if i == 0 {
				return "/", p[1:]
			}
			return p[:i], p[i+1:]
		}
	}
	return ".", p
}

func wrap(what string, err error) error {
	return errors.New(what + ": " + err.Error())
}

func prctl(option, arg uintptr) error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, option, arg, 0); errno != 0 {
		return errno
	}
	return nil
}

func setrlimit(resource int, v uint64) error {
	return syscall.Setrlimit(resource, &syscall.Rlimit{Cur: v, Max: v})
}

func trampoline(args []string) error {
	// Thread attributes (no_new_privs, the parent-death signal) are set on
	// this thread, and execve runs on it.
	runtime.LockOSThread()
	o, err := parse(args)
	if err != nil {
		return err
	}
	if len(o.argv) == 0 {
		return errors.New("no plugin to run" + notByHand)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(PluginFD, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return errors.New("file descriptor 3 is not a plugin binary" + notByHand)
	}
	// The link's directory is opened now: after a change of user the path
	// to it may no longer be walkable, its descriptor still is.
	self := "/proc/self/fd/" + strconv.Itoa(PluginFD)
	if o.link != "" {
		dir, base := dirBase(o.link)
		dfd, err := syscall.Open(dir, oPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return wrap("open "+dir, err)
		}
		self = "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + base
	}
	pid := strconv.Itoa(os.Getpid())
	for _, dir := range o.cgroups {
		if err := os.WriteFile(dir+"/cgroup.procs", []byte(pid), 0o644); err != nil {
			return wrap("join cgroup "+dir, err)
		}
	}
	if o.nofile > 0 {
		if err := setrlimit(syscall.RLIMIT_NOFILE, uint64(o.nofile)); err != nil {
			return errors.New("set open_files limit to " + strconv.Itoa(o.nofile) + ": " + err.Error() +
				" (above the node's own hard limit? raise that, e.g. LimitNOFILE= of its service, or lower plugins.<name>.limits.open_files)")
		}
	}
	if o.data > 0 {
		if err := setrlimit(syscall.RLIMIT_DATA, uint64(o.data)); err != nil {
			return wrap("set memory limit (RLIMIT_DATA) to "+strconv.FormatInt(o.data, 10)+" bytes", err)
		}
	}
	if o.nproc > 0 {
		if err := setrlimit(rlimitNPROC, uint64(o.nproc)); err != nil {
			return wrap("set processes limit (RLIMIT_NPROC) to "+strconv.Itoa(o.nproc), err)
		}
	}
	if o.uid >= 0 {
		const needRoot = " (plugins.user needs the node to run as root)"
		if err := syscall.Setgroups([]int{o.gid}); err != nil {
			return errors.New("run as uid " + strconv.Itoa(o.uid) + ": setgroups: " + err.Error() + needRoot)
		}
		if err := syscall.Setgid(o.gid); err != nil {
			return errors.New("run as gid " + strconv.Itoa(o.gid) + ": " + err.Error() + needRoot)
		}
		if err := syscall.Setuid(o.uid); err != nil {
			return errors.New("run as uid " + strconv.Itoa(o.uid) + ": " + err.Error() + needRoot)
		}
	}
	// Nothing the plugin executes gains privileges (setuid bits, file
	// capabilities).
	if err := prctl(prSetNoNewPrivs, 1); err != nil {
		return wrap("set no_new_privs", err)
	}
	// A change of user clears the parent-death signal: set it again, then
	// make sure the node did not die before it was set.
	if err := prctl(prSetPdeathsig, uintptr(syscall.SIGKILL)); err != nil {
		return wrap("set the parent-death signal", err)
	}
	if o.ppid > 0 && os.Getppid() != o.ppid {
		return errors.New("the node exited before its plugin started")
	}
	// The plugin does not keep its own binary open.
	syscall.CloseOnExec(PluginFD)
	err = syscall.Exec(self, o.argv, os.Environ())
	return errors.New("execute the verified plugin binary " + o.argv[0] + " (file descriptor 3, through " + self + "): " + err.Error() +
		"; plugins are executables (not scripts) and /proc must be mounted")
}
