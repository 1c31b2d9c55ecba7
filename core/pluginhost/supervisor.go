package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
)

// supervisor keeps one plugin running: it launches the selected version,
// routes connections and calls to the current instance, restarts it with
// backoff after a crash, gives up after a crash loop, and switches versions
// without downtime.
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
	gen      int
	alpns    []string
	ops      []string

	poke     chan struct{}
	stopCh   chan struct{}
	stopped  chan struct{}
	settled  chan struct{}
	settle   sync.Once
	stopOnce sync.Once
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
		st.Protocol, st.Pid = s.cur.protocol, s.cur.pid
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

func (s *supervisor) pokeIt() {
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

func (s *supervisor) shutdown() {
	s.stopOnce.Do(func() { close(s.stopCh) })
	<-s.stopped
}

// fatal marks errors that a restart cannot fix.
type fatal struct{ error }

func (f fatal) Unwrap() error { return f.error }

// desired is the version and restart generation to run now.
func (s *supervisor) desired() (*Installed, int, error) {
	lock, err := s.h.opts.Store.Load()
	if err != nil {
		return nil, 0, err
	}
	inst, err := lock.Select(s.name, s.h.opts.Config(s.name).Version)
	if err != nil {
		return nil, 0, err
	}
	return inst, lock.Plugins[s.name].RestartGeneration, nil
}

// start launches the desired version and checks what must hold before it
// may serve: protocol, required capabilities, free ALPNs.
func (s *supervisor) start() (*instance, error) {
	want, gen, err := s.desired()
	if err != nil {
		return nil, fatal{err}
	}
	s.mu.Lock()
	s.gen = gen
	s.mu.Unlock()
	if _, ok := (&Manifest{ProtocolVersions: want.ProtocolVersions}).Speaks(SupportedProtocols); !ok {
		return nil, fatal{fmt.Errorf("plugin %s %s speaks core protocol %v; this alknet speaks %v", s.name, want.Version, want.ProtocolVersions, SupportedProtocols)}
	}
	cfg := s.h.opts.Config(s.name)
	if cfg.RequireSignature && (want.Signer == "" || (len(cfg.TrustedPublishers) > 0 && !slices.Contains(cfg.TrustedPublishers, want.Signer))) {
		return nil, fatal{fmt.Errorf("plugins.require_signature is on and %s %s was installed without a signature from a trusted publisher (signer %q); reinstall it with --signature", s.name, want.Version, want.Signer)}
	}
	settings := cfg.Settings
	if len(settings) == 0 {
		settings = json.RawMessage("{}")
	}
	in, err := launch(context.Background(), launchOptions{
		binary: s.h.opts.Store.BinaryPath(s.name, want.Version), sha256: want.SHA256, mtls: s.h.opts.MTLS,
		socketDir: filepath.Join(s.h.opts.Store.Dir(), "run"),
		log:       s.log, settings: settings, nodeInfo: s.h.opts.NodeInfo,
		host: func(in *instance) pluginpb.HostServer { return &hostService{h: s.h, in: in} },
	})
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			return nil, fatal{err}
		}
		return nil, err
	}
	if in.name != s.name || in.version != want.Version {
		in.stop(0)
		return nil, fatal{fmt.Errorf("binary for %s@%s reports %s@%s; reinstall it", s.name, want.Version, in.name, in.version)}
	}
	for _, c := range in.manifest.Capabilities {
		_, granted := cfg.Capabilities[c.Name]
		_, byDefault := s.h.opts.DefaultGrants[c.Name]
		if c.Required && !granted && !byDefault {
			in.stop(0)
			return nil, fatal{fmt.Errorf("plugin %s needs capability %q (%s): grant it in the config, e.g. [plugins.%s.capabilities] %s = \"credential:NAME\" (or vault:ed25519:PATH, file:PATH)", s.name, c.Name, c.Description, s.name, c.Name)}
		}
	}
	return in, nil
}

func (s *supervisor) run() {
	defer close(s.stopped)
	backoff := backoffMin
	var in *instance
	var startedAt time.Time
	for {
		if in == nil {
			if s.status().State == StateFailed {
				select {
				case <-s.poke:
					s.mu.Lock()
					s.crashes = nil
					s.mu.Unlock()
					backoff = backoffMin
				case <-s.stopCh:
					s.setState(StateStopped, "")
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
					s.setState(StateStopped, "")
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
		select {
		case <-in.exited:
			s.log.Error("plugin process exited; its connections are closed with code 2", "version", in.version)
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
				s.setState(StateStopped, "")
				return
			}
			backoff = min(2*backoff, backoffMax)
		case <-s.poke:
			want, gen, err := s.desired()
			if err != nil {
				s.log.Error("plugin reload", "error", err)
				continue
			}
			s.mu.Lock()
			same := want.Version == in.version && gen == s.gen
			s.mu.Unlock()
			if same {
				continue
			}
			next, err := s.start()
			if err != nil {
				s.log.Error("plugin switch failed; the running version stays", "to", want.Version, "error", err)
				continue
			}
			old := in
			in, startedAt = next, time.Now()
			if err := s.activate(in); err != nil {
				in.stop(0)
				in = old
				s.log.Error("plugin switch failed; the running version stays", "error", err)
				continue
			}
			s.log.Info("plugin switched; the previous process drains", "from", old.version, "to", in.version)
			s.h.wg.Add(1)
			go func() {
				defer s.h.wg.Done()
				s.retire(old)
			}()
		case <-s.stopCh:
			s.deactivate(in, "shutdown")
			in.stop(2 * time.Second)
			s.setState(StateStopped, "")
			return
		}
	}
}

func (s *supervisor) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
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

// activate routes new connections and calls to in.
func (s *supervisor) activate(in *instance) error {
	ep, reg := s.h.opts.Endpoint, s.h.opts.Registry
	s.mu.Lock()
	oldALPNs, oldOps := s.alpns, s.ops
	s.mu.Unlock()
	for _, a := range in.manifest.ALPNs {
		if slices.Contains(oldALPNs, a) {
			continue
		}
		if err := ep.Register(a, "plugin:"+s.name, route{s}); err != nil {
			for _, done := range in.manifest.ALPNs {
				if !slices.Contains(oldALPNs, done) && done != a {
					ep.Unregister(done, "plugin:"+s.name)
				}
			}
			return err
		}
	}
	for _, a := range oldALPNs {
		if !slices.Contains(in.manifest.ALPNs, a) {
			ep.Unregister(a, "plugin:"+s.name)
		}
	}
	var ops []string
	for _, op := range in.manifest.Operations {
		if err := reg.Replace(s.forwarder(op)); err != nil {
			return err
		}
		ops = append(ops, op.Name)
	}
	for _, n := range oldOps {
		if !slices.Contains(ops, n) {
			reg.Unregister(n)
		}
	}
	s.mu.Lock()
	s.cur, s.version, s.alpns, s.ops = in, in.version, slices.Clone(in.manifest.ALPNs), ops
	s.mu.Unlock()
	s.log.Info("plugin ready", "version", in.version, "protocol", in.protocol, "alpns", fmt.Sprint(in.manifest.ALPNs), "pid", in.pid)
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
			s.h.opts.Endpoint.Unregister(a, "plugin:"+s.name)
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
	for time.Now().Before(deadline) {
		n := 0
		old.conns.Range(func(any, any) bool { n++; return true })
		if n == 0 && old.active.Load() == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	old.closeAll("plugin upgraded")
	old.stop(2 * time.Second)
	s.log.Info("previous plugin process stopped", "version", old.version)
}

// route is the endpoint handler of a plugin's ALPNs.
type route struct{ s *supervisor }

func (r route) ServeConn(ctx context.Context, c endpoint.Conn, ac auth.AuthContext) error {
	s := r.s
	in := s.current()
	if in == nil {
		return c.CloseWithError(endpoint.CodeUnavailable, "handler unavailable")
	}
	caps, err := s.h.capabilities(s.name)
	if err != nil {
		s.log.Error("cannot resolve capabilities; connection refused", "error", err)
		return c.CloseWithError(endpoint.CodeInternal, "internal")
	}
	id := in.nextID.Add(1)
	bc := &bridgedConn{conn: c, drain: ctx, done: make(chan struct{})}
	in.conns.Store(id, bc)
	defer in.conns.Delete(id)
	octx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = in.pc.OpenConnection(octx, &pluginpb.OpenConnectionRequest{ConnId: id, Capabilities: caps, Auth: &pluginpb.AuthContext{
		Identity: identityJSON(ac.Identity), Alpn: ac.ALPN, RemoteAddr: ac.RemoteAddr.String(), Fingerprint: ac.Fingerprint, Transport: ac.Transport}})
	cancel()
	if err != nil {
		return c.CloseWithError(endpoint.CodeUnavailable, "handler unavailable")
	}
	select {
	case <-bc.done:
		if bc.code != 0 {
			return c.CloseWithError(endpoint.CloseCode(bc.code), bc.reason)
		}
	case <-c.Context().Done():
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = in.pc.CloseConnection(cctx, &pluginpb.CloseConnectionRequest{ConnId: id})
		cancel()
	case <-in.ctx.Done():
		return c.CloseWithError(endpoint.CodeUnavailable, "handler unavailable")
	}
	return nil
}

// forwarder registers a plugin operation in the core registry; each call
// resolves capabilities afresh and goes to the current instance.
func (s *supervisor) forwarder(op Operation) call.Registration {
	spec := call.Spec{Name: op.Name, OpType: op.OpType, Visibility: op.Visibility, RemoteSafe: op.RemoteSafe, Description: op.Description,
		InputSchema: op.InputSchema, OutputSchema: op.OutputSchema, AccessControl: op.AccessControl, Provenance: "plugin:" + s.name}
	invoke := func(ctx context.Context, input json.RawMessage, emit func(any) error) (json.RawMessage, error) {
		in := s.current()
		if in == nil {
			return nil, call.Errorf(call.CodeInternal, "plugin %s unavailable", s.name)
		}
		info, _ := call.FromContext(ctx)
		caps, err := s.h.capabilities(s.name)
		if err != nil {
			s.log.Error("cannot resolve capabilities; call refused", "operation", op.Name, "error", err)
			return nil, call.Errorf(call.CodeInternal, "plugin %s is misconfigured", s.name)
		}
		rid := uuid.NewString()
		in.calls.Store(rid, &inflight{env: op.Env})
		defer in.calls.Delete(rid)
		req := &pluginpb.InvokeRequest{Operation: op.Name, Input: input, RequestId: rid, Capabilities: caps, Subscribe: op.OpType == call.Subscription}
		if info != nil {
			req.ParentId, req.Identity, req.ForwardedFor, req.Internal = info.ParentID, identityJSON(info.Identity), identityJSON(info.ForwardedFor), info.Internal
		}
		var out json.RawMessage
		var callErr error
		err = in.mux.call(ctx, req, func(r *pluginpb.InvokeResult) error {
			switch r.GetKind() {
			case pluginpb.InvokeResult_RESPONDED:
				if emit == nil {
					out = r.GetOutput()
					return nil
				}
				return emit(json.RawMessage(r.GetOutput()))
			case pluginpb.InvokeResult_ERROR:
				var ce call.Error
				if json.Unmarshal(r.GetError(), &ce) != nil || ce.Code == "" {
					callErr = call.Errorf(call.CodeInternal, "internal error")
				} else {
					callErr = &ce
				}
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, errMuxClosed) {
				return nil, s.unavailable(ctx)
			}
			return nil, err
		}
		if callErr != nil {
			return nil, callErr
		}
		if out == nil && emit == nil {
			return nil, call.Errorf(call.CodeInternal, "plugin %s ended the call without an answer", s.name)
		}
		return out, nil
	}
	reg := call.Registration{Spec: spec}
	if op.OpType == call.Subscription {
		reg.Stream = func(ctx context.Context, in json.RawMessage, emit func(any) error) error {
			_, err := invoke(ctx, in, emit)
			return err
		}
	} else {
		reg.Call = func(ctx context.Context, in json.RawMessage) (any, error) {
			out, err := invoke(ctx, in, nil)
			if err != nil {
				return nil, err
			}
			return out, nil
		}
	}
	return reg
}

func (s *supervisor) unavailable(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return call.Errorf(call.CodeInternal, "plugin %s unavailable", s.name)
}
