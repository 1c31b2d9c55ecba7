package pluginhost

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Plugin cgroups (docs/spec/plugins.md §9). Each plugin process runs in a
// cgroup of its own, <base>/alknet.<core pid>/<plugin>-<n>, where <base>
// is the core's own cgroup in the hierarchy that holds the controller:
// the plugin stays inside whatever limits the node itself runs under. Both
// layouts are supported, and a host may mix them ("hybrid"): cgroup v2
// (one hierarchy; the controllers a cgroup's children may use are the ones
// in its cgroup.subtree_control) and cgroup v1 (one hierarchy per
// controller, e.g. /sys/fs/cgroup/memory, /sys/fs/cgroup/cpu,
// /sys/fs/cgroup/pids). A controller bound to v1 is absent from v2's
// cgroup.controllers, so each controller is used where it is attached.
//
// This is written against the cgroup file interface directly: the
// libraries for it (runc's, containerd's) bring in far more than the few
// files written here, and would be the only new modules of the core.

// The controllers plugin limits use.
const (
	ctrlMemory = "memory"
	ctrlCPU    = "cpu"
	ctrlPids   = "pids"
)

var pluginControllers = []string{ctrlMemory, ctrlCPU, ctrlPids}

// cpuPeriod is the CFS period (µs) a CPU quota is expressed in.
const cpuPeriod = 100_000

// mount is one cgroup file system mount (from /proc/self/mountinfo).
type mount struct {
	point, root string
	v2          bool
	controllers []string // v1: the controllers bound to it
}

// parseMountinfo lists the cgroup mounts in a mountinfo file.
func parseMountinfo(data string) []mount {
	var out []mount
	for _, line := range strings.Split(data, "\n") {
		// id parent major:minor root point options [optional…] - fstype source superoptions
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 {
			continue
		}
		m := mount{root: unescapeMount(f[3]), point: unescapeMount(f[4])}
		switch g[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			for _, o := range strings.Split(g[2], ",") {
				if slices.Contains(pluginControllers, o) || o == "cpuacct" {
					m.controllers = append(m.controllers, o)
				}
			}
			if len(m.controllers) == 0 {
				continue
			}
		default:
			continue
		}
		out = append(out, m)
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, …).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup reads /proc/self/cgroup: the process's path in the v2
// hierarchy ("" if none) and, per v1 controller, in that hierarchy.
func parseProcCgroup(data string) (v2 string, v1 map[string]string) {
	v1 = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			v1[c] = parts[2]
		}
	}
	return v2, v1
}

// under joins a mount point and the process's cgroup path, which is
// relative to the hierarchy's root while the mount may show a subtree.
func under(m mount, path string) (string, bool) {
	rel, ok := strings.CutPrefix(path, m.root)
	if m.root == "/" {
		rel, ok = path, true
	}
	if !ok {
		return "", false
	}
	return filepath.Join(m.point, rel), true
}

// cgroupPlan says, per controller, in which directory plugin cgroups are
// created and whether that is a v2 hierarchy.
type cgroupPlan struct {
	v2Base string   // the core's v2 cgroup ("" if none)
	v2     []string // controllers available there
	v1     map[string]string
	why    []string // why a controller is unavailable
}

// planCgroups decides where each controller lives from the process's
// mountinfo and /proc/self/cgroup, reading v2's cgroup.controllers.
func planCgroups(mountinfo, procCgroup string) cgroupPlan {
	mounts := parseMountinfo(mountinfo)
	v2path, v1paths := parseProcCgroup(procCgroup)
	p := cgroupPlan{v1: map[string]string{}}
	for _, m := range mounts {
		if !m.v2 || v2path == "" || p.v2Base != "" {
			continue
		}
		base, ok := under(m, v2path)
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(base, "cgroup.controllers"))
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(b)) {
			if slices.Contains(pluginControllers, c) {
				p.v2 = append(p.v2, c)
			}
		}
		p.v2Base = base
	}
	for _, c := range pluginControllers {
		if slices.Contains(p.v2, c) {
			continue
		}
		for _, m := range mounts {
			if m.v2 || !slices.Contains(m.controllers, c) {
				continue
			}
			if own, ok := v1paths[c]; ok {
				if base, ok := under(m, own); ok {
					p.v1[c] = base
				}
			}
			break
		}
	}
	return p
}

// cgroups creates the cgroups of plugin processes. Made once per
// launcher; every method is safe for concurrent use.
type cgroups struct {
	// parent is, per controller, <base>/alknet.<pid> (absent: the
	// controller is not available); v2 marks the v2 ones.
	parent map[string]string
	v2     map[string]bool
	seq    atomic.Uint64
}

// setupCgroups prepares the parents of plugin cgroups for pid (the core)
// and removes those a previous core left behind. It returns what it could
// set up and, for each controller it could not, why.
func setupCgroups(p cgroupPlan, pid int) (*cgroups, map[string]string) {
	cg := &cgroups{parent: map[string]string{}, v2: map[string]bool{}}
	missing := map[string]string{}
	for _, c := range pluginControllers {
		missing[c] = "no cgroup hierarchy with this controller"
	}
	name := fmt.Sprintf("alknet.%d", pid)
	if len(p.v2) > 0 {
		parent := filepath.Join(p.v2Base, name)
		if err := setupV2(p.v2Base, parent, p.v2, pid); err != nil {
			for _, c := range p.v2 {
				missing[c] = err.Error()
			}
		} else {
			for _, c := range p.v2 {
				cg.parent[c], cg.v2[c] = parent, true
				delete(missing, c)
			}
		}
	}
	for c, base := range p.v1 {
		removeStaleCgroups(base)
		parent := filepath.Join(base, name)
		if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			missing[c] = fmt.Sprintf("cannot create %s: %v", parent, err)
			continue
		}
		cg.parent[c] = parent
		delete(missing, c)
	}
	return cg, missing
}

// setupV2 makes parent a v2 cgroup whose children may use controllers.
// Their parent (the core's own cgroup, base) must delegate them, and v2
// lets a non-root cgroup that delegates controllers hold no process: if
// the core is base's only process, it moves into a leaf of its own
// (base/alknet-core), as a delegated service does.
func setupV2(base, parent string, controllers []string, pid int) error {
	removeStaleCgroups(base)
	enable := "+" + strings.Join(controllers, " +")
	if err := writeCgroupFile(base, "cgroup.subtree_control", enable); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return err
		}
		procs, rerr := readPids(filepath.Join(base, "cgroup.procs"))
		if rerr != nil || len(procs) != 1 || procs[0] != pid {
			return fmt.Errorf("the node's cgroup %s holds other processes, so it cannot delegate controllers; run alknet in a cgroup of its own (e.g. a systemd service with Delegate=yes)", base)
		}
		leaf := filepath.Join(base, "alknet-core")
		if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cannot create %s: %w", leaf, err)
		}
		if err := writeCgroupFile(leaf, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
		if err := writeCgroupFile(base, "cgroup.subtree_control", enable); err != nil {
			return err
		}
	}
	if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cannot create %s: %w", parent, err)
	}
	return writeCgroupFile(parent, "cgroup.subtree_control", enable)
}

// removeStaleCgroups removes the empty plugin cgroups of cores that are
// gone (base/alknet.<pid> of a pid that no longer runs). Nothing is
// killed: a process still in one is alive, and could belong to a node in
// another pid namespace that shares this cgroup.
func removeStaleCgroups(base string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		s, ok := strings.CutPrefix(e.Name(), "alknet.")
		pid, err := strconv.Atoi(s)
		if !ok || err != nil || !e.IsDir() || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		dir := filepath.Join(base, e.Name())
		children, _ := os.ReadDir(dir)
		for _, c := range children {
			if c.IsDir() {
				_ = os.Remove(filepath.Join(dir, c.Name())) // fails unless empty
			}
		}
		_ = os.Remove(dir)
	}
}

// controllers lists the controllers plugin cgroups use, in a fixed order.
func (cg *cgroups) controllers() []string {
	var out []string
	for _, c := range pluginControllers {
		if _, ok := cg.parent[c]; ok {
			out = append(out, c)
		}
	}
	return out
}

// has reports whether controller c is available.
func (cg *cgroups) has(c string) bool {
	if cg == nil {
		return false
	}
	_, ok := cg.parent[c]
	return ok
}

// pluginCgroup is the cgroup (one directory per hierarchy) of one plugin
// process.
type pluginCgroup struct {
	dirs      []string // joined by the process: <dir>/cgroup.procs
	memoryDir string
	memoryV2  bool
}

// create makes the cgroup of one launch of plugin name and writes its
// limits. A limit of 0 is not written (unlimited).
func (cg *cgroups) create(name string, l Limits) (*pluginCgroup, error) {
	if cg == nil || len(cg.parent) == 0 {
		return nil, nil
	}
	leaf := fmt.Sprintf("%s-%d", name, cg.seq.Add(1))
	g := &pluginCgroup{}
	dirOf := map[string]string{} // parent → created dir
	for _, c := range cg.controllers() {
		parent := cg.parent[c]
		dir, ok := dirOf[parent]
		if !ok {
			dir = filepath.Join(parent, leaf)
			// MkdirAll: the parent again, should it have been removed.
			if err := os.MkdirAll(dir, 0o755); err != nil {
				g.remove()
				return nil, fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			dirOf[parent] = dir
			g.dirs = append(g.dirs, dir)
		}
		if err := writeLimit(dir, c, cg.v2[c], l); err != nil {
			g.remove()
			return nil, err
		}
		if c == ctrlMemory {
			g.memoryDir, g.memoryV2 = dir, cg.v2[c]
		}
	}
	return g, nil
}

// writeLimit writes controller c's limit in dir.
func writeLimit(dir, c string, v2 bool, l Limits) error {
	switch {
	case c == ctrlMemory && l.Memory > 0 && v2:
		if err := writeCgroupFile(dir, "memory.max", strconv.FormatInt(l.Memory, 10)); err != nil {
			return err
		}
		// No swapping past the limit, and an OOM kill takes the whole
		// plugin (its children too). Both files are optional.
		_ = writeCgroupFile(dir, "memory.swap.max", "0")
		_ = writeCgroupFile(dir, "memory.oom.group", "1")
	case c == ctrlMemory && l.Memory > 0:
		if err := writeCgroupFile(dir, "memory.limit_in_bytes", strconv.FormatInt(l.Memory, 10)); err != nil {
			return err
		}
		// memory+swap, present only with swap accounting: no swapping past
		// the limit either.
		_ = writeCgroupFile(dir, "memory.memsw.limit_in_bytes", strconv.FormatInt(l.Memory, 10))
	case c == ctrlCPU && l.CPU > 0 && v2:
		return writeCgroupFile(dir, "cpu.max", fmt.Sprintf("%d %d", cpuQuota(l.CPU), cpuPeriod))
	case c == ctrlCPU && l.CPU > 0:
		if err := writeCgroupFile(dir, "cpu.cfs_period_us", strconv.Itoa(cpuPeriod)); err != nil {
			return err
		}
		return writeCgroupFile(dir, "cpu.cfs_quota_us", strconv.FormatInt(cpuQuota(l.CPU), 10))
	case c == ctrlPids && l.Processes > 0:
		return writeCgroupFile(dir, "pids.max", strconv.Itoa(l.Processes))
	}
	return nil
}

// cpuQuota is the CFS quota (µs per period) of cpus CPUs.
func cpuQuota(cpus float64) int64 {
	return max(1000, int64(cpus*cpuPeriod+0.5))
}

// oomKills is how many times the kernel's OOM killer ended a process of
// the cgroup for its memory limit.
func (g *pluginCgroup) oomKills() int {
	if g == nil || g.memoryDir == "" {
		return 0
	}
	file := "memory.oom_control" // v1: "oom_kill N" since Linux 4.13
	if g.memoryV2 {
		file = "memory.events"
	}
	b, err := os.ReadFile(filepath.Join(g.memoryDir, file))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// remove kills whatever is left in the cgroup (children of the plugin)
// and removes it.
func (g *pluginCgroup) remove() {
	if g == nil {
		return
	}
	for _, d := range g.dirs {
		removeCgroup(d)
	}
}

// removeCgroup empties a cgroup and removes it. A cgroup can only be
// removed once no process is left in it; the processes are killed and the
// kernel takes a moment to account for them, hence the bounded retries.
func removeCgroup(dir string) {
	for range 100 {
		pids, _ := readPids(filepath.Join(dir, "cgroup.procs"))
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close removes the parents (the plugin cgroups are gone by then).
func (cg *cgroups) close() {
	if cg == nil {
		return
	}
	done := map[string]bool{}
	for _, p := range cg.parent {
		if !done[p] {
			done[p] = true
			_ = os.Remove(p)
		}
	}
}

func readPids(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

func writeCgroupFile(dir, name, value string) error {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}
