package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/pluginhost"
)

// Containment: where a node's plugin sockets live and who can reach them,
// that launch runs the very file it verified, and the limits a plugin runs
// under (docs/spec/plugins.md §2, §9).

// hogPlugin builds testdata/plugins/hog; with marker set it is the "other"
// binary, which only creates marker when run.
func hogPlugin(t *testing.T, marker string) string {
	if marker == "" {
		return testPlugin(t, "hog", "hog", "")
	}
	return testPlugin(t, "hog", "hog", "-X main.marker="+marker)
}

// configFile writes a config file for a node.
func configFile(t *testing.T, body string) string {
	t.Helper()
	return writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), body, 0o600)
}

// hogNode installs the hog plugin, serves the node with --enable-diag and
// the config body, and returns an admin connection (diag/invoke reaches
// hog's internal operations) and hog's status once it is ready.
func hogNode(t *testing.T, configBody string) (*cli, *server, *call.Connection, pluginStatus) {
	t.Helper()
	node := newCLI(t, nil)
	node.ok("", "plugin", "install", hogPlugin(t, ""))
	srv, conn := serveAsAdmin(t, node, "--enable-diag", "--config", configFile(t, configBody))
	p := waitPlugin(t, conn, "hog", func(p pluginStatus) bool { return p.State == "ready" && p.Pid > 0 })
	return node, srv, conn, p
}

// serveAsAdmin serves node with args and returns an admin connection to
// it (node/info shows plugins' states and pids to such callers).
func serveAsAdmin(t *testing.T, node *cli, args ...string) (*server, *call.Connection) {
	t.Helper()
	tok := adminToken(t, node, "admin")
	srv := startServe(t, node, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(srv.logs)
		}
	})
	return srv, tokenConn(t, srv, tok)
}

// invokeHog calls one of hog's internal operations through diag/invoke.
func invokeHog(ctx context.Context, conn *call.Connection, op string, input any) (json.RawMessage, error) {
	return conn.Call(ctx, "diag/invoke", map[string]any{"name": op, "input": input})
}

// unixSockets lists the paths of the bound Unix sockets the processes
// hold open (what another local user could try to connect to). A socket
// named through a directory descriptor (/proc/self/fd/<n>/…, which a node
// uses when the real path is too long for a socket) is listed under the
// directory's real path.
func unixSockets(t *testing.T, pids ...int) []string {
	t.Helper()
	inodes := map[string]int{} // socket inode → a process holding it
	for _, pid := range pids {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatalf("list the open files of process %d: %v", pid, err)
		}
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = pid
			}
		}
	}
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	var paths []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pid, held := 0, false
		if len(fields) >= 8 {
			pid, held = inodes[fields[6]]
		}
		if !held || !strings.HasPrefix(fields[7], "/") {
			continue
		}
		path := fields[7]
		if rest, ok := strings.CutPrefix(path, "/proc/self/fd/"); ok {
			fd, file, _ := strings.Cut(rest, "/")
			dir, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd))
			if err != nil {
				t.Fatalf("socket %s of process %d: %v", path, pid, err)
			}
			path = filepath.Join(dir, file)
		}
		if !seen[path] {
			seen[path] = true
			paths = append(paths, path)
		}
	}
	return paths
}

// plantSocket leaves a Unix socket file at path, as a killed node would.
func plantSocket(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	_ = ln.Close()
}

// otherUser creates a second local user for the test and returns its ids.
func otherUser(t *testing.T) (uid, gid int, name string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test creates a second local user with useradd")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("needs useradd to create a second local user")
	}
	name = fmt.Sprintf("alknet-t%06d", rand.IntN(1_000_000))
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, name
}

// sockprobe builds testdata/sockprobe where any user may run it.
func sockprobe(t *testing.T) string {
	t.Helper()
	bin := testPluginFrom(t, "./testdata/sockprobe", "sockprobe", "-s -w")
	dir, err := os.MkdirTemp("", "alknet-sockprobe-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "sockprobe")
	if err := os.WriteFile(out, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, out} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// probe runs sockprobe against paths, as uid/gid when asUser is set, and
// returns its verdict per path.
func probe(t *testing.T, bin string, asUser *syscall.Credential, paths []string) map[string]string {
	t.Helper()
	cmd := exec.Command(bin, paths...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: asUser}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sockprobe: %v\n%s", err, out)
	}
	verdict := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		for _, p := range paths {
			if strings.HasPrefix(l, p+" ") {
				verdict[p] = strings.TrimPrefix(l, p+" ")
			}
		}
	}
	return verdict
}

// openUp makes the directories above the node's data directory
// traversable by everyone, so that only what alknet itself creates stands
// between another user and the node's files.
func openUp(t *testing.T, node *cli) {
	t.Helper()
	for d := filepath.Dir(node.dataDir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestContainmentPluginSocketsLiveInRunDir: while a node runs, every Unix
// socket it or its plugin holds is under <data>/plugins/run (mode 0700),
// none elsewhere (e.g. /tmp); a socket left there by a previous run is
// removed at start; after the node stops, none is left.
func TestContainmentPluginSocketsLiveInRunDir(t *testing.T) {
	node := newCLI(t, nil)
	run := filepath.Join(node.dataDir, "plugins", "run")
	staleDir := filepath.Join(run, "plugin-dir1234")
	stale := []string{filepath.Join(run, "plugin98765"), filepath.Join(staleDir, "plugin4321")}
	for _, s := range stale {
		plantSocket(t, s)
	}
	srv, conn := serveAsAdmin(t, node)
	p := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" && p.Pid > 0 })
	for _, s := range append(stale, staleDir) {
		if _, err := os.Lstat(s); err == nil {
			t.Errorf("%s, left by a previous run, is still there after the start", s)
		}
	}
	socks := unixSockets(t, srv.cmd.Process.Pid, p.Pid)
	// The plugin's listener and the core's listener for the Host service.
	if len(socks) < 2 {
		t.Fatalf("the node and its plugin hold %d bound Unix sockets (%v), want the plugin's and the core's", len(socks), socks)
	}
	for _, s := range socks {
		if !strings.HasPrefix(s, run+"/") {
			t.Errorf("socket %s of the node is outside %s", s, run)
		}
	}
	st, err := os.Stat(run)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %04o, want 0700", run, st.Mode().Perm())
	}
	if code := srv.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	for _, s := range socks {
		if _, err := os.Lstat(s); err == nil {
			t.Errorf("socket %s is still there after the node stopped", s)
		}
	}
	left, _ := os.ReadDir(run)
	for _, e := range left {
		t.Errorf("%s is still in %s after the node stopped", e.Name(), run)
	}
}

// TestContainmentOtherUserCannotReachPluginSockets: with a permissive
// umask and the directories above the data directory open to all,
// another local user cannot connect to any socket of the node or its
// plugin, with AutoMTLS on and off; the node's own user can.
func TestContainmentOtherUserCannotReachPluginSockets(t *testing.T) {
	uid, gid, _ := otherUser(t)
	bin := sockprobe(t)
	for _, mtls := range []bool{true, false} {
		t.Run(fmt.Sprintf("mtls=%v", mtls), func(t *testing.T) {
			// A data directory short enough for the sockets to be bound
			// under their real paths, which the other user then tries.
			node := newCLI(t, nil)
			short, err := os.MkdirTemp("", "alk-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(short) })
			node.dataDir = filepath.Join(short, "node")
			cfg := configFile(t, fmt.Sprintf("[plugins]\nmtls = %v\n", mtls))
			openUp(t, node)
			old := syscall.Umask(0)
			srv, conn := serveAsAdmin(t, node, "--config", cfg)
			syscall.Umask(old)
			p := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" && p.Pid > 0 })
			socks := unixSockets(t, srv.cmd.Process.Pid, p.Pid)
			if len(socks) < 2 {
				t.Fatalf("the node and its plugin hold %d bound Unix sockets (%v), want the plugin's and the core's", len(socks), socks)
			}
			own := probe(t, bin, nil, socks)
			other := probe(t, bin, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, socks)
			for _, s := range socks {
				if own[s] != "connected" {
					t.Errorf("the node's own user cannot reach %s: %s", s, own[s])
				}
				if !strings.HasPrefix(other[s], "refused") {
					t.Errorf("another local user reached %s: %s", s, other[s])
				}
			}
		})
	}
}

// serveUntilExit runs `alknet serve` that is expected to refuse to start
// and returns its exit code and stderr.
func serveUntilExit(t *testing.T, node *cli, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--data-dir", node.dataDir, "serve", "--listen", "127.0.0.1:0"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "alknet"), full...)
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	var errb strings.Builder
	cmd.Stderr = &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("alknet serve %v did not refuse to start:\n%s", args, errb.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("alknet serve %v: %v", args, err)
	}
	return ee.ExitCode(), errb.String()
}

// TestContainmentNoMTLSNeedsPrivateSocketDir: with plugins.mtls = false
// the node refuses to start while <data>/plugins/run is open to others or
// owned by another user, naming the directory and the command that fixes
// it; with AutoMTLS the same directory is accepted.
func TestContainmentNoMTLSNeedsPrivateSocketDir(t *testing.T) {
	node := newCLI(t, nil)
	run := filepath.Join(node.dataDir, "plugins", "run")
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(run, 0o755); err != nil {
		t.Fatal(err)
	}
	noMTLS := configFile(t, "[plugins]\nmtls = false\n")
	code, stderr := serveUntilExit(t, node, "--config", noMTLS)
	if code == 0 || !strings.Contains(stderr, run) || !strings.Contains(stderr, "chmod 700 "+run) || !strings.Contains(stderr, "plugins.mtls") {
		t.Fatalf("exit %d; want a refusal naming %s and chmod 700:\n%s", code, run, stderr)
	}
	srv, conn := serveAsAdmin(t, node)
	waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" })
	srv.stop(syscall.SIGTERM)

	if os.Geteuid() == 0 {
		uid, gid, name := otherUser(t)
		if err := os.Chmod(run, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(run, uid, gid); err != nil {
			t.Fatal(err)
		}
		code, stderr := serveUntilExit(t, node, "--config", noMTLS)
		if code == 0 || !strings.Contains(stderr, run) || !strings.Contains(stderr, "chown") || !strings.Contains(stderr, name) {
			t.Fatalf("exit %d; want a refusal naming %s, its owner %s and chown:\n%s", code, run, name, stderr)
		}
	}
}

// swapLink points link at one target, then the other, again and again,
// each time atomically (a new symlink renamed over the old), until stop.
func swapLink(t *testing.T, link string, targets [2]string, stop <-chan struct{}, wg *sync.WaitGroup) {
	swapPath(t, os.Symlink, link, targets, stop, wg)
}

// swapPath is swapLink with the kind of link made by mk (os.Symlink, or
// os.Link for a hard link).
func swapPath(t *testing.T, mk func(target, tmp string) error, link string, targets [2]string, stop <-chan struct{}, wg *sync.WaitGroup) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		tmp := link + ".swap"
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = os.Remove(tmp)
			if err := mk(targets[i%2], tmp); err != nil {
				t.Errorf("link %s: %v", tmp, err)
				return
			}
			if err := os.Rename(tmp, link); err != nil {
				t.Errorf("rename: %v", err)
				return
			}
		}
	}()
}

// TestContainmentInstallSymlinkSwapRace: while a symlink to the candidate
// (or to its directory) flips between the plugin and another binary,
// install — up to 1,000 tries, for a bounded time — never runs the other
// binary (it would leave a marker) and leaves no file behind: a symlink
// is refused, a wrong digest is refused before anything runs, and what is
// installed is the plugin with its digest.
func TestContainmentInstallSymlinkSwapRace(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "other-binary-ran")
	// Stripped builds: less to copy and hash per try.
	good, other := testPlugin(t, "hog", "hog", "-s -w"), testPlugin(t, "hog", "hog", "-s -w -X main.marker="+marker)
	sum, err := fileSHA256(good)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var dirs [2]string
	for i, src := range []string{good, other} {
		dirs[i] = filepath.Join(dir, fmt.Sprint("d", i))
		if err := os.Mkdir(dirs[i], 0o700); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirs[i], "alknet-plugin-hog"), b, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	fileLink, dirLink := filepath.Join(dir, "alknet-plugin-hog"), filepath.Join(dir, "current")
	if err := errors.Join(os.Symlink(filepath.Join(dirs[0], "alknet-plugin-hog"), fileLink), os.Symlink(dirs[0], dirLink)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	swapLink(t, fileLink, [2]string{filepath.Join(dirs[0], "alknet-plugin-hog"), filepath.Join(dirs[1], "alknet-plugin-hog")}, stop, &wg)
	swapLink(t, dirLink, dirs, stop, &wg)
	defer func() { close(stop); wg.Wait() }()

	// The store `alknet plugin install` uses, called directly: a thousand
	// CLI processes would take minutes.
	node := newCLI(t, nil)
	store := pluginhost.OpenStore(filepath.Join(node.dataDir, "plugins"))
	counts := map[string]int{}
	deadline := time.Now().Add(25 * time.Second)
	tries := 0
	for ; tries < 1000 && time.Now().Before(deadline); tries++ {
		src := fileLink
		if tries%2 == 1 {
			src = filepath.Join(dirLink, "alknet-plugin-hog")
		}
		_, err := store.Install(context.Background(), src, src, pluginhost.InstallOptions{SHA256: sum})
		switch {
		case err == nil || errors.Is(err, pluginhost.ErrAlreadyInstalled):
			counts["installed"]++
		case strings.Contains(err.Error(), "symbolic link"):
			counts["refused: symbolic link"]++
		case strings.Contains(err.Error(), "sha256 is"):
			counts["refused: digest"]++
		default:
			t.Fatalf("install %s: %v", src, err)
		}
	}
	t.Logf("%d tries: %v", tries, counts)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the other binary was executed during install")
	}
	if counts["installed"] == 0 || counts["refused: digest"] == 0 || counts["refused: symbolic link"] == 0 {
		t.Fatalf("the race was not exercised: %v", counts)
	}
	plugins := filepath.Join(node.dataDir, "plugins")
	var files []string
	_ = filepath.WalkDir(plugins, func(p string, d os.DirEntry, err error) error {
		// lock.json and the store's own lock beside it.
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "lock.json") {
			files = append(files, strings.TrimPrefix(p, plugins+"/"))
		}
		return nil
	})
	if fmt.Sprint(files) != "[hog/1.0.0/alknet-plugin-hog]" {
		t.Fatalf("files under %s besides the lock file: %v", plugins, files)
	}
	if got, _ := fileSHA256(filepath.Join(plugins, "hog", "1.0.0", "alknet-plugin-hog")); got != sum {
		t.Fatalf("installed binary has sha256 %s, want %s", got, sum)
	}
}

// TestContainmentLaunchRunsTheVerifiedFile: while the installed binary's
// path flips between the verified file and another binary, every launch
// (`alknet plugin restart`) either runs the verified file — the running
// process's executable is that very file — or is refused with both
// digests; the other binary never runs, even when it is swapped in after
// the check.
func TestContainmentLaunchRunsTheVerifiedFile(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "other-binary-ran")
	other := hogPlugin(t, marker)
	node, srv, conn, p := hogNode(t, "")
	bin := filepath.Join(node.dataDir, "plugins", "hog", "1.0.0", "alknet-plugin-hog")
	verified, otherCopy := bin+".verified", bin+".other"
	if err := os.Link(bin, verified); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(otherCopy, b, 0o700); err != nil {
		t.Fatal(err)
	}
	want, err := os.Stat(verified)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	swapPath(t, os.Link, bin, [2]string{otherCopy, verified}, stop, &wg)
	stopSwap := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	defer stopSwap()

	ran, refused := 0, 0
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 30 && time.Now().Before(deadline); i++ {
		before := strings.Count(srv.logs.String(), "plugin switch failed")
		node.ok("", "plugin", "restart", "hog")
		for waitUntil := time.Now().Add(20 * time.Second); ; {
			_, ps := nodeInfo(t, conn)
			if q := ps["hog"]; q.State == "ready" && q.Pid != p.Pid && q.Pid > 0 {
				exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", q.Pid))
				if err == nil && !os.SameFile(exe, want) {
					t.Fatalf("plugin process %d runs a file other than the one verified", q.Pid)
				}
				p = q
				ran++
				break
			}
			if strings.Count(srv.logs.String(), "plugin switch failed") > before {
				refused++
				break
			}
			if time.Now().After(waitUntil) {
				t.Fatalf("restart %d: neither a new process nor a refusal\n%s", i, srv.logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	stopSwap()
	t.Logf("launches: %d ran the verified file, %d refused", ran, refused)
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("the other binary was executed by a launch\n%s", srv.logs)
	}
	if ran == 0 || refused == 0 {
		t.Fatalf("the race was not exercised: %d ran, %d refused", ran, refused)
	}
	srv.waitLog("does not match its lock entry")
}

// cgroupsEnforce reports whether the node's log says that a cgroup
// enforces the named controller for its plugins.
func cgroupsEnforce(srv *server, controller string) bool {
	for _, l := range strings.Split(srv.logs.String(), "\n") {
		if strings.Contains(l, "plugin limits are enforced by cgroup") && strings.Contains(l, controller) {
			return true
		}
	}
	return false
}

// TestContainmentLimitsAppliedToPlugin: the plugin process runs with
// no_new_privs and the configured open-files limit, and — when the host
// lets the node use cgroups — inside a cgroup of its own.
func TestContainmentLimitsAppliedToPlugin(t *testing.T) {
	_, srv, _, p := hogNode(t, "[plugins.hog.limits]\nopen_files = 1000\nprocesses = 100\nmemory = \"200MiB\"\n")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "NoNewPrivs:\t1") {
		t.Errorf("plugin runs without no_new_privs:\n%s", status)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var nofile []string
	for _, l := range strings.Split(string(limits), "\n") {
		if strings.HasPrefix(l, "Max open files") {
			nofile = strings.Fields(strings.TrimPrefix(l, "Max open files"))
		}
	}
	if len(nofile) < 2 || nofile[0] != "1000" || nofile[1] != "1000" {
		t.Errorf("plugin's open files limit %v, want 1000 1000", nofile)
	}
	if cgroupsEnforce(srv, "memory") {
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", p.Pid))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(cg), "alknet") || !strings.Contains(string(cg), "hog") {
			t.Errorf("plugin is not in a cgroup of its own:\n%s", cg)
		}
	} else {
		t.Logf("no writable cgroup hierarchy here: rlimits only")
	}
}

// TestContainmentMemoryLimitKillsAndRestarts: a plugin that allocates past
// its memory limit is killed and handled as a crash: the node restarts it
// (state ready again, restarts counted), says it hit its memory limit,
// and the new process serves.
func TestContainmentMemoryLimitKillsAndRestarts(t *testing.T) {
	_, srv, conn, p := hogNode(t, "[plugins.hog.limits]\nmemory = \"64MiB\"\n")
	out, err := invokeHog(tctx(t, 30*time.Second), conn, "hog/alloc", map[string]int{"mib": 1024})
	if err == nil {
		t.Fatalf("hog allocated %s MiB under a 64 MiB memory limit", out)
	}
	q := waitPlugin(t, conn, "hog", func(q pluginStatus) bool { return q.State == "ready" && q.Restarts >= 1 && q.Pid != p.Pid })
	t.Logf("allocation ended with %v; restarted as pid %d", err, q.Pid)
	if cgroupsEnforce(srv, "memory") {
		srv.waitLog("hit its memory limit")
	}
	if out, err := invokeHog(tctx(t, 10*time.Second), conn, "hog/alloc", map[string]int{"mib": 8}); err != nil || string(out) != "8" {
		t.Fatalf("hog/alloc of 8 MiB after the restart: %s %v", out, err)
	}
}

// cpuSeconds is the CPU time process pid has used (all its threads).
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

// TestContainmentCPUQuota: a plugin spinning two threads is held to its
// CPU quota (0.25 of one CPU), while a monitor connection calling
// node/info in a loop sees no error.
func TestContainmentCPUQuota(t *testing.T) {
	_, srv, conn, p := hogNode(t, "[plugins.hog.limits]\ncpu = 0.25\n")
	if strings.Contains(srv.logs.String(), "cpu quota is not enforced") {
		t.Skip("no writable cgroup cpu controller here: the node cannot enforce a CPU quota (it logs so)")
	}
	monitor := callConn(t, srv, nil)
	stop := make(chan struct{})
	var oks, errs atomic.Int64
	var slowest atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			start := time.Now()
			_, err := monitor.Call(ctx, "node/info", nil)
			cancel()
			if d := time.Since(start); int64(d) > slowest.Load() {
				slowest.Store(int64(d))
			}
			if err != nil {
				errs.Add(1)
				t.Logf("node/info during the spin: %v", err)
			} else {
				oks.Add(1)
			}
		}
	}()
	if _, err := invokeHog(tctx(t, 10*time.Second), conn, "hog/spin", map[string]any{"threads": 2, "seconds": 5}); err != nil {
		t.Fatal(err)
	}
	// Measure over a window inside the spin: it has begun once the
	// plugin's CPU time moves.
	base := cpuSeconds(t, p.Pid)
	for deadline := time.Now().Add(5 * time.Second); cpuSeconds(t, p.Pid) < base+0.05; {
		if time.Now().After(deadline) {
			t.Fatal("the plugin used no CPU after hog/spin returned")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c0, w0 := cpuSeconds(t, p.Pid), time.Now()
	time.Sleep(3 * time.Second)
	c1, w1 := cpuSeconds(t, p.Pid), time.Now()
	close(stop)
	wg.Wait()
	used := (c1 - c0) / w1.Sub(w0).Seconds()
	t.Logf("plugin used %.2f CPUs; monitor: %d ok, %d failed, slowest %v", used, oks.Load(), errs.Load(), time.Duration(slowest.Load()))
	if used > 0.25*1.4 {
		t.Errorf("plugin used %.2f CPUs under a quota of 0.25", used)
	}
	if errs.Load() != 0 || oks.Load() == 0 {
		t.Errorf("monitor: %d node/info calls failed, %d succeeded", errs.Load(), oks.Load())
	}
}

// TestContainmentPluginsRunAsConfiguredUser: with plugins.user, plugins
// run as that user and still serve streams and calls (their sockets are
// reachable by them, and only by them and the node).
func TestContainmentPluginsRunAsConfiguredUser(t *testing.T) {
	uid, _, name := otherUser(t)
	node := newCLI(t, nil)
	srv, conn := serveAsAdmin(t, node, "--config", configFile(t, fmt.Sprintf("[plugins]\nuser = %q\n", name)))
	p := waitPlugin(t, conn, "echo", func(p pluginStatus) bool { return p.State == "ready" && p.Pid > 0 })
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", uid, uid, uid, uid)
	if !strings.Contains(string(status), want) {
		t.Fatalf("plugin does not run as %s (uid %d):\n%s", name, uid, status)
	}
	if err := echoRoundTrip(tctx(t, 10*time.Second), srv, "alknet/echo", []byte("as another user")); err != nil {
		t.Fatalf("echo stream: %v", err)
	}
	if out, err := conn.Call(tctx(t, 10*time.Second), "echo/say", "hi"); err != nil || string(out) != `"hi"` {
		t.Fatalf("echo/say: %s %v", out, err)
	}
}

// copyExecutable copies an executable to dst, mode 0755.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestContainmentRlimitsWithoutCgroups: a node that can write no cgroup
// (here it runs as an unprivileged user) says so once in its log and
// still applies what rlimits can: a plugin allocating far past its memory
// limit dies (RLIMIT_DATA) and is restarted as a crash; its open-files
// limit holds.
func TestContainmentRlimitsWithoutCgroups(t *testing.T) {
	uid, gid, _ := otherUser(t)
	dir, err := os.MkdirTemp("", "alk-nocg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The plugin sits beside alknet: installed at start (bundled).
	copyExecutable(t, filepath.Join(binDir, "alknet"), filepath.Join(dir, "alknet"))
	copyExecutable(t, hogPlugin(t, ""), filepath.Join(dir, "alknet-plugin-hog"))
	cfg := writeFile(t, filepath.Join(dir, "alknet.toml"), "[plugins.hog.limits]\nmemory = \"64MiB\"\nopen_files = 500\n", 0o600)
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, cfg, home} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	as := func(args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(dir, "alknet"), append([]string{"--data-dir", filepath.Join(dir, "node")}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + home}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		return cmd
	}
	out, err := as("apikey", "create", "--scope", "admin").Output()
	if err != nil {
		t.Fatalf("apikey create: %v", err)
	}
	tok := strings.TrimSpace(string(out))

	cmd := as("serve", "--listen", "127.0.0.1:0", "--config", cfg, "--enable-diag")
	srv := &server{t: t, cmd: cmd, logs: &transcript{}, exited: make(chan struct{})}
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			srv.logs.add(sc.Text())
			if m := dialLine.FindStringSubmatch(sc.Text()); m != nil && srv.FP == "" {
				srv.FP, srv.Addr = m[1], m[2]
				close(ready)
			}
		}
	}()
	go func() {
		defer pipes.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			srv.logs.add(sc.Text())
		}
	}()
	go func() {
		pipes.Wait()
		srv.exitErr = cmd.Wait()
		close(srv.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-srv.exited
		if t.Failed() {
			t.Log(srv.logs)
		}
	})
	select {
	case <-ready:
	case <-srv.exited:
		t.Fatalf("alknet serve exited: %v", srv.exitErr)
	case <-time.After(20 * time.Second):
		t.Fatal("alknet serve printed no dial string")
	}
	conn := tokenConn(t, srv, tok)
	p := waitPlugin(t, conn, "hog", func(p pluginStatus) bool { return p.State == "ready" && p.Pid > 0 })
	logs := srv.logs.String()
	if n := strings.Count(logs, "no writable cgroup for some plugin limits"); n != 1 || !strings.Contains(logs, "cpu quota is not enforced") {
		t.Fatalf("the fallback to rlimits is logged %d times (want once, saying the CPU quota is not enforced)", n)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Max open files            500                  500", "Max data size             335544320            335544320"} {
		if !strings.Contains(string(limits), want) {
			t.Errorf("plugin limits lack %q:\n%s", want, limits)
		}
	}
	if out, err := invokeHog(tctx(t, 30*time.Second), conn, "hog/alloc", map[string]int{"mib": 1024}); err == nil {
		t.Fatalf("hog allocated %s MiB under a 64 MiB memory limit", out)
	}
	waitPlugin(t, conn, "hog", func(q pluginStatus) bool { return q.State == "ready" && q.Restarts >= 1 && q.Pid != p.Pid })
}

// TestContainmentLauncherSkipsTheNodesStartup: `alknet __plugin-exec`, the
// launcher every plugin start and restart runs, does its work before the
// node's heavy packages initialize (JSON Schema meta-schemas, gRPC,
// protobuf descriptors): Go's initialization trace of it shows none of
// them. Run with a parent pid that is not ours, it stops at that check
// and says why.
func TestContainmentLauncherSkipsTheNodesStartup(t *testing.T) {
	cmd := exec.Command(filepath.Join(binDir, "alknet"), "__plugin-exec", "-ppid", "1", "--", "alknet-plugin-none")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	bin, err := os.Open(filepath.Join(binDir, "alknet-plugin-echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	cmd.ExtraFiles = []*os.File{bin}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 126 || !strings.Contains(string(out), "[ERROR] plugin launcher: the node exited before its plugin started") {
		t.Fatalf("launcher: %v\n%s", err, out)
	}
	inits := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "init ") {
			continue
		}
		inits++
		for _, heavy := range []string{"github.com/santhosh-tekuri/jsonschema", "google.golang.org/grpc ", "google.golang.org/protobuf/reflect/protodesc", "github.com/tyler-smith/go-bip39", "alknet.dev/"} {
			if strings.HasPrefix(line, "init "+heavy) {
				t.Errorf("the launcher initialized %s first: %s", heavy, line)
			}
		}
	}
	if inits == 0 {
		t.Fatalf("no initialization trace (GODEBUG=inittrace=1):\n%s", out)
	}
}
