package pluginhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/proto/pluginpb"
)

// supervisor keeps one plugin running (docs/spec/plugins.md §6): it
// launches the selected version, restarts it with backoff after a crash,
// gives up after a crash loop, switches versions without downtime and
// applies reloaded settings. Routing connections to the current instance
// is route.go's; forwarding calls is forward.go's.
type supervisor struct {
	h    *Host
	name string
	log  hclog.Logger

	mu       sync.Mutex
	cur      *instance
	state    string
	version  string
	restarts int
	lastErr  string
	crashes  []time.Time
	gen      int    // restart generation of the running instance
	settings []byte // settings the running instance was configured with
	limits   Limits // limits the running instance was launched with
	refused  error  // why the last reload's settings were refused (nil: taken)
	alpns    []string
	claimed  []string // namespaces held in h.claims

	poke     chan struct{}
	waiters  []chan struct{} // closed once a poke sent after them is acted on
	acted    []chan struct{} // waiters of pokes taken; run's goroutine only
	stopCh   chan struct{}
	stopped  chan struct{}
	settled  chan struct{}
	settle   sync.Once
	stopOnce sync.Once
	remove   bool // on stop: drop operations and namespaces too
}

func newSupervisor(h *Host, name string) *supervisor {
	return &supervisor{h: h, name: name, log: h.log.Named(name), state: StateStarting,
		poke: make(chan struct{}, 1), stopCh: make(chan struct{}), stopped: make(chan struct{}), settled: make(chan struct{})}
}

func (s *supervisor) current() *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *supervisor) status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.name, Version: s.version, State: s.state, Restarts: s.restarts, Error: s.lastErr}
	if s.cur != nil {
		st.Protocol, st.Pid = s.cur.proc.Protocol(), s.cur.proc.Pid()
	}
	return st
}

func (s *supervisor) setState(state, errText string) {
	s.mu.Lock()
	s.state, s.lastErr = state, errText
	s.mu.Unlock()
	if state == StateReady || state == StateFailed {
		s.settle.Do(func() { close(s.settled) })
	}
	s.h.writeState()
}

func (s *supervisor) waitSettled(ctx context.Context) {
	select {
	case <-s.settled:
	case <-ctx.Done():
	}
}

// pokeIt asks the supervisor to act on a reload; the channel it returns
// is closed once it has (reconciled the running instance, or tried to
// start one), or has stopped.
func (s *supervisor) pokeIt() <-chan struct{} {
	done := make(chan struct{})
	s.mu.Lock()
	s.waiters = append(s.waiters, done)
	s.mu.Unlock()
	select {
	case s.poke <- struct{}{}:
	default: // a poke is pending: it is taken after this waiter was added
	}
	return done
}

// tookPoke is called by run's goroutine when it has received a poke: the
// poke answers the waiters of every poke sent before it (a pending poke
// stands for them all), released once its work is done (releaseActed).
func (s *supervisor) tookPoke() {
	s.mu.Lock()
	s.acted = append(s.acted, s.waiters...)
	s.waiters = nil
	s.mu.Unlock()
}

// releaseActed releases the waiters of the pokes taken so far; run calls
// it whenever it is about to wait for something to happen (an event, a
// poke, the end of a backoff), i.e. once the pokes' work is done.
func (s *supervisor) releaseActed() {
	s.mu.Lock()
	acted := s.acted
	s.acted = nil
	s.mu.Unlock()
	for _, w := range acted {
		close(w)
	}
}

// shutdown stops the plugin; with remove, its operations and namespaces
// go too (the plugin was removed or disabled).
func (s *supervisor) shutdown(remove bool) {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.remove = remove
		s.mu.Unlock()
		close(s.stopCh)
	})
	<-s.stopped
}

// fatal marks errors that a restart cannot fix.
type fatal struct{ error }

func (f fatal) Unwrap() error { return f.error }

// desired is the version and restart generation to run now.
func (s *supervisor) desired() (*Installed, int, error) {
	lock, err := s.h.catalog().Load()
	if err != nil {
		return nil, 0, err
	}
	inst, err := lock.Select(s.name, s.h.opts.Config(s.name).Version)
	if err != nil {
		return nil, 0, err
	}
	return inst, lock.Plugins[s.name].RestartGeneration, nil
}

// signatureProblem says why want may not run under cfg's signature rule.
func signatureProblem(cfg PluginConfig, want *Installed) string {
	if !cfg.RequireSignature {
		return ""
	}
	if want.Signer == "" {
		return fmt.Sprintf("plugins.require_signature is on and %s %s was installed without a signature; reinstall it with --signature", want.Name, want.Version)
	}
	if len(cfg.TrustedPublishers) > 0 && !slices.Contains(cfg.TrustedPublishers, want.Signer) {
		return fmt.Sprintf("plugins.require_signature is on and %s %s is signed by %s, which is not in plugins.trusted_publishers", want.Name, want.Version, want.Signer)
	}
	return ""
}

// start launches the desired version and checks what must hold before it
// may serve: protocol, signature, identity of the binary, required
// capabilities.
func (s *supervisor) start() (*instance, error) {
	want, gen, err := s.desired()
	if err != nil {
		return nil, fatal{err}
	}
	if !slices.ContainsFunc(want.ProtocolVersions, func(v int) bool { return slices.Contains(SupportedProtocols, v) }) {
		return nil, fatal{fmt.Errorf("plugin %s %s speaks core protocol %v; this alknet speaks %v", s.name, want.Version, want.ProtocolVersions, SupportedProtocols)}
	}
	cfg := s.h.opts.Config(s.name)
	if p := signatureProblem(cfg, want); p != "" {
		return nil, fatal{errors.New(p)}
	}
	settings := settingsOrEmpty(cfg.Settings)
	in, err := s.h.launch(s.name, want, settings, cfg.Limits)
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) || errors.As(err, &fatal{}) {
			return nil, fatal{err}
		}
		return nil, err
	}
	for _, c := range in.manifest.Capabilities {
		_, granted := cfg.Capabilities[c.Name]
		_, byDefault := s.h.opts.DefaultGrants[c.Name]
		if c.Required && !granted && !byDefault {
			in.stop(0)
			return nil, fatal{fmt.Errorf("plugin %s needs capability %q (%s): grant it in the config, e.g. [plugins.%s.capabilities] %s = \"credential:NAME\" (or vault:ed25519:PATH, file:PATH)", s.name, c.Name, c.Description, s.name, c.Name)}
		}
	}
	s.mu.Lock()
	s.gen, s.settings, s.limits, s.refused = gen, settings, cfg.Limits, nil
	s.mu.Unlock()
	return in, nil
}

func (s *supervisor) run() {
	defer func() {
		s.tookPoke() // a poke that came too late is answered by the stop
		s.releaseActed()
		close(s.stopped)
	}()
	backoff := backoffMin
	var in *instance
	var startedAt time.Time
	for {
		if in == nil {
			if s.status().State == StateFailed {
				s.releaseActed()
				select {
				case <-s.poke:
					s.tookPoke()
					s.mu.Lock()
					s.crashes = nil
					s.mu.Unlock()
					backoff = backoffMin
				case <-s.stopCh:
					s.stop(nil)
					return
				}
			}
			next, err := s.start()
			if err != nil {
				var f fatal
				if errors.As(err, &f) || s.recordCrash() {
					s.log.Error("plugin not started", "error", err)
					s.setState(StateFailed, err.Error())
					continue
				}
				s.log.Warn("plugin start failed; retrying", "error", err, "backoff", backoff.String())
				s.setState(StateRestarting, err.Error())
				if !s.sleep(backoff) {
					s.stop(nil)
					return
				}
				backoff = min(2*backoff, backoffMax)
				continue
			}
			in, startedAt = next, time.Now()
			if err := s.activate(in); err != nil {
				in.stop(0)
				in = nil
				s.log.Error("plugin not started", "error", err)
				s.setState(StateFailed, err.Error())
				continue
			}
		}
		s.releaseActed()
		select {
		case <-in.exited:
			s.logExit(in)
			s.deactivate(in, fmt.Sprintf("plugin %s unavailable", s.name))
			in.stop(0)
			in = nil
			if time.Since(startedAt) > healthyReset {
				backoff = backoffMin
			}
			s.mu.Lock()
			s.restarts++
			s.mu.Unlock()
			if s.recordCrash() {
				s.log.Error("plugin crashed more than 5 times in 60s; marked failed until `alknet plugin restart` or a reload", "name", s.name)
				s.setState(StateFailed, "crash loop: more than 5 crashes in 60s")
				continue
			}
			s.setState(StateRestarting, "process exited")
			if !s.sleep(backoff) {
				s.stop(nil)
				return
			}
			backoff = min(2*backoff, backoffMax)
		case <-s.poke:
			s.tookPoke()
			next, ok := s.reconcile(in)
			if ok {
				in, startedAt = next, time.Now()
			} else if next == nil {
				in = nil // stopped (signature): wait for the next poke
			}
		case <-s.stopCh:
			s.stop(in)
			return
		}
	}
}

// reconcile brings the running instance in line with the lock file and
// the configuration after a reload: a refused signature stops it; a new
// version or restart generation is switched to without downtime; changed
// settings are configured live, or by a switch when the plugin cannot
// apply them live. It returns the instance to keep running and whether it
// is a new one; (nil, false) means the plugin was stopped.
func (s *supervisor) reconcile(in *instance) (*instance, bool) {
	want, gen, err := s.desired()
	if err != nil {
		s.log.Error("plugin reload", "error", err)
		return in, false
	}
	cfg := s.h.opts.Config(s.name)
	if p := signatureProblem(cfg, want); p != "" {
		s.log.Error("plugin stopped: it is not signed as the configuration now requires", "name", s.name, "version", want.Version, "reason", p)
		s.deactivate(in, "plugin stopped")
		in.stop(2 * time.Second)
		s.setState(StateFailed, p)
		return nil, false
	}
	settings := settingsOrEmpty(cfg.Settings)
	s.mu.Lock()
	// New limits take a new process: the running one keeps its own until
	// the switch.
	sameBinary := want.Version == in.version && gen == s.gen && cfg.Limits == s.limits
	sameSettings := bytes.Equal(settings, s.settings)
	newLimits := cfg.Limits != s.limits
	s.mu.Unlock()
	if newLimits && want.Version == in.version && gen == s.gen {
		s.log.Info("plugin restarts to apply its new limits", "version", in.version)
	}
	if sameBinary && sameSettings {
		// The same settings go to the plugin again: they may name files
		// (zone files, directories) that a reload is expected to read
		// anew, as operators know it from other servers.
		err := s.h.configure(in, settings, 0)
		s.mu.Lock()
		s.refused = nil
		if err != nil {
			s.refused = fmt.Errorf("plugin %s refused its settings on this reload: %s", s.name, status.Convert(err).Message())
		}
		s.mu.Unlock()
		if err != nil {
			s.log.Error("plugin refused its settings on this reload; it keeps what it runs with", "error", status.Convert(err).Message())
		}
		return in, false
	}
	if sameBinary {
		err := s.h.configure(in, settings, 0)
		if err == nil {
			s.mu.Lock()
			s.settings, s.refused = settings, nil
			s.mu.Unlock()
			s.log.Info("plugin settings applied", "version", in.version)
			return in, false
		}
		if status.Code(err) != codes.FailedPrecondition {
			s.log.Error("plugin refused the new settings; it keeps the running ones", "error", err)
			s.mu.Lock()
			s.refused = fmt.Errorf("plugin %s refused its new settings: %s", s.name, status.Convert(err).Message())
			s.mu.Unlock()
			return in, false
		}
		s.log.Info("plugin restarts to apply its new settings", "version", in.version)
	}
	s.mu.Lock()
	runningGen, runningSettings, runningLimits := s.gen, s.settings, s.limits
	s.mu.Unlock()
	next, err := s.start()
	if err == nil {
		if err = s.activate(next); err != nil {
			next.stop(0)
		}
	}
	if err != nil {
		s.log.Error("plugin switch failed; the running version stays", "to", want.Version, "error", err)
		s.mu.Lock()
		s.gen, s.settings, s.limits = runningGen, runningSettings, runningLimits
		s.refused = fmt.Errorf("plugin %s: the switch to %s failed, %s keeps serving: %w", s.name, want.Version, in.version, err)
		s.mu.Unlock()
		return in, false
	}
	if in.version != next.version {
		s.log.Info("plugin switched; the previous process drains", "from", in.version, "to", next.version)
	} else {
		s.log.Info("plugin restarted; the previous process drains", "version", next.version)
	}
	s.h.wg.Add(1)
	go func() {
		defer s.h.wg.Done()
		s.retire(in)
	}()
	return next, true
}

// logExit says that in's process exited and, when its launcher knows,
// why: a plugin killed for its memory limit is named as such.
func (s *supervisor) logExit(in *instance) {
	why := ""
	if r, ok := in.proc.(interface{ ExitReason() string }); ok {
		why = r.ExitReason()
	}
	switch {
	case strings.Contains(why, "memory limit"):
		s.log.Error("plugin process exited: "+why+"; it is restarted as after a crash and its connections are closed with code 2", "version", in.version)
	case why != "":
		s.log.Error("plugin process exited; its connections are closed with code 2", "version", in.version, "status", why)
	default:
		s.log.Error("plugin process exited; its connections are closed with code 2", "version", in.version)
	}
}

// stop ends the supervision: in (if any) is drained from routing and
// stopped; a removed plugin also loses its operations and namespaces.
func (s *supervisor) stop(in *instance) {
	if in != nil {
		s.deactivate(in, "shutdown")
		in.stop(2 * time.Second)
	}
	s.mu.Lock()
	remove := s.remove
	s.mu.Unlock()
	if remove {
		s.h.opts.Registry.RemoveOwned(owner(s.name))
		s.h.release(s.name)
	}
	s.setState(StateStopped, "")
}

// sleep waits out a restart backoff: false if the supervisor is to stop.
// A reload ends it early (the operator may have fixed what failed).
func (s *supervisor) sleep(d time.Duration) bool {
	s.releaseActed()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.poke:
		s.tookPoke()
		return true
	case <-s.stopCh:
		return false
	}
}

// recordCrash notes a crash and reports a crash loop.
func (s *supervisor) recordCrash() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.crashes = append(s.crashes, now)
	s.crashes = slices.DeleteFunc(s.crashes, func(t time.Time) bool { return now.Sub(t) > crashWindow })
	return len(s.crashes) > crashLoopMax
}

// activate routes new connections and calls to in: its namespaces are
// claimed, its operations replace the plugin's previous ones (and only
// those), its ALPNs are registered. Anything owned by the core or another
// plugin is refused, naming both owners, and nothing changes.
func (s *supervisor) activate(in *instance) error {
	ep, reg := s.h.opts.Endpoint, s.h.opts.Registry
	if err := s.h.claim(s.name, in.manifest.Namespaces); err != nil {
		return err
	}
	regs := make([]call.Registration, 0, len(in.manifest.Operations))
	for _, op := range in.manifest.Operations {
		regs = append(regs, s.forwarder(op))
	}
	if err := reg.SetOwned(owner(s.name), regs); err != nil {
		return err
	}
	s.mu.Lock()
	oldALPNs := s.alpns
	s.mu.Unlock()
	for _, a := range in.manifest.Alpns {
		if slices.Contains(oldALPNs, a) {
			continue
		}
		if err := ep.Register(a, owner(s.name), route{s}); err != nil {
			for _, done := range in.manifest.Alpns {
				if !slices.Contains(oldALPNs, done) && done != a {
					ep.Unregister(done, owner(s.name))
				}
			}
			return err
		}
	}
	for _, a := range oldALPNs {
		if !slices.Contains(in.manifest.Alpns, a) {
			ep.Unregister(a, owner(s.name))
		}
	}
	s.mu.Lock()
	s.cur, s.version, s.alpns = in, in.version, slices.Clone(in.manifest.Alpns)
	s.mu.Unlock()
	s.log.Info("plugin ready", "version", in.version, "protocol", in.proc.Protocol(), "alpns", fmt.Sprint(in.manifest.Alpns), "pid", in.proc.Pid())
	s.setState(StateReady, "")
	return nil
}

// deactivate stops routing to in and closes its connections (code 2).
// Operations stay registered and answer "plugin … unavailable".
func (s *supervisor) deactivate(in *instance, reason string) {
	s.mu.Lock()
	if s.cur == in {
		s.cur = nil
		for _, a := range s.alpns {
			s.h.opts.Endpoint.Unregister(a, owner(s.name))
		}
		s.alpns = nil
		// Never report "ready" without a running instance: the state
		// changes with the routing, not after the cleanup that follows.
		if s.state == StateReady {
			s.state = StateRestarting
		}
	}
	s.mu.Unlock()
	in.closeAll(reason)
}

// retire lets a replaced instance finish its connections, then stops it.
func (s *supervisor) retire(old *instance) {
	deadline := time.Now().Add(s.h.opts.DrainTimeout)
	for time.Now().Before(deadline) && !old.idle() {
		select {
		case <-old.ctx.Done():
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}
	old.closeAll("plugin upgraded")
	old.stop(2 * time.Second)
	s.log.Info("previous plugin process stopped", "version", old.version)
}

// socketDir is where plugin sockets live: private (0700), so that without
// AutoMTLS no other local user can reach them.
func (h *Host) socketDir() string {
	if h.opts.Store == nil {
		return ""
	}
	return filepath.Join(h.opts.Store.Dir(), "run")
}

// launch starts version want of plugin name, reads its manifest and
// configures it: the instance is ready for activation.
func (h *Host) launch(name string, want *Installed, settings []byte, limits Limits) (*instance, error) {
	log := h.log.Named(name)
	spec := LaunchSpec{Name: name, Version: want.Version, SHA256: want.SHA256, MTLS: h.opts.MTLS, SocketDir: h.socketDir(),
		Limits: limits, RunAs: h.runAs, Log: log}
	if h.opts.Store != nil {
		spec.Binary = h.opts.Store.BinaryPath(name, want.Version)
	}
	proc, err := h.launcher().Launch(context.Background(), spec)
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithCancel(context.Background())
	in := &instance{proc: proc, pc: proc.Plugin(), log: log, ctx: ictx, cancel: cancel, exited: make(chan struct{})}
	fail := func(err error) (*instance, error) {
		in.stop(0)
		return nil, err
	}
	dctx, dcancel := context.WithTimeout(ictx, 10*time.Second)
	defer dcancel()
	m, err := in.pc.Describe(dctx, &pluginpb.Empty{})
	if err != nil {
		return fail(fmt.Errorf("describe: %w", err))
	}
	if err := ValidateManifest(m); err != nil {
		return fail(fatal{err})
	}
	if m.Name != name || (want.Version != "" && m.Version != want.Version) {
		return fail(fatal{fmt.Errorf("binary for %s@%s reports %s@%s; reinstall it", name, want.Version, m.Name, m.Version)})
	}
	in.manifest, in.name, in.version = m, m.Name, m.Version
	hostID, err := proc.ServeHost(&hostService{h: h, in: in})
	if err != nil {
		return fail(err)
	}
	if err := h.configure(in, settings, hostID); err != nil {
		if c := status.Code(err); c == codes.InvalidArgument || c == codes.FailedPrecondition {
			// The plugin refused its settings: a restart cannot help.
			return fail(fatal{fmt.Errorf("plugin %s refused its settings: %s", name, status.Convert(err).Message())})
		}
		return fail(fmt.Errorf("configure: %w", err))
	}
	if in.mux, err = newCallMux(ictx, in.pc); err != nil {
		return fail(fmt.Errorf("open the call stream: %w", err))
	}
	go in.watch(h.health)
	return in, nil
}

// configure sends settings to in (hostID 0: a reload).
func (h *Host) configure(in *instance, settings []byte, hostID uint32) error {
	ctx, cancel := context.WithTimeout(in.ctx, 10*time.Second)
	defer cancel()
	dir, err := h.stateDir(in.name)
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	_, err = in.pc.Configure(ctx, &pluginpb.ConfigureRequest{Settings: settings, Node: h.opts.Node, HostBrokerId: hostID, StateDir: dir})
	return err
}

// stateDir creates the state directory of plugin name (mode 0700, owned by
// the user it runs as) and returns its path; "" when the node keeps none.
func (h *Host) stateDir(name string) (string, error) {
	if h.opts.StateDir == nil {
		return "", nil
	}
	dir, err := h.opts.StateDir(name)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create the state directory of plugin %s: %w", name, err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return "", fmt.Errorf("state directory %s of plugin %s is not a directory; move it away", dir, name)
	}
	if h.runAs != nil {
		if err := os.Chown(dir, h.runAs.UID, h.runAs.GID); err != nil {
			return "", fmt.Errorf("hand the state directory %s to plugins.user %s: %w", dir, h.runAs.Name, err)
		}
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return "", fmt.Errorf("make the state directory %s private: %w", dir, err)
		}
	}
	return dir, nil
}
