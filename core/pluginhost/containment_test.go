package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// Containment of plugin processes (docs/spec/plugins.md §2, §9): what can
// be checked without starting one. integration/containment_test.go runs
// real plugins under real limits.

// The launcher checks the digest of the file it opened and executes that
// open file: replacing the path after the check does not change what the
// returned file holds; a symlink is not followed; a wrong digest names
// both.
func TestOpenVerifiedHoldsTheCheckedFile(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "alknet-plugin-x")
	good := []byte("the verified plugin")
	if err := os.WriteFile(bin, good, 0o700); err != nil {
		t.Fatal(err)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(good))
	f, err := openVerified(bin, sum)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("another binary"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, bin); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64)
	n, _ := f.ReadAt(got, 0)
	if string(got[:n]) != string(good) {
		t.Fatalf("the open file holds %q after the path was replaced, want the verified %q", got[:n], good)
	}

	var ve *VerifyError
	if _, err := openVerified(bin, sum); !errors.As(err, &ve) || !strings.Contains(err.Error(), sum) || !strings.Contains(err.Error(), bin) {
		t.Fatalf("replaced binary: %v", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	if _, err := openVerified(link, sum); err == nil || !errors.Is(err, syscall.ELOOP) {
		t.Fatalf("a symlink was followed: %v", err)
	}
}

// Without AutoMTLS the socket directory must be the node user's and
// closed to everyone else; the refusal names the directory and the fix.
func TestPrivateSocketDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := ensureDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := privateSocketDir(dir); err != nil {
		t.Fatalf("0700 directory of the node's user: %v", err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	err := privateSocketDir(dir)
	if err == nil || !strings.Contains(err.Error(), "chmod 700 "+dir) || !strings.Contains(err.Error(), "plugins.mtls = false") || !strings.Contains(err.Error(), "0750") {
		t.Fatalf("0750 directory: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := privateSocketDir(dir); err == nil || !strings.Contains(err.Error(), "chown ") || !strings.Contains(err.Error(), "is owned by") {
			t.Fatalf("directory of another user: %v", err)
		}
	}
}

// Start empties the socket directory of what a previous run left, and
// without AutoMTLS refuses a directory others can reach.
func TestStartClearsAndChecksSocketDir(t *testing.T) {
	store := OpenStore(filepath.Join(t.TempDir(), "plugins"))
	run := filepath.Join(store.Dir(), "run")
	if err := os.MkdirAll(filepath.Join(run, "plugin-dir1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, "plugin-dir1", "plugin2"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	h := New(Options{Store: store, MTLS: true, Registry: call.NewRegistry(nil)})
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.Shutdown()
	if left, _ := os.ReadDir(run); len(left) != 0 {
		t.Fatalf("left in %s: %v", run, left)
	}
	if err := os.Chmod(run, 0o755); err != nil {
		t.Fatal(err)
	}
	h = New(Options{Store: store, MTLS: false, Registry: call.NewRegistry(nil)})
	if err := h.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "chmod 700 "+run) {
		t.Fatalf("start without AutoMTLS on a 0755 socket directory: %v", err)
	}
	h.Shutdown()
}

// mountinfo lines for a fake cgroup file system rooted at root.
func mountLine(id int, point, root, fstype, super string) string {
	return fmt.Sprintf("%d 1 0:%d %s %s rw,relatime - %s %s rw,%s", id, id, root, point, fstype, fstype, super)
}

func mkfile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cgroup v1, as on hosts that mount each controller at
// /sys/fs/cgroup/<controller> (cpu and cpuacct together, or apart) next to
// an empty v2 hierarchy at /sys/fs/cgroup/unified: each plugin gets a
// cgroup in each controller's hierarchy, under the core's own cgroup
// there, with the limits written in v1's files; cgroups of a core that is
// gone are removed.
func TestCgroupV1Hybrid(t *testing.T) {
	fs := t.TempDir()
	mi := strings.Join([]string{
		mountLine(30, fs, "/", "tmpfs", "mode=755"),
		mountLine(31, filepath.Join(fs, "cpu,cpuacct"), "/", "cgroup", "cpu,cpuacct"),
		mountLine(34, filepath.Join(fs, "memory"), "/", "cgroup", "memory"),
		mountLine(38, filepath.Join(fs, "pids"), "/", "cgroup", "pids"),
		mountLine(40, filepath.Join(fs, "unified"), "/", "cgroup2", "nsdelegate"),
	}, "\n")
	pc := "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/\n0::/\n"
	mkfile(t, filepath.Join(fs, "unified", "cgroup.controllers"), "")
	mkfile(t, filepath.Join(fs, "memory", "process_api", "abc", "memory.limit_in_bytes"), "")
	mkfile(t, filepath.Join(fs, "cpu,cpuacct", "cpu.cfs_quota_us"), "-1")
	mkfile(t, filepath.Join(fs, "pids", "cgroup.procs"), "")
	// A cgroup of a core that is gone (no such pid).
	stale := filepath.Join(fs, "pids", "alknet.4194399")
	if err := os.MkdirAll(filepath.Join(stale, "echo-1"), 0o755); err != nil {
		t.Fatal(err)
	}

	p := planCgroups(mi, pc)
	if len(p.v2) != 0 || p.v1[ctrlMemory] != filepath.Join(fs, "memory", "process_api", "abc") || p.v1[ctrlCPU] != filepath.Join(fs, "cpu,cpuacct") || p.v1[ctrlPids] != filepath.Join(fs, "pids") {
		t.Fatalf("plan %+v", p)
	}
	cg, missing := setupCgroups(p, 4242)
	if len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Fatalf("%s of a core that is gone is still there", stale)
	}
	g, err := cg.create("hog", Limits{Memory: 64 << 20, CPU: 0.5, Processes: 100, OpenFiles: 1000})
	if err != nil {
		t.Fatal(err)
	}
	mem := filepath.Join(fs, "memory", "process_api", "abc", "alknet.4242", "hog-1")
	cpu := filepath.Join(fs, "cpu,cpuacct", "alknet.4242", "hog-1")
	pids := filepath.Join(fs, "pids", "alknet.4242", "hog-1")
	if fmt.Sprint(g.dirs) != fmt.Sprint([]string{mem, cpu, pids}) {
		t.Fatalf("cgroups %v", g.dirs)
	}
	for path, want := range map[string]string{
		filepath.Join(mem, "memory.limit_in_bytes"): "67108864",
		filepath.Join(cpu, "cpu.cfs_period_us"):     "100000",
		filepath.Join(cpu, "cpu.cfs_quota_us"):      "50000",
		filepath.Join(pids, "pids.max"):             "100",
	} {
		if got := readTrim(t, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}
	mkfile(t, filepath.Join(mem, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	if n := g.oomKills(); n != 1 {
		t.Fatalf("oom kills %d, want 1", n)
	}
	if g2, _ := cg.create("hog", Limits{}); len(g2.dirs) != 3 || !strings.HasSuffix(g2.dirs[0], "hog-2") {
		t.Fatalf("second launch: %v", g2.dirs)
	}
}

// cgroup v2: one cgroup per plugin under <the core's cgroup>/alknet.<pid>,
// the controllers delegated down to it, the limits in v2's files.
func TestCgroupV2(t *testing.T) {
	fs := t.TempDir()
	mi := mountLine(30, fs, "/", "cgroup2", "nsdelegate,memory_recursiveprot")
	pc := "0::/system.slice/alknet.service\n"
	base := filepath.Join(fs, "system.slice", "alknet.service")
	mkfile(t, filepath.Join(base, "cgroup.controllers"), "cpuset cpu io memory pids\n")
	p := planCgroups(mi, pc)
	if p.v2Base != base || fmt.Sprint(p.v2) != "[cpu memory pids]" || len(p.v1) != 0 {
		t.Fatalf("plan %+v", p)
	}
	cg, missing := setupCgroups(p, 4242)
	if len(missing) != 0 {
		t.Fatalf("missing %v", missing)
	}
	parent := filepath.Join(base, "alknet.4242")
	for _, f := range []string{filepath.Join(base, "cgroup.subtree_control"), filepath.Join(parent, "cgroup.subtree_control")} {
		if got := readTrim(t, f); got != "+cpu +memory +pids" {
			t.Errorf("%s = %q", f, got)
		}
	}
	g, err := cg.create("echo", Limits{Memory: 1 << 30, CPU: 1.5, Processes: 256})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "echo-1")
	if fmt.Sprint(g.dirs) != fmt.Sprint([]string{dir}) {
		t.Fatalf("cgroups %v", g.dirs)
	}
	for name, want := range map[string]string{"memory.max": "1073741824", "memory.swap.max": "0", "memory.oom.group": "1", "cpu.max": "150000 100000", "pids.max": "256"} {
		if got := readTrim(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	mkfile(t, filepath.Join(dir, "memory.events"), "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\n")
	if n := g.oomKills(); n != 2 {
		t.Fatalf("oom kills %d, want 2", n)
	}
}

// A hierarchy mounted from a subtree (a container's view) maps the
// process's cgroup path under the mount; no hierarchy: nothing is used,
// and each limit says why.
func TestCgroupMountRootsAndNone(t *testing.T) {
	if got, ok := under(mount{point: "/sys/fs/cgroup/memory", root: "/docker/abc"}, "/docker/abc/sub"); !ok || got != "/sys/fs/cgroup/memory/sub" {
		t.Fatalf("under a subtree mount: %q %v", got, ok)
	}
	if _, ok := under(mount{point: "/sys/fs/cgroup/memory", root: "/docker/abc"}, "/elsewhere"); ok {
		t.Fatal("a cgroup outside the mounted subtree was mapped")
	}
	cg, missing := setupCgroups(planCgroups("", ""), 1)
	if len(cg.controllers()) != 0 || len(missing) != 3 {
		t.Fatalf("no hierarchy: %v, missing %v", cg.controllers(), missing)
	}
	if g, err := cg.create("x", Limits{Memory: 1 << 30}); g != nil || err != nil {
		t.Fatalf("create without cgroups: %v %v", g, err)
	}
}

// fastHealth makes health checks quick for tests.
var fastHealth = healthPolicy{every: 20 * time.Millisecond, timeout: 200 * time.Millisecond, failures: 3, stuckAfter: 150 * time.Millisecond}

// A plugin that leaves calls the core aborted unanswered has stopped
// making progress: its health checks fail and it is restarted, as after a
// crash, and the new process serves.
func TestHealthRestartsPluginLeavingAbortedCallsUnanswered(t *testing.T) {
	release := make(chan struct{})
	p := &rawPlugin{manifest: manifest("echo", "echo/say")}
	p.call = func(_ context.Context, _ uint64, r *pluginpb.InvokeRequest) (*pluginpb.InvokeResult, error) {
		if string(r.Input) == `"stuck"` {
			<-release // ignores the abort
		}
		return &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: r.Input}, nil
	}
	th := newTestHost(t, p)
	t.Cleanup(func() { close(release) })
	th.h.health = fastHealth
	th.start()
	th.waitState("echo", StateReady, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, cerr := th.reg.Invoke(ctx, call.Invocation{Name: "echo/say", Input: json.RawMessage(`"stuck"`), RequestID: "r"}, nil)
	cancel()
	if cerr == nil {
		t.Fatal("the stuck call answered")
	}
	th.waitState("echo", StateReady, func(s Status) bool { return s.Restarts == 1 })
	if out, err := th.call("echo/say", `"again"`, nil); err != nil || string(out) != `"again"` {
		t.Fatalf("echo/say after the restart: %s %v", out, err)
	}
}

// slowHealth is a plugin whose Health never answers (hung) once hung.
type slowHealth struct {
	*rawPlugin
	hung    chan struct{}
	release chan struct{}
}

func (p *slowHealth) Health(ctx context.Context, e *pluginpb.Empty) (*pluginpb.HealthResponse, error) {
	select {
	case <-p.hung:
		select {
		case <-p.release:
		case <-ctx.Done():
		}
		return nil, ctx.Err()
	default:
		return p.rawPlugin.Health(ctx, e)
	}
}

// A plugin that stops answering Health in time is restarted.
func TestHealthRestartsPluginNotAnsweringHealth(t *testing.T) {
	p := &rawPlugin{manifest: manifest("echo", "echo/say")}
	th := newTestHost(t, p)
	sh := &slowHealth{rawPlugin: p, hung: make(chan struct{}), release: make(chan struct{})}
	t.Cleanup(func() { close(sh.release) })
	th.launcher["echo"] = &inProcessLauncher{newServer: func(dial pluginrpc.HostDialer) pluginpb.PluginServer {
		p.mu.Lock()
		p.dial = dial
		p.mu.Unlock()
		return sh
	}}
	th.h.health = fastHealth
	th.start()
	th.waitState("echo", StateReady, nil)
	close(sh.hung)
	th.waitState("echo", StateReady, func(s Status) bool { return s.Restarts >= 1 })
}

// An aborted call counts as unanswered until the plugin ends it.
func TestCallMuxTracksUnansweredAborts(t *testing.T) {
	release := make(chan struct{})
	p := &rawPlugin{manifest: manifest("mux", "mux/echo")}
	p.call = func(_ context.Context, _ uint64, r *pluginpb.InvokeRequest) (*pluginpb.InvokeResult, error) {
		<-release
		return &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: r.Input}, nil
	}
	th := newTestHost(t, p)
	th.start()
	in := th.h.plugins["mux"].current()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- in.mux.call(ctx, 7, &pluginpb.InvokeRequest{Input: []byte(`1`)}, func(*pluginpb.InvokeResult) error { return nil })
	}()
	cancel()
	<-done
	if n, _ := in.mux.unanswered(); n != 1 {
		t.Fatalf("%d unanswered aborted calls, want 1", n)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, _ := in.mux.unanswered(); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the plugin's last result did not clear the aborted call")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// New limits in a reload reach the plugin through a new process, switched
// to without downtime (not counted as a crash).
func TestReloadWithNewLimitsRestartsThePlugin(t *testing.T) {
	p := &rawPlugin{manifest: manifest("echo", "echo/say")}
	th := newTestHost(t, p)
	th.setConfig("echo", PluginConfig{Limits: Limits{Memory: 1 << 30, CPU: 1}})
	th.start()
	th.waitState("echo", StateReady, nil)
	first := th.launcherOf("echo").Last()
	th.setConfig("echo", PluginConfig{Limits: Limits{Memory: 256 << 20, CPU: 1}})
	_ = th.h.Reload(tctx(t))
	s := th.h.plugins["echo"]
	switched := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cur != nil && s.cur.proc != first && s.limits.Memory == 256<<20 && s.state == StateReady
	}
	deadline := time.Now().Add(10 * time.Second)
	for !switched() {
		if time.Now().After(deadline) {
			t.Fatalf("no new process for the new limits: %+v", th.status("echo"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := th.status("echo"); st.Restarts != 0 {
		t.Fatalf("the switch counted as a crash: %+v", st)
	}
	if out, err := th.call("echo/say", `1`, nil); err != nil || string(out) != "1" {
		t.Fatalf("echo/say after the switch: %s %v", out, err)
	}
}
