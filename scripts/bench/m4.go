package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/identity"
)

// Plugins: a real `bin/alknet serve` process with the echo plugin
// (bin/alknet-plugin-echo, installed automatically from beside the binary)
// — the stream bridge against bare quic-go, plugin operations against an
// in-core operation of the same node, the plugin's cold start and restart
// after kill -9, and idle memory. Any other plugin in ./bin is disabled in
// each node's config, so the rows measure the echo plugin alone. `make
// bench` builds the binaries first; `go run ./scripts/bench` alone uses
// whatever ./bin holds. Each node runs in a temporary directory (data dir,
// config, XDG config home) removed when the row ends.
var m4 = []benchmark{
	echoPluginBench("echo-plugin", "", false),
	echoPluginBench("echo-plugin-nomtls", "[plugins]\nmtls = false\n", true),
	{
		Name: "echo-plugin-xproc", Area: "plugins", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.80,
		Description: "as echo-plugin (AutoMTLS on) against the bare quic-go echo run in a child process: the anchor's bytes cross a process boundary too (echo-plugin's cross two), so the ratio is what the core and the plugin hop cost beyond running the server as a process of its own",
		Rounds:      5, ShortRounds: 3,
		Subject: echoPluginBench("", "", false).Subject,
		Anchor:  variant{Label: "bare quic-go Listen + DialAddr, server in a child process", Start: startChildQUICEcho},
	},
	ipcFloor,
	pluginCallBench(),
	{
		Name: "plugin-cold-start", Area: "plugins", Unit: "ms", HigherIsBetter: false, Max: 150, Delta: true,
		Description: "launch `alknet serve` and wait for its dial string (printed once plugins are ready or failed): with the echo plugin minus with it disabled = the plugin's cold start (verify, exec, handshake, describe, configure)",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: "alknet serve, echo plugin enabled", Start: startColdStart("", true)},
		Anchor:  variant{Label: "alknet serve, echo plugin installed but [plugins.echo] disabled", Start: startColdStart("[plugins.echo]\ndisabled = true\n", false)},
	},
	{
		Name: "plugin-restart", Area: "plugins", Unit: "ms", HigherIsBetter: false, Max: 300,
		Description: "kill -9 the echo plugin process (pid from node/info) and retry new alknet/echo connections until a 1-byte echo succeeds; a fresh node per round, so each is the plugin's first crash (supervisor backoff 100 ms)",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: "alknet serve + echo plugin, supervisor restart", Start: startRestart},
		Anchor:  variant{Label: "none: the goal is absolute"},
	},
	{
		Name: "rss-idle-core", Area: "plugins", Unit: "MiB", HigherIsBetter: false, Informational: true,
		Description: "VmRSS of an idle `alknet serve` (echo plugin running, no traffic since start)",
		Rounds:      3, ShortRounds: 2,
		Subject: variant{Label: "alknet serve, /proc/PID/status VmRSS", Start: startRSS},
		Anchor:  variant{Label: "none (informational)"},
		Also: []companion{
			{Name: "rss-idle-plugin", Unit: "MiB", HigherIsBetter: false, Informational: true,
				Description: "VmRSS of that node's idle echo plugin process"},
		},
	},
}

// echoPluginBench is echo-quic through the echo plugin of a serve process
// run with config (TOML), against the bare quic-go echo.
func echoPluginBench(name, config string, info bool) benchmark {
	b := benchmark{
		Name: name, Area: "plugins", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.75,
		Description: "as echo-quic, served by the echo plugin: QUIC → alknet serve → gRPC (AutoMTLS, the default) → alknet-plugin-echo → back",
		Rounds:      5, ShortRounds: 5,
		Subject: variant{Label: "bin/alknet serve + echo plugin, dial.Dial (pinned)", Start: func(ctx context.Context, e *env) (*instance, error) {
			n, err := startNode(ctx, config)
			if err != nil {
				return nil, err
			}
			if _, err := n.echoStatus(ctx); err != nil {
				n.close()
				return nil, err
			}
			return throughput(e, alknetOpener(n.addr, n.fp, false), n.close), nil
		}},
		Anchor: variant{Label: "bare quic-go Listen + DialAddr", Start: func(ctx context.Context, e *env) (*instance, error) {
			srv, err := startQUICEcho(e.serverTLS())
			if err != nil {
				return nil, err
			}
			return throughput(e, quicOpener(srv.addr(), e.clientTLS()), srv.stop), nil
		}},
	}
	if info {
		b.Informational, b.Goal = true, 0.85
		b.Description = "as echo-plugin with [plugins] mtls = false (plain gRPC on the private plugin socket); docs/spec/plugins.md §3 target 0.85"
		b.Subject.Label = "bin/alknet serve (plugins.mtls = false) + echo plugin, dial.Dial (pinned)"
	}
	return b
}

// childRoleEnv names the server a child process of the bench runs
// (main); it is set only in that child's environment.
const childRoleEnv = "ALKNET_BENCH_CHILD"

// runChild serves role until its stdin closes (the bench stops it, or
// dies). "quic-echo": the bare quic-go echo of anchors.go with a key of its
// own, its address printed on stdout; "http-echo" and "grpc-gateway": the
// HTTP anchors of m11.go.
func runChild(role string) int {
	var addr string
	var stop func()
	switch role {
	case "quic-echo":
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			return 1
		}
		cert, err := identity.RawKeyTLSCertificate(key)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			return 1
		}
		srv, err := startQUICEcho((&env{cert: cert}).serverTLS())
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			return 1
		}
		addr, stop = srv.addr(), srv.stop
	case "go-ssh":
		srv, err := startGoSSHServer()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			return 1
		}
		addr, stop = srv.ln.Addr().String(), srv.stop
	case "grpc-pingpong":
		srv, err := startPingPongServer()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			return 1
		}
		addr, stop = srv.addr, srv.stop
	case "http-echo", "grpc-gateway":
		a, s, err := runHTTPAnchor(role)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			return 1
		}
		addr, stop = a, s
	default:
		file, ok := strings.CutPrefix(role, "quic-blob:")
		if !ok {
			fmt.Fprintf(os.Stderr, "bench: unknown child role %q\n", role)
			return 2
		}
		a, s, err := runBlobChild(file)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			return 1
		}
		addr, stop = a, s
	}
	fmt.Printf("listening %s\n", addr)
	_, _ = io.Copy(io.Discard, os.Stdin)
	stop()
	return 0
}

// startChild runs this executable as the server of role (runChild), with
// env added to its environment, and returns the address it listens on and
// how to stop it.
func startChild(role string, env ...string) (addr string, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), childRoleEnv+"="+role), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		stop()
		return "", nil, fmt.Errorf("bench child %s printed %q: %v", role, line, err)
	}
	return addr, stop, nil
}

// startChildQUICEcho runs the bare quic-go echo in a child process (this
// executable, runChild) and measures it like the in-process anchor.
func startChildQUICEcho(ctx context.Context, e *env) (*instance, error) {
	addr, stop, err := startChild("quic-echo")
	if err != nil {
		return nil, err
	}
	return throughput(e, quicOpener(addr, e.clientTLS()), stop), nil
}

// pluginCallBench calls echo/say (served by the plugin) and diag/say (in
// the core) on one node, each side on its own call connection: the row is
// what the plugin hop adds to a call's p50.
func pluginCallBench() benchmark {
	shared := &sharedNode{config: "", args: []string{"--enable-diag"}}
	side := func(op string) func(ctx context.Context, e *env) (*instance, error) {
		return func(ctx context.Context, e *env) (*instance, error) {
			n, err := shared.acquire(ctx)
			if err != nil {
				return nil, err
			}
			conn, err := connectCall(ctx, n.addr, n.fp)
			if err != nil {
				shared.release()
				return nil, err
			}
			in := sequential(e, &caller{
				one: func(ctx context.Context) error {
					out, err := conn.Call(ctx, op, callInput)
					if err != nil {
						return err
					}
					return checkEcho(out)
				},
				stop: func() {
					_ = conn.Close()
					shared.release()
				},
			})
			also := in.Also
			in.Also = func() []float64 { return also()[:1] } // the p99; not calls/s
			return in, nil
		}
	}
	return benchmark{
		Name: "plugin-call-p50", Area: "plugins", Unit: "µs", HigherIsBetter: false, Delta: true,
		MaxTimes:    &relativeGoal{Row: "plugin-ipc-floor", Factor: 1.5},
		Description: "one sequential caller on one alknet/call connection: p50 of echo/say (plugin operation: core → gRPC Invoke → plugin) minus diag/say (in-core) on the same node, input " + string(callInput),
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: "echo/say (plugin) on alknet serve --enable-diag", Start: side("echo/say")},
		Anchor:  variant{Label: "diag/say (core) on the same node", Start: side("diag/say")},
		Also: []companion{
			{Name: "plugin-call-p99", Unit: "µs", HigherIsBetter: false, Delta: true, Informational: true,
				Description: "p99 of the plugin-call-p50 rounds: echo/say minus diag/say"},
		},
	}
}

// startColdStart prepares a data dir (vault, plugin installed) and times
// `alknet serve` from exec to its dial string, once per round.
func startColdStart(config string, withPlugin bool) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		h, err := newNodeHome(config)
		if err != nil {
			return nil, err
		}
		launch := func(ctx context.Context) (float64, error) {
			p, err := h.serve(ctx)
			if err != nil {
				return 0, err
			}
			defer p.stop()
			// Check what the dial string promised, outside the timing.
			plugins, err := nodePlugins(ctx, p.addr, p.fp)
			if err != nil {
				return 0, err
			}
			if withPlugin {
				if _, err := findEcho(plugins); err != nil {
					return 0, fmt.Errorf("%w\n%s", err, p.logs)
				}
			} else if len(plugins) != 0 {
				return 0, fmt.Errorf("plugins running although disabled: %+v", plugins)
			}
			return float64(p.ready) / float64(time.Millisecond), nil
		}
		// The first start creates the vault and installs the plugin.
		if _, err := launch(ctx); err != nil {
			h.remove()
			return nil, err
		}
		return &instance{
			Warmup:  func(ctx context.Context) error { _, err := launch(ctx); return err },
			Measure: launch,
			Stop:    h.remove,
		}, nil
	}
}

// startRestart measures, on a fresh node each round, the time from kill -9
// of the echo plugin to the next successful alknet/echo round trip.
func startRestart(ctx context.Context, e *env) (*instance, error) {
	h, err := newNodeHome("")
	if err != nil {
		return nil, err
	}
	measure := func(ctx context.Context) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		p, err := h.serve(ctx)
		if err != nil {
			return 0, err
		}
		defer p.stop()
		n := &node{proc: p, addr: p.addr, fp: p.fp}
		before, err := n.echoStatus(ctx)
		if err != nil {
			return 0, err
		}
		open := alknetOpener(p.addr, p.fp, false)
		if err := oneHandshake(ctx, open); err != nil {
			return 0, fmt.Errorf("echo before the kill: %w", err)
		}
		start := time.Now()
		if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
			return 0, fmt.Errorf("kill plugin pid %d: %w", before.Pid, err)
		}
		var last error
		for attempts := 0; ; attempts++ {
			actx, acancel := context.WithTimeout(ctx, time.Second)
			last = oneHandshake(actx, open)
			acancel()
			if last == nil {
				break
			}
			if ctx.Err() != nil || time.Since(start) > 10*time.Second {
				return 0, fmt.Errorf("no echo %s after the kill (%d attempts): %v\n%s", time.Since(start).Round(time.Millisecond), attempts, last, p.logs)
			}
			time.Sleep(2 * time.Millisecond)
		}
		elapsed := time.Since(start)
		after, err := n.echoStatus(ctx)
		if err != nil {
			return 0, err
		}
		if after.Pid == before.Pid || after.Restarts != before.Restarts+1 {
			return 0, fmt.Errorf("echo answered, but node/info shows pid %d → %d, restarts %d → %d", before.Pid, after.Pid, before.Restarts, after.Restarts)
		}
		return float64(elapsed) / float64(time.Millisecond), nil
	}
	return &instance{Measure: measure, Stop: h.remove}, nil
}

// startRSS starts a node and leaves it alone; each round reads VmRSS of
// the serve process and of its plugin process.
func startRSS(ctx context.Context, e *env) (*instance, error) {
	n, err := startNode(ctx, "")
	if err != nil {
		return nil, err
	}
	pid := n.proc.cmd.Process.Pid
	var plugin []float64
	return &instance{
		Warmup: func(ctx context.Context) error { return sleepCtx(ctx, 500*time.Millisecond) },
		Measure: func(ctx context.Context) (float64, error) {
			if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
				return 0, err
			}
			core, err := vmRSS(pid)
			if err != nil {
				return 0, err
			}
			kids := childPIDs(pid, "alknet-plugin-echo")
			if len(kids) != 1 {
				return 0, fmt.Errorf("want one alknet-plugin-echo child of pid %d, found %v", pid, kids)
			}
			p, err := vmRSS(kids[0])
			if err != nil {
				return 0, err
			}
			plugin = []float64{p}
			return core, nil
		},
		Also: func() []float64 { return plugin },
		Stop: n.close,
	}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// --- alknet serve processes ---

// binaries are ./bin/alknet and the echo plugin beside it, from the module
// root (`make bench` runs `make build` first).
func alknetBinary() (string, error) {
	bin := filepath.Join(moduleRoot(), "bin")
	for _, name := range []string{"alknet", "alknet-plugin-echo"} {
		if st, err := os.Stat(filepath.Join(bin, name)); err != nil || st.IsDir() {
			return "", fmt.Errorf("%s not found: run `make build` first (make bench does)", filepath.Join(bin, name))
		}
	}
	return filepath.Join(bin, "alknet"), nil
}

// otherPlugins are the names of the plugins beside ./bin/alknet other than
// echo (serve installs them all), from their manifests (`describe`).
var otherPlugins = sync.OnceValues(func() ([]string, error) {
	bin, err := alknetBinary()
	if err != nil {
		return nil, err
	}
	paths, _ := filepath.Glob(filepath.Join(filepath.Dir(bin), "alknet-plugin-*"))
	var names []string
	for _, p := range paths {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, p, "describe").Output()
		cancel()
		var m struct {
			Name string `json:"name"`
		}
		if err == nil {
			err = json.Unmarshal(out, &m)
		}
		if err != nil || m.Name == "" {
			return nil, fmt.Errorf("%s describe: %v (%q)", p, err, out)
		}
		if m.Name != "echo" {
			names = append(names, m.Name)
		}
	}
	return names, nil
})

// disabledExcept is a disabled table for each of others (otherPlugins)
// but those in keep: a bench node runs only the plugins its row measures.
func disabledExcept(others []string, keep ...string) string {
	var b strings.Builder
	for _, name := range others {
		if !slices.Contains(keep, name) {
			fmt.Fprintf(&b, "\n[plugins.%s]\ndisabled = true\n", name)
		}
	}
	return b.String()
}

// nodeHome is a temporary home for one node: its data dir, its config file
// and an empty XDG config home, so that nothing of the user's applies.
type nodeHome struct {
	root string
}

// newNodeHome is a home whose config is config (writeConfig): the rows
// that use it measure the echo plugin alone.
func newNodeHome(config string) (*nodeHome, error) {
	h, err := makeNodeHome()
	if err != nil {
		return nil, err
	}
	if err := h.writeConfig(config); err != nil {
		h.remove()
		return nil, err
	}
	return h, nil
}

// makeNodeHome makes an empty home, its XDG config home included.
func makeNodeHome() (*nodeHome, error) {
	root, err := os.MkdirTemp("", "alknet-bench-")
	if err != nil {
		return nil, err
	}
	h := &nodeHome{root: root}
	if err := os.MkdirAll(filepath.Join(root, "xdg"), 0o700); err != nil {
		h.remove()
		return nil, err
	}
	return h, nil
}

// writeConfig writes the node's config file: the bench's key as an admin
// (node/info shows plugins, their states and pids, only to such callers),
// then config, then a disabled table for every plugin built into ./bin
// but echo and those in keep, which must have been built.
func (h *nodeHome) writeConfig(config string, keep ...string) error {
	others, err := otherPlugins()
	if err != nil {
		return err
	}
	for _, k := range keep {
		if !slices.Contains(others, k) {
			return fmt.Errorf("no plugin in %s describes itself as %s: run `make build` first (make bench does)", filepath.Join(moduleRoot(), "bin"), k)
		}
	}
	config = fmt.Sprintf("[[auth.peers]]\npeer_id = \"bench\"\nfingerprints = [%q]\nscopes = [\"admin\"]\n\n", benchKey().fp) +
		config + disabledExcept(others, keep...)
	return os.WriteFile(h.configFile(), []byte(config), 0o600)
}

// startNodeIn serves h and waits until the plugins named in ready are; on
// failure the home is removed.
func startNodeIn(ctx context.Context, h *nodeHome, ready ...string) (*node, error) {
	p, err := h.serve(ctx)
	if err != nil {
		h.remove()
		return nil, err
	}
	n := &node{home: h, proc: p, fp: p.fp, addr: p.addr}
	if err := pluginsReady(ctx, n, ready...); err != nil {
		n.close()
		return nil, fmt.Errorf("%w\n%s", err, p.logs)
	}
	return n, nil
}

func (h *nodeHome) configFile() string { return filepath.Join(h.root, "alknet.toml") }
func (h *nodeHome) remove()            { _ = os.RemoveAll(h.root) }

// serveProc is a running `alknet serve`.
type serveProc struct {
	cmd      *exec.Cmd
	fp, addr string
	// ready is the time from exec to the dial string on stdout.
	ready   time.Duration
	logs    *logTail
	exited  chan struct{}
	exitErr error
}

var dialString = regexp.MustCompile(`alknet node (\S+)@(\S+)`)

// serve starts `alknet serve` on 127.0.0.1:0 in h and waits for its dial
// string.
func (h *nodeHome) serve(ctx context.Context, args ...string) (*serveProc, error) {
	bin, err := alknetBinary()
	if err != nil {
		return nil, err
	}
	full := append([]string{"--config", h.configFile(), "--data-dir", filepath.Join(h.root, "data"),
		"serve", "--listen", "127.0.0.1:0"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = nodeEnv(filepath.Join(h.root, "xdg"))
	// If the bench dies, so does the node (and its plugins with it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	p := &serveProc{cmd: cmd, logs: &logTail{}, exited: make(chan struct{})}
	type dial struct {
		fp, addr string
		at       time.Time
	}
	ready := make(chan dial, 1)
	cmd.Stdout = &lineWriter{tail: p.logs, line: func(s string) {
		if m := dialString.FindStringSubmatch(s); m != nil {
			select {
			case ready <- dial{m[1], m[2], time.Now()}:
			default:
			}
		}
	}}
	cmd.Stderr = &lineWriter{tail: p.logs}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		// Owned by p: ends when the process has exited.
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	select {
	case d := <-ready:
		p.fp, p.addr, p.ready = d.fp, d.addr, d.at.Sub(start)
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("alknet serve exited before its dial string: %v\n%s", p.exitErr, p.logs)
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, fmt.Errorf("alknet serve printed no dial string in 30 s:\n%s", p.logs)
	}
}

// stop asks the node to shut down (SIGTERM: drain, stop plugins) and waits;
// after 10 s it kills it.
func (p *serveProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// nodeEnv is the bench's environment without ALKNET_* settings, with the
// XDG config home pointed at xdg.
func nodeEnv(xdg string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ALKNET_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	return append(env, "XDG_CONFIG_HOME="+xdg)
}

// node is a serve process in a home of its own; close stops it and removes
// the home.
type node struct {
	home     *nodeHome
	proc     *serveProc
	fp, addr string
}

func startNode(ctx context.Context, config string, args ...string) (*node, error) {
	h, err := newNodeHome(config)
	if err != nil {
		return nil, err
	}
	p, err := h.serve(ctx, args...)
	if err != nil {
		h.remove()
		return nil, err
	}
	return &node{home: h, proc: p, fp: p.fp, addr: p.addr}, nil
}

func (n *node) close() {
	n.proc.stop()
	if n.home != nil {
		n.home.remove()
	}
}

// echoStatus is the echo plugin's entry in node/info; it must be ready.
func (n *node) echoStatus(ctx context.Context) (pluginStatus, error) {
	plugins, err := nodePlugins(ctx, n.addr, n.fp)
	if err != nil {
		return pluginStatus{}, err
	}
	st, err := findEcho(plugins)
	if err != nil {
		return st, fmt.Errorf("%w\n%s", err, n.proc.logs)
	}
	return st, nil
}

// sharedNode is one node used by both sides of a row: the first acquire
// starts it, the last release stops it.
type sharedNode struct {
	config string
	args   []string

	mu   sync.Mutex
	refs int
	n    *node
}

func (s *sharedNode) acquire(ctx context.Context) (*node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		n, err := startNode(ctx, s.config, s.args...)
		if err != nil {
			return nil, err
		}
		if _, err := n.echoStatus(ctx); err != nil {
			n.close()
			return nil, err
		}
		s.n = n
	}
	s.refs++
	return s.n, nil
}

func (s *sharedNode) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs--; s.refs == 0 {
		s.n.close()
		s.n = nil
	}
}

// pluginStatus is one entry of node/info's plugins.
type pluginStatus struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Pid      int    `json:"pid"`
	Restarts int    `json:"restarts"`
	Error    string `json:"error"`
}

// nodePlugins asks the node for node/info on a call connection of its own.
func nodePlugins(ctx context.Context, addr, fp string) ([]pluginStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := connectCall(ctx, addr, fp)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	out, err := conn.Call(ctx, "node/info", nil)
	if err != nil {
		return nil, fmt.Errorf("node/info: %w", err)
	}
	var info struct {
		Plugins []pluginStatus `json:"plugins"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return nil, fmt.Errorf("node/info: %w: %s", err, out)
	}
	return info.Plugins, nil
}

func findEcho(plugins []pluginStatus) (pluginStatus, error) {
	for _, p := range plugins {
		if p.Name == "echo" {
			if p.State != "ready" || p.Pid <= 0 {
				return p, fmt.Errorf("echo plugin is %s (pid %d): %s", p.State, p.Pid, p.Error)
			}
			return p, nil
		}
	}
	return pluginStatus{}, fmt.Errorf("node/info lists no echo plugin (%+v); is bin/alknet-plugin-echo built?", plugins)
}

// benchIdentity is the key the bench presents to the nodes it starts.
type benchIdentity struct {
	cert tls.Certificate
	fp   string
}

var benchKey = sync.OnceValue(newBenchIdentity)

// newBenchIdentity is a fresh key with its certificate.
func newBenchIdentity() benchIdentity {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	cert, err := identity.RawKeyTLSCertificate(key)
	if err != nil {
		panic(err)
	}
	return benchIdentity{cert: cert, fp: identity.KeyFingerprint(pub)}
}

// connectCall connects to the node's alknet/call with the bench's key
// (an admin of the bench's nodes), the node pinned.
func connectCall(ctx context.Context, addr, fp string) (*call.Connection, error) {
	cert := benchKey().cert
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return call.New(nil).Connect(ctx, addr, call.Credentials{TLS: &cert, Peer: fp})
}

// --- /proc ---

// vmRSS is VmRSS of pid in MiB.
func vmRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// childPIDs are the processes whose parent is ppid and whose executable is
// named exe.
func childPIDs(ppid int, exe string) []int {
	dirs, _ := os.ReadDir("/proc")
	var out []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(ppid) {
			continue
		}
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && filepath.Base(target) == exe {
			out = append(out, pid)
		}
	}
	return out
}

// --- process output ---

// process is an anchor's server process (sshd, git daemon, CoreDNS)
// started by startProcess: exited is closed once it has exited, err is then its
// exit error, and stop ends it — SIGTERM, SIGKILL after 10 s — signalling
// its process group when the command has one of its own.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

func startProcess(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		// Owned by stop: ends when the process has exited.
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *process) signal(sig syscall.Signal) {
	pid := c.cmd.Process.Pid
	if a := c.cmd.SysProcAttr; a != nil && a.Setpgid {
		pid = -pid
	}
	_ = syscall.Kill(pid, sig)
}

func (c *process) stop() {
	c.signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.signal(syscall.SIGKILL)
		<-c.exited
	}
}

// logTail keeps the last lines a process wrote, for error messages.
type logTail struct {
	mu    sync.Mutex
	lines []string
}

const logTailLines = 40

func (t *logTail) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, s)
	if len(t.lines) > logTailLines {
		t.lines = t.lines[len(t.lines)-logTailLines:]
	}
}

func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return indent(strings.Join(t.lines, "\n"))
}

// lineWriter splits what it is given into lines for tail and line.
type lineWriter struct {
	tail    *logTail
	line    func(string)
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		s := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		w.tail.add(s)
		if w.line != nil {
			w.line(s)
		}
	}
	if len(w.partial) > 64<<10 {
		w.tail.add(string(w.partial))
		w.partial = nil
	}
	return len(p), nil
}
