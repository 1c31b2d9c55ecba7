package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"alknet.dev/alknet/core/pluginhost/trampoline"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// Process is a started plugin as the supervisor sees it: the Plugin
// service, a way to serve the Host service to it, and its life.
type Process interface {
	// Plugin is the plugin's Plugin service.
	Plugin() pluginpb.PluginClient
	// ServeHost serves srv where the plugin can reach it and returns the id
	// to announce in ConfigureRequest.host_broker_id.
	ServeHost(srv pluginpb.HostServer) (uint32, error)
	// Exited is closed once the process is gone.
	Exited() <-chan struct{}
	// Pid is the process id (0 if there is none).
	Pid() int
	// Protocol is the negotiated protocol version.
	Protocol() int
	// Stop ends the process: gracefully for up to grace, then by force.
	Stop(grace time.Duration)
}

// Limits bound one plugin process (docs/spec/plugins.md §9). A zero field
// is not limited; the configuration supplies the defaults.
type Limits struct {
	// Memory in bytes: a cgroup memory limit (over it the kernel kills
	// the plugin), else RLIMIT_DATA.
	Memory int64
	// OpenFiles is RLIMIT_NOFILE.
	OpenFiles int
	// Processes counts processes and threads: a cgroup pids limit, else
	// RLIMIT_NPROC when the plugin runs as its own user.
	Processes int
	// CPU is a quota in CPUs (0.5: half of one CPU): a cgroup CPU quota;
	// nothing enforces it without one.
	CPU float64
}

// RunAs is the local user plugins run as (plugins.user).
type RunAs struct {
	Name     string
	UID, GID int
}

// LaunchSpec is what a Launcher starts.
type LaunchSpec struct {
	Name, Version string
	// Binary is the installed executable and SHA256 its lock-file digest.
	Binary, SHA256 string
	// MTLS turns on go-plugin's AutoMTLS.
	MTLS bool
	// SocketDir is the private directory for the plugin's sockets.
	SocketDir string
	// Limits bound the process; RunAs, if set, is the user it runs as.
	Limits Limits
	RunAs  *RunAs
	Log    hclog.Logger
}

// Launcher starts plugin processes. ProcessLauncher is the production one;
// InProcess serves a plugin inside the current process (tests).
type Launcher interface {
	Launch(ctx context.Context, spec LaunchSpec) (Process, error)
}

// ProcessLauncher launches installed plugin binaries with go-plugin
// (docs/spec/plugins.md §2, §9): it executes the very file it verified, in
// a private socket directory, with no inherited environment, in its own
// process group with a parent-death signal, under the plugin's limits.
//
// The plugin is started through a trampoline: the core executes its own
// binary (Trampoline, by default /proc/self/exe __plugin-exec) with the
// verified plugin binary open as file descriptor 3; the trampoline
// (trampoline.Main) joins the plugin's cgroup, sets the rlimits, the user
// and no_new_privs, and executes that descriptor (through a link to
// /proc/self/fd/3 named after the plugin). Go cannot run code in a child
// between fork and exec, and the core binary is as trusted as the core,
// so this is where that code runs.
type ProcessLauncher struct {
	// Trampoline is the command that runs trampoline.Main (default: this
	// executable with trampoline.Command).
	Trampoline []string
	// Log receives the launcher's own messages (which limits apply).
	Log hclog.Logger

	once sync.Once
	cg   *cgroups

	mu      sync.Mutex
	aliases map[string]*os.File // socket directory → open for its alias
}

// Launch verifies the binary against its digest and starts it.
func (l *ProcessLauncher) Launch(_ context.Context, o LaunchSpec) (Process, error) {
	l.once.Do(l.setup)
	// Integrity before execution (docs/architecture.md D7), on the open
	// file that will be executed: a path swapped after this check changes
	// nothing. go-plugin's SecureConfig is not used: it hashes by path and
	// the command it would execute is a path too.
	bin, err := openVerified(o.Binary, o.SHA256)
	if err != nil {
		return nil, err
	}
	defer bin.Close()
	if err := ensureDir(o.SocketDir); err != nil {
		return nil, fmt.Errorf("plugin socket directory: %w", err)
	}
	if !o.MTLS {
		if err := privateSocketDir(o.SocketDir); err != nil {
			return nil, err
		}
	}
	if o.RunAs != nil {
		// The installed binary is mode 0700, in directories only the node's
		// user may enter. plugins.user runs it only through the descriptor
		// it is handed, and for that the file needs the execute bit for
		// others; the directories still keep everyone else away from it.
		if st, err := bin.Stat(); err == nil && st.Mode().Perm()&0o001 == 0 {
			if err := bin.Chmod(st.Mode().Perm() | 0o001); err != nil {
				return nil, fmt.Errorf("let plugins.user %s execute %s: %w", o.RunAs.Name, o.Binary, err)
			}
		}
	}
	socketBase, err := l.socketBase(o.SocketDir)
	if err != nil {
		return nil, err
	}
	link, err := execLink(o.SocketDir, o.Name)
	if err != nil {
		return nil, err
	}
	group, err := l.cg.create(o.Name, o.Limits)
	if err != nil {
		return nil, fmt.Errorf("plugin %s limits: %w", o.Name, err)
	}
	var r *pluginRunner
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig: pluginrpc.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			pluginrpc.ProtocolVersion: {pluginrpc.PluginName: &pluginrpc.GRPCPlugin{}},
		},
		// go-plugin places the sockets of both sides in TempDir only when
		// it is given a RunnerFunc (its own command runner is internal to
		// it), so the runner below starts the process.
		RunnerFunc: func(_ hclog.Logger, cmd *exec.Cmd, socketDir string) (runner.Runner, error) {
			nr, err := l.newRunner(o, cmd, socketDir, bin, link, group)
			if err != nil {
				// go-plugin removes the directory only once a runner exists.
				_ = os.RemoveAll(socketDir)
				return nil, err
			}
			r = nr
			return r, nil
		},
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         o.MTLS,
		SkipHostEnv:      true,
		Logger:           o.Log,
		GRPCDialOptions:  pluginrpc.DialOptions(),
		StartTimeout:     10 * time.Second,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: socketBase},
	})
	fail := func(err error) (Process, error) {
		client.Kill()
		if r == nil {
			group.remove()
		}
		return nil, fmt.Errorf("start %s: %w", o.Binary, err)
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(err)
	}
	raw, err := rpc.Dispense(pluginrpc.PluginName)
	if err != nil {
		return fail(err)
	}
	p := &goPluginProcess{client: client, pc: raw.(*pluginrpc.Client), runner: r, pid: r.pid, exited: make(chan struct{})}
	go p.watch()
	return p, nil
}

// openVerified opens an installed plugin binary (not through a symlink)
// and checks the SHA-256 of the open file against want.
func openVerified(path, want string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("verify %s: not a regular file; reinstall the plugin (alknet plugin install)", path)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
		f.Close()
		return nil, fmt.Errorf("verify %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		f.Close()
		return nil, &VerifyError{Path: path, Want: want, Got: got}
	}
	return f, nil
}

// setup finds the cgroup hierarchies plugins can be limited with and says
// once in the log how limits are enforced.
func (l *ProcessLauncher) setup() {
	if l.Log == nil {
		l.Log = hclog.NewNullLogger()
	}
	if len(l.Trampoline) == 0 {
		l.Trampoline = []string{"/proc/self/exe", trampoline.Command}
	}
	mi, err1 := os.ReadFile("/proc/self/mountinfo")
	pc, err2 := os.ReadFile("/proc/self/cgroup")
	var missing map[string]string
	if err := errors.Join(err1, err2); err != nil {
		l.cg, missing = &cgroups{}, map[string]string{ctrlMemory: err.Error(), ctrlCPU: err.Error(), ctrlPids: err.Error()}
	} else {
		l.cg, missing = setupCgroups(planCgroups(string(mi), string(pc)), os.Getpid())
	}
	if have := l.cg.controllers(); len(have) > 0 {
		var where []string
		for _, c := range have {
			v := "v1"
			if l.cg.v2[c] {
				v = "v2"
			}
			where = append(where, c+":"+v+":"+l.cg.parent[c])
		}
		l.Log.Info("plugin limits are enforced by cgroup", "controllers", strings.Join(have, ","), "cgroups", strings.Join(where, " "))
	}
	if len(missing) == 0 {
		return
	}
	var effects, names, reasons []string
	for _, c := range pluginControllers {
		why, ok := missing[c]
		if !ok {
			continue
		}
		names = append(names, c)
		reasons = append(reasons, c+": "+why)
		switch c {
		case ctrlMemory:
			effects = append(effects, "memory applies as RLIMIT_DATA (no OOM report)")
		case ctrlCPU:
			effects = append(effects, "cpu quota is not enforced")
		case ctrlPids:
			effects = append(effects, "processes apply as RLIMIT_NPROC only with plugins.user")
		}
	}
	l.Log.Warn("no writable cgroup for some plugin limits; they fall back to rlimits", "controllers", strings.Join(names, ","),
		"effect", strings.Join(effects, "; "), "reason", strings.Join(reasons, "; "))
}

// close removes what setup created (after every plugin stopped).
func (l *ProcessLauncher) close() {
	if l.cg != nil {
		l.cg.close()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for dir, f := range l.aliases {
		_ = f.Close()
		delete(l.aliases, dir)
	}
}

// maxSocketDir is the longest socket directory whose sockets go-plugin
// can name: a Unix socket path has at most 107 bytes, and go-plugin adds
// /plugin-dir<n>/plugin<n> (38 bytes at most).
const maxSocketDir = 107 - len("/plugin-dir4294967295/plugin4294967295")

// socketBase is the name under which the core uses socket directory dir:
// dir itself, or — when dir is too long for socket paths — an alias,
// /proc/self/fd/<n> of dir held open for as long as the launcher.
func (l *ProcessLauncher) socketBase(dir string) (string, error) {
	if len(dir) <= maxSocketDir {
		return dir, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, ok := l.aliases[dir]; ok {
		return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())), nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return "", fmt.Errorf("plugin socket directory: %w", err)
	}
	if l.aliases == nil {
		l.aliases = map[string]*os.File{}
	}
	l.aliases[dir] = f
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd())), nil
}

// rlimitDataSlack is added to a memory limit applied as RLIMIT_DATA: that
// counts the address space a Go process reserves writable without using
// it (arena maps, thread stacks: 100 MiB and more at start), not memory in
// use, and a plugin under its bare limit would not even start.
const rlimitDataSlack = 256 << 20

// execTarget is what every link made by execLink points to: in the
// process that executes the link, the verified binary (file descriptor 3).
const execTarget = "/proc/self/fd/3"

// execLink returns <runDir>/exec/alknet-plugin-<name>, a symbolic link to
// /proc/self/fd/3, creating it if needed. The trampoline executes the
// verified descriptor through it rather than as /proc/self/fd/3 directly
// because a process is named after the file name it was executed as: the
// plugin shows as alknet-plugin-<name> in ps and top, not as "3". The
// directory is the node user's (mode 0711: a plugins.user may pass
// through it, not change it), and the link means "my file descriptor 3"
// to whoever follows it.
func execLink(runDir, name string) (string, error) {
	dir := filepath.Join(runDir, "exec")
	if err := os.Mkdir(dir, 0o711); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("plugin launcher directory: %w", err)
	}
	if st, err := os.Lstat(dir); err != nil || !st.IsDir() {
		return "", fmt.Errorf("plugin launcher directory %s is not a directory; remove it", dir)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return "", fmt.Errorf("plugin launcher directory: %w", err)
	}
	link := filepath.Join(dir, "alknet-plugin-"+name)
	if t, err := os.Readlink(link); err == nil && t == execTarget {
		return link, nil
	}
	tmp := fmt.Sprintf("%s.%d.%d", link, os.Getpid(), time.Now().UnixNano())
	if err := os.Symlink(execTarget, tmp); err != nil {
		return "", fmt.Errorf("plugin launcher link: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("plugin launcher link: %w", err)
	}
	return link, nil
}

// The descriptors the trampoline finds the verified binary and the
// socket directory at.
const (
	pluginFD    = trampoline.PluginFD
	pluginDirFD = trampoline.PluginDirFD
)

// newRunner prepares the trampoline command for go-plugin's cmd (which
// carries the handshake environment) in socketDir, the plugin's socket
// directory go-plugin made inside o.SocketDir.
func (l *ProcessLauncher) newRunner(o LaunchSpec, cmd *exec.Cmd, socketDir string, bin *os.File, link string, group *pluginCgroup) (*pluginRunner, error) {
	log := o.Log
	if log == nil {
		log = hclog.NewNullLogger()
	}
	r := &pluginRunner{name: o.Binary, socketDir: socketDir, pluginDir: socketDir, runAs: o.RunAs, group: group, memory: o.Limits.Memory,
		log: log, relayDone: make(chan struct{}), waited: make(chan struct{})}
	args := append([]string{}, l.Trampoline[1:]...)
	args = append(args, "-ppid", strconv.Itoa(os.Getpid()), "-exec", link)
	if o.Limits.OpenFiles > 0 {
		args = append(args, "-nofile", strconv.Itoa(o.Limits.OpenFiles))
	}
	if o.Limits.Memory > 0 && !l.cg.has(ctrlMemory) {
		args = append(args, "-data", strconv.FormatInt(o.Limits.Memory+rlimitDataSlack, 10))
	}
	// RLIMIT_NPROC counts every process of the user, not of the plugin: a
	// fair stand-in for the pids controller only when plugins have a user
	// of their own.
	if o.Limits.Processes > 0 && !l.cg.has(ctrlPids) && o.RunAs != nil {
		args = append(args, "-nproc", strconv.Itoa(o.Limits.Processes))
	}
	if group != nil {
		for _, d := range group.dirs {
			args = append(args, "-cgroup", d)
		}
	}
	env := append(minimalEnv(), cmd.Env...)
	if o.Limits.CPU > 0 {
		// The plugin's Go scheduler runs on as many threads as its CPU
		// quota, rounded up. Go's own default under a cgroup quota is
		// never below 2, and without a cgroup it is every CPU: a plugin
		// scheduling on both CPUs of a small machine beside the node
		// spends more time handing work between threads than doing it
		// (docs/spec/plugins.md §9).
		env = append(env, "GOMAXPROCS="+strconv.Itoa(max(1, int(math.Ceil(o.Limits.CPU)))))
	}
	extra := []*os.File{bin}
	if o.RunAs != nil {
		args = append(args, "-uid", strconv.Itoa(o.RunAs.UID), "-gid", strconv.Itoa(o.RunAs.GID))
		if err := os.Chown(socketDir, o.RunAs.UID, o.RunAs.GID); err != nil {
			return nil, fmt.Errorf("hand socket directory %s to plugins.user %s: %w", socketDir, o.RunAs.Name, err)
		}
	}
	// A plugin running as plugins.user cannot walk to its socket directory
	// through the node's private directories, and the core's alias of a
	// long one means nothing in another process: then the plugin reaches
	// it through a descriptor of its own (/proc/self/fd/4), and the
	// addresses exchanged through go-plugin are translated (PluginToHost,
	// HostToPlugin).
	if o.RunAs != nil || strings.HasPrefix(socketDir, "/proc/self/fd/") {
		dir, err := os.Open(socketDir)
		if err != nil {
			return nil, err
		}
		r.dirFile = dir
		extra = append(extra, dir)
		r.pluginDir = "/proc/self/fd/" + strconv.Itoa(pluginDirFD)
		for i, kv := range env {
			if strings.HasPrefix(kv, plugin.EnvUnixSocketDir+"=") {
				env[i] = plugin.EnvUnixSocketDir + "=" + r.pluginDir
			}
		}
	}
	args = append(args, "--", o.Binary)
	r.cmd = exec.Command(l.Trampoline[0], args...)
	r.cmd.Env = env
	r.cmd.ExtraFiles = extra
	// Own process group (stopping kills the group) and a parent-death
	// signal, so a crashed core leaves no plugin behind; the trampoline
	// sets the signal again after it changed user (which clears it).
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var err error
	if r.stdout, err = r.cmd.StdoutPipe(); err == nil {
		r.stderr, err = r.cmd.StderrPipe()
	}
	if err != nil {
		if r.dirFile != nil {
			_ = r.dirFile.Close()
		}
		return nil, err
	}
	return r, nil
}

// pluginRunner runs one plugin process for go-plugin (runner.Runner).
// go-plugin's own command runner is internal to it; this one also places
// the process in its cgroup and reports why it exited.
type pluginRunner struct {
	cmd            *exec.Cmd
	name           string
	stdout, stderr io.ReadCloser
	pid            int
	// log receives the plugin's stderr lines (relayLog); relayDone is
	// closed once they are all relayed.
	log       hclog.Logger
	relayDone chan struct{}
	// socketDir is the plugin's socket directory; pluginDir is the same as
	// the plugin names it.
	socketDir, pluginDir string
	dirFile              *os.File
	runAs                *RunAs
	group                *pluginCgroup
	memory               int64

	// waited is closed when Wait has seen the process exit.
	waited chan struct{}

	mu     sync.Mutex
	reason string
}

var _ runner.Runner = (*pluginRunner)(nil)

func (r *pluginRunner) Start(context.Context) error {
	err := r.cmd.Start()
	if r.dirFile != nil {
		_ = r.dirFile.Close()
	}
	if err != nil {
		close(r.relayDone)
		r.group.remove()
		return err
	}
	r.pid = r.cmd.Process.Pid
	go func() {
		// Owned by the runner: ends when the plugin's stderr closes, and
		// go-plugin reads Stderr (which ends with it) before Wait.
		defer close(r.relayDone)
		relayLog(r.log, r.stderr)
	}()
	return nil
}

// Wait waits for the process, notes why it exited and removes its cgroup.
func (r *pluginRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	if n := r.group.oomKills(); n > 0 {
		reason = fmt.Sprintf("it hit its memory limit (%s) and the kernel killed it", formatBytes(r.memory))
	}
	r.group.remove()
	r.mu.Lock()
	r.reason = reason
	r.mu.Unlock()
	close(r.waited)
	return err
}

// Kill ends the plugin's whole process group.
func (r *pluginRunner) Kill(context.Context) error {
	if r.pid > 0 {
		if err := syscall.Kill(-r.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return nil
}

func (r *pluginRunner) Diagnose(context.Context) string {
	return fmt.Sprintf("%s did not complete the go-plugin handshake: the lines it (or the plugin launcher before it) logged above say why; `%s describe` shows whether it is an Alknet plugin for this machine", r.name, r.name)
}

func (r *pluginRunner) Stdout() io.ReadCloser { return r.stdout }

// Stderr is what go-plugin relays: nothing, as relayLog relays the
// plugin's stderr itself; it ends when relayLog has read everything, so
// go-plugin waits for that before Wait closes the pipe.
func (r *pluginRunner) Stderr() io.ReadCloser { return relayEnd(r.relayDone) }
func (r *pluginRunner) Name() string          { return r.name }
func (r *pluginRunner) ID() string            { return strconv.Itoa(r.pid) }

// PluginToHost turns a socket address the plugin gave into the core's.
func (r *pluginRunner) PluginToHost(network, addr string) (string, string, error) {
	if rest, ok := strings.CutPrefix(addr, r.pluginDir+"/"); ok && network == "unix" {
		return network, filepath.Join(r.socketDir, rest), nil
	}
	return network, addr, nil
}

// HostToPlugin turns the core's socket address into the plugin's; a
// plugin running as plugins.user is given the socket too.
func (r *pluginRunner) HostToPlugin(network, addr string) (string, string, error) {
	rest, ok := strings.CutPrefix(addr, r.socketDir+"/")
	if !ok || network != "unix" {
		return network, addr, nil
	}
	if r.runAs != nil {
		if err := os.Lchown(addr, r.runAs.UID, r.runAs.GID); err != nil {
			return "", "", fmt.Errorf("hand socket %s to plugins.user %s: %w", addr, r.runAs.Name, err)
		}
	}
	return network, r.pluginDir + "/" + rest, nil
}

// exitReason says why the process exited ("" while it runs).
func (r *pluginRunner) exitReason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reason
}

// formatBytes writes n in the largest binary unit that divides it.
func formatBytes(n int64) string {
	for _, u := range []struct {
		s string
		n int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.n && n%u.n == 0 {
			return fmt.Sprintf("%d%s", n/u.n, u.s)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// goPluginProcess is a plugin process run by go-plugin.
type goPluginProcess struct {
	client *plugin.Client
	pc     *pluginrpc.Client
	runner *pluginRunner
	pid    int
	exited chan struct{}
}

func (p *goPluginProcess) Plugin() pluginpb.PluginClient { return p.pc }
func (p *goPluginProcess) Exited() <-chan struct{}       { return p.exited }
func (p *goPluginProcess) Pid() int                      { return p.pid }
func (p *goPluginProcess) Protocol() int                 { return p.client.NegotiatedVersion() }

// ExitReason says why the process exited: its status, or that it hit its
// memory limit.
func (p *goPluginProcess) ExitReason() string { return p.runner.exitReason() }

// ServeHost serves the Host service on one brokered connection, which the
// plugin dials once at Configure and keeps.
func (p *goPluginProcess) ServeHost(srv pluginpb.HostServer) (uint32, error) {
	id := p.pc.Broker.NextId()
	go p.pc.Broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		s := grpc.NewServer(append(opts, pluginrpc.ServerOptions()...)...)
		pluginpb.RegisterHostServer(s, srv)
		return s
	})
	return id, nil
}

// watch closes exited when the process is gone: go-plugin waits for it
// through the runner (its Client.Exited can only be polled, which cost an
// idle node a wakeup per plugin every few milliseconds). Owned by the
// process; it ends with it.
func (p *goPluginProcess) watch() {
	<-p.runner.waited
	close(p.exited)
}

// Stop ends the process: graceful first, then the whole process group.
func (p *goPluginProcess) Stop(grace time.Duration) {
	done := make(chan struct{})
	go func() { p.client.Kill(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace + 2*time.Second):
	}
	p.killGroup()
	<-done
}

func (p *goPluginProcess) killGroup() {
	if p.pid > 0 {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}
