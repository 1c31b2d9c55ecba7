package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
	"alknet.dev/alknet/proto/pluginrpc"
)

// rawPlugin is a plugin written against the wire protocol directly, as a
// third party (or an attacker) could: the tests make it do what the SDK
// would never let a plugin do.
type rawPlugin struct {
	pluginpb.UnimplementedPluginServer
	manifest *pluginpb.Manifest
	dial     pluginrpc.HostDialer

	mu        sync.Mutex
	host      pluginpb.HostClient
	settings  []string // every Configure's settings
	configure func(settings []byte, reload bool) error
	// call answers one operation call; nil: echo the input.
	call  func(ctx context.Context, handle uint64, r *pluginpb.InvokeRequest) (*pluginpb.InvokeResult, error)
	conns chan uint64 // OpenConnection handles
}

func (p *rawPlugin) Describe(context.Context, *pluginpb.Empty) (*pluginpb.Manifest, error) {
	return p.manifest, nil
}

func (p *rawPlugin) Configure(_ context.Context, r *pluginpb.ConfigureRequest) (*pluginpb.Empty, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.HostBrokerId != 0 {
		cc, err := p.dial(r.HostBrokerId)
		if err != nil {
			return nil, err
		}
		p.host = pluginpb.NewHostClient(cc)
	}
	p.settings = append(p.settings, string(r.Settings))
	if p.configure != nil {
		if err := p.configure(r.Settings, r.HostBrokerId == 0); err != nil {
			return nil, err
		}
	}
	return &pluginpb.Empty{}, nil
}

func (p *rawPlugin) hostClient() pluginpb.HostClient {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.host
}

func (p *rawPlugin) OpenConnection(_ context.Context, r *pluginpb.OpenConnectionRequest) (*pluginpb.Empty, error) {
	if p.conns != nil {
		p.conns <- r.Conn
	}
	return &pluginpb.Empty{}, nil
}

func (p *rawPlugin) CloseConnection(context.Context, *pluginpb.CloseConnectionRequest) (*pluginpb.Empty, error) {
	return &pluginpb.Empty{}, nil
}

func (p *rawPlugin) Health(context.Context, *pluginpb.Empty) (*pluginpb.HealthResponse, error) {
	return &pluginpb.HealthResponse{Status: "ok"}, nil
}

func (p *rawPlugin) Calls(st grpc.BidiStreamingServer[pluginpb.CallFrame, pluginpb.CallFrame]) error {
	var mu sync.Mutex
	for {
		f, err := st.Recv()
		if err != nil {
			return nil
		}
		if f.Request == nil {
			continue
		}
		go func() {
			res := &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: f.Request.Input}
			if p.call != nil {
				var err error
				if res, err = p.call(st.Context(), f.Id, f.Request); err != nil {
					res = &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_ERROR, Error: &pluginpb.CallError{Code: "INTERNAL", Message: err.Error()}}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			_ = st.Send(&pluginpb.CallFrame{Id: f.Id, Result: res, Last: true})
		}()
	}
}

// testHost is a Host running raw plugins in-process.
type testHost struct {
	t        *testing.T
	h        *Host
	reg      *call.Registry
	ep       *endpoint.Endpoint
	launcher map[string]*inProcessLauncher
	plugins  map[string]*rawPlugin

	mu      sync.Mutex
	lock    *Lock
	configs map[string]PluginConfig
}

func (th *testHost) Load() (*Lock, error) {
	th.mu.Lock()
	defer th.mu.Unlock()
	b, _ := json.Marshal(th.lock)
	var l Lock
	_ = json.Unmarshal(b, &l)
	return &l, nil
}

func (th *testHost) config(name string) PluginConfig {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.configs[name]
}

func (th *testHost) setConfig(name string, c PluginConfig) {
	th.mu.Lock()
	th.configs[name] = c
	th.mu.Unlock()
}

// Launch dispatches launches by plugin name.
func (th *testHost) Launch(ctx context.Context, s LaunchSpec) (Process, error) {
	return th.launcherOf(s.Name).Launch(ctx, s)
}

func (th *testHost) launcherOf(name string) *inProcessLauncher {
	th.mu.Lock()
	defer th.mu.Unlock()
	return th.launcher[name]
}

func newTestHost(t *testing.T, plugins ...*rawPlugin) *testHost {
	t.Helper()
	th := &testHost{t: t, reg: call.NewRegistry(nil), launcher: map[string]*inProcessLauncher{}, plugins: map[string]*rawPlugin{},
		lock: &Lock{Format: 1, Plugins: map[string]*Locked{}}, configs: map[string]PluginConfig{}}
	th.ep = endpoint.New(endpoint.Options{DrainTimeout: time.Second})
	peers := []auth.Peer{{PeerID: "ops", Scopes: []string{"admin"}, SSHKeys: []string{"SHA256:opsopsopsopsopsopsopsopsopsops"}}}
	pol, err := auth.NewPolicy(peers, nil)
	if err != nil {
		t.Fatal(err)
	}
	provider := auth.NewProvider(pol)
	for _, p := range plugins {
		th.add(p)
	}
	th.h = New(Options{Catalog: th, Launcher: th, Endpoint: th.ep, Registry: th.reg,
		Config: th.config, Policy: provider.Policy, Resolve: func(g string) ([]byte, error) { return []byte(g), nil }})
	t.Cleanup(func() {
		th.ep.Shutdown()
		th.h.Shutdown()
	})
	return th
}

// add installs p (its manifest's version).
func (th *testHost) add(p *rawPlugin) {
	m := p.manifest
	th.mu.Lock()
	defer th.mu.Unlock()
	th.plugins[m.Name] = p
	th.launcher[m.Name] = &inProcessLauncher{newServer: func(dial pluginrpc.HostDialer) pluginpb.PluginServer {
		p.mu.Lock()
		p.dial = dial
		p.mu.Unlock()
		return p
	}}
	protos := []int{}
	for _, v := range m.ProtocolVersions {
		protos = append(protos, int(v))
	}
	lp := th.lock.Plugins[m.Name]
	if lp == nil {
		lp = &Locked{Versions: map[string]*Installed{}}
		th.lock.Plugins[m.Name] = lp
	}
	lp.Versions[m.Version] = &Installed{Name: m.Name, Version: m.Version, ProtocolVersions: protos}
}

func (th *testHost) start() {
	th.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := th.h.Start(ctx); err != nil {
		th.t.Fatal(err)
	}
}

func (th *testHost) status(name string) Status {
	for _, s := range th.h.Statuses() {
		if s.Name == name {
			return s
		}
	}
	return Status{}
}

// waitState waits until plugin name is in state (and ok holds, if given).
func (th *testHost) waitState(name, state string, ok func(Status) bool) Status {
	th.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := th.status(name)
		if s.State == state && (ok == nil || ok(s)) {
			return s
		}
		if time.Now().After(deadline) {
			th.t.Fatalf("plugin %s: state %+v, want %s", name, s, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (th *testHost) call(name string, input string, id *auth.Identity) (json.RawMessage, *call.Error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return th.reg.Invoke(ctx, call.Invocation{Name: name, Input: json.RawMessage(input), Identity: id, RequestID: "r"}, nil)
}

func manifest(name string, ops ...string) *pluginpb.Manifest {
	m := &pluginpb.Manifest{Name: name, Version: "1.0.0", ProtocolVersions: []uint32{pluginrpc.ProtocolVersion}, Alpns: []string{"alknet/" + name}}
	for _, op := range ops {
		m.Operations = append(m.Operations, &pluginpb.OperationSpec{Name: op, OpType: "query"})
	}
	return m
}

func TestSupervisorRestartsAfterCrash(t *testing.T) {
	p := &rawPlugin{manifest: manifest("echo", "echo/say")}
	th := newTestHost(t, p)
	th.start()
	th.waitState("echo", StateReady, nil)
	if out, err := th.call("echo/say", `"hi"`, nil); err != nil || string(out) != `"hi"` {
		t.Fatalf("echo/say: %s %v", out, err)
	}
	th.launcherOf("echo").Last().Stop(0) // the process "dies"
	st := th.waitState("echo", StateReady, func(s Status) bool { return s.Restarts == 1 })
	if st.Error != "" {
		t.Fatalf("ready with an error: %+v", st)
	}
	if out, err := th.call("echo/say", `"again"`, nil); err != nil || string(out) != `"again"` {
		t.Fatalf("echo/say after the restart: %s %v", out, err)
	}
}

func TestSupervisorCrashLoopFailsUntilReload(t *testing.T) {
	p := &rawPlugin{manifest: manifest("echo", "echo/say")}
	th := newTestHost(t, p)
	th.start()
	for i := range crashLoopMax + 1 {
		th.waitState("echo", StateReady, func(s Status) bool { return s.Restarts == i })
		th.launcherOf("echo").Last().Stop(0)
	}
	th.waitState("echo", StateFailed, func(s Status) bool { return strings.Contains(s.Error, "crash loop") })
	// While failed, its operations answer unavailable, not "not found".
	if _, err := th.call("echo/say", `1`, nil); err == nil || err.Message != "plugin echo unavailable" {
		t.Fatalf("echo/say while failed: %v", err)
	}
	// A reload tries it again, and returns once it serves.
	if err := th.h.Reload(tctx(t)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if st := th.status("echo"); st.State != StateReady {
		t.Fatalf("state right after the reload: %+v", st)
	}
}

// Settings changed by a reload reach the running plugin through Configure;
// a plugin that cannot apply them live is restarted with them; settings it
// refuses leave the running ones in place.
func TestSupervisorAppliesReloadedSettings(t *testing.T) {
	p := &rawPlugin{manifest: manifest("echo", "echo/say")}
	th := newTestHost(t, p)
	th.setConfig("echo", PluginConfig{Settings: json.RawMessage(`{"v":1}`)})
	th.start()
	th.waitState("echo", StateReady, nil)

	th.setConfig("echo", PluginConfig{Settings: json.RawMessage(`{"v":2}`)})
	if err := th.h.Reload(tctx(t)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	checkSettings(t, th.h, "echo", `{"v":2}`)
	if got := p.allSettings(); strings.Join(got, " ") != `{"v":1} {"v":2}` || th.status("echo").Restarts != 0 {
		t.Fatalf("live reconfigure: settings %v, %+v", got, th.status("echo"))
	}

	p.mu.Lock()
	p.configure = func(s []byte, reload bool) error {
		if string(s) == `{"v":3}` && reload {
			return status.Error(codes.FailedPrecondition, "restart needed")
		}
		if string(s) == `{"bad":true}` {
			return status.Error(codes.InvalidArgument, "bad is not a setting")
		}
		return nil
	}
	p.mu.Unlock()
	th.setConfig("echo", PluginConfig{Settings: json.RawMessage(`{"bad":true}`)})
	// The reload says what the plugin refused, naming it.
	if err := th.h.Reload(tctx(t)); err == nil || !strings.Contains(err.Error(), "plugin echo refused its new settings: bad is not a setting") {
		t.Fatalf("reload with refused settings: %v", err)
	}
	if applied, _ := th.h.Settings("echo"); string(applied) != `{"v":2}` {
		t.Fatalf("refused settings replaced the running ones: %s", applied)
	}

	th.setConfig("echo", PluginConfig{Settings: json.RawMessage(`{"v":3}`)})
	if err := th.h.Reload(tctx(t)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	// The restart is a switch: a new process configured at launch with
	// the new settings, the old one retired — done when Reload returns.
	checkSettings(t, th.h, "echo", `{"v":3}`)
	if out, err := th.call("echo/say", `3`, nil); err != nil || string(out) != "3" {
		t.Fatalf("echo/say after the restart: %s %v", out, err)
	}
}

func (p *rawPlugin) allSettings() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.settings...)
}

// checkSettings checks, without waiting, that name runs with want: a
// reload returns once the plugin has acted on it.
func checkSettings(t *testing.T, h *Host, name, want string) {
	t.Helper()
	if applied, refused := h.Settings(name); string(applied) != want || refused != nil {
		t.Fatalf("settings of %s right after the reload: %s (%v), want %s", name, applied, refused, want)
	}
}

func TestSupervisorSignatureRuleStopsUnsignedPlugin(t *testing.T) {
	p := &rawPlugin{manifest: manifest("echo", "echo/say")}
	th := newTestHost(t, p)
	th.start()
	th.waitState("echo", StateReady, nil)
	th.setConfig("echo", PluginConfig{RequireSignature: true})
	_ = th.h.Reload(tctx(t))
	st := th.status("echo")
	if st.State != StateFailed {
		t.Fatalf("state right after the reload: %+v", st)
	}
	if !strings.Contains(st.Error, "require_signature") || !strings.Contains(st.Error, "echo 1.0.0") {
		t.Fatalf("failed without naming the rule and the plugin: %+v", st)
	}
	if slicesContains(th.ep.ALPNs(), "alknet/echo") {
		t.Fatal("the stopped plugin's ALPN is still offered")
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A plugin may not take an operation, a namespace or an ALPN the core or
// another plugin owns: it is refused naming both owners, and what the
// owners serve keeps answering as before.
func TestOwnershipRefusedAtActivation(t *testing.T) {
	echo := &rawPlugin{manifest: manifest("echo", "echo/say")}
	rogue := &rawPlugin{manifest: manifest("rogue", "echo/say")}
	rogue.manifest.Namespaces = []string{"echo"}
	rogue.call = func(context.Context, uint64, *pluginpb.InvokeRequest) (*pluginpb.InvokeResult, error) {
		return &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: []byte(`"owned"`)}, nil
	}
	th := newTestHost(t, echo)
	if err := th.reg.Register(call.Registration{Spec: call.Spec{Name: "node/info", OpType: call.Query}, Call: func(context.Context, json.RawMessage) (any, error) { return "core", nil }}); err != nil {
		t.Fatal(err)
	}
	th.start()
	th.waitState("echo", StateReady, nil)
	th.add(rogue)
	// The reload returns with the refusal, naming both owners.
	if err := th.h.Reload(tctx(t)); err == nil || !strings.Contains(err.Error(), `plugin rogue failed: plugin rogue declares namespace "echo", which plugin echo owns`) {
		t.Fatalf("reload adding rogue: %v", err)
	}
	if st := th.status("rogue"); st.State != StateFailed || !strings.Contains(st.Error, `plugin rogue declares namespace "echo", which plugin echo owns`) {
		t.Fatalf("refusal does not name both owners: %+v", st)
	}
	if out, err := th.call("echo/say", `"mine"`, nil); err != nil || string(out) != `"mine"` {
		t.Fatalf("echo/say after the refusal: %s %v", out, err)
	}

	// A manifest that changes between install and launch is checked again.
	sneaky := &rawPlugin{manifest: manifest("sneaky", "node/info")}
	th.add(sneaky)
	_ = th.h.Reload(tctx(t))
	st := th.status("sneaky")
	if st.State != StateFailed || !strings.Contains(st.Error, `plugin sneaky declares operation node/info outside its namespaces [sneaky] (namespace "node" is owned by the core)`) {
		t.Fatalf("refusal: %q", st.Error)
	}
	if out, err := th.call("node/info", `null`, nil); err != nil || string(out) != `"core"` {
		t.Fatalf("node/info after the refusal: %s %v", out, err)
	}

	// Removing the refused plugins changes nothing for the others.
	th.mu.Lock()
	delete(th.lock.Plugins, "rogue")
	delete(th.lock.Plugins, "sneaky")
	th.mu.Unlock()
	_ = th.h.Reload(tctx(t))
	if out, err := th.call("echo/say", `"still"`, nil); err != nil || string(out) != `"still"` {
		t.Fatalf("echo/say after removing the rogue plugins: %s %v", out, err)
	}
	if out, err := th.call("node/info", `null`, nil); err != nil || string(out) != `"core"` {
		t.Fatalf("node/info after removing the rogue plugins: %s %v", out, err)
	}
	// Removing echo removes its operations — and only those.
	th.mu.Lock()
	delete(th.lock.Plugins, "echo")
	th.mu.Unlock()
	_ = th.h.Reload(tctx(t))
	if _, err := th.call("echo/say", `1`, nil); err == nil || err.Code != call.CodeNotFound {
		t.Fatalf("echo/say after removing echo: %v", err)
	}
	if _, err := th.call("node/info", `null`, nil); err != nil {
		t.Fatalf("node/info after removing echo: %v", err)
	}
}

// Everything a plugin does through the Host names a handle, and the core
// accepts only handles of that plugin's own connections, calls and
// sessions while they are open: a finished call, a closed connection or a
// made-up number is refused. No request carries an identity.
func TestHostHandlesCheckedByTheCore(t *testing.T) {
	var (
		mu       sync.Mutex
		finished uint64
	)
	p := &rawPlugin{manifest: manifest("probe", "probe/nested", "probe/dial", "probe/mark"), conns: make(chan uint64, 4)}
	p.manifest.Operations[0].Env = []string{"core/whoami"}
	p.call = func(ctx context.Context, handle uint64, r *pluginpb.InvokeRequest) (*pluginpb.InvokeResult, error) {
		h := p.hostClient()
		switch r.Operation {
		case "probe/mark": // a call that ends; its handle is kept
			mu.Lock()
			finished = handle
			mu.Unlock()
			return &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: []byte(`null`)}, nil
		case "probe/nested": // a nested call as this running call
			out, err := hostInvoke(ctx, h, handle, "core/whoami")
			if err != nil {
				return nil, err
			}
			return &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: out}, nil
		}
		return nil, errors.New("unknown")
	}
	th := newTestHost(t, p)
	if err := th.reg.Register(call.Registration{Spec: call.Spec{Name: "core/whoami", OpType: call.Query, Visibility: call.Internal},
		Call: func(ctx context.Context, _ json.RawMessage) (any, error) {
			info, _ := call.FromContext(ctx)
			if info.Identity == nil {
				return "anonymous", nil
			}
			return info.Identity.ID, nil
		}}); err != nil {
		t.Fatal(err)
	}
	dialed := make(chan string, 4)
	th.h.opts.DialPeer = func(_ context.Context, target, alpn string) (endpoint.Conn, error) {
		dialed <- target + " " + alpn
		client, _ := endpoint.Pipe(alpn)
		return client, nil
	}
	th.start()
	th.waitState("probe", StateReady, nil)
	h := p.hostClient()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A nested call from a running call works, with the plugin's
	// authority — never the caller's.
	out, cerr := th.call("probe/nested", `null`, &auth.Identity{ID: "ops", Scopes: []string{"admin"}})
	if cerr != nil || string(out) != `"plugin:probe"` {
		t.Fatalf("nested call: %s %v", out, cerr)
	}
	// The same from a call that has finished is refused.
	if _, cerr := th.call("probe/mark", `null`, nil); cerr != nil {
		t.Fatal(cerr)
	}
	mu.Lock()
	stale := finished
	mu.Unlock()
	for name, handle := range map[string]uint64{"finished call": stale, "made-up handle": 1 << 40, "zero": 0} {
		if _, err := hostInvoke(ctx, h, handle, "core/whoami"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Invoke as %s: %v, want PermissionDenied", name, err)
		}
		if _, err := hostInvokes(ctx, h, handle, "core/whoami"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Invokes as %s: %v, want PermissionDenied", name, err)
		}
		if _, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: call.ALPN, As: handle}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("DialInternal as %s: %v, want PermissionDenied", name, err)
		}
		if _, err := h.Authenticate(ctx, &pluginpb.AuthenticateRequest{Conn: handle, Kind: "ssh_key", Credential: "SHA256:opsopsopsopsopsopsopsopsopsops"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("Authenticate on %s: %v, want PermissionDenied", name, err)
		}
		if _, err := h.DialPeer(ctx, &pluginpb.DialPeerRequest{Alpn: "alknet/probe", As: handle, Target: "ed25519:00@peer:4433"}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("DialPeer as %s: %v, want PermissionDenied", name, err)
		}
	}

	// A connection: its handle acts as the connection's identity, and only
	// while it is open.
	seen := make(chan *auth.Identity, 4)
	if err := th.ep.Register("alknet/target", "test", endpoint.HandlerFunc(func(_ context.Context, c endpoint.Conn, ac auth.AuthContext) error {
		seen <- ac.Identity
		<-c.Context().Done()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	client, server := endpoint.Pipe("alknet/probe")
	if err := th.ep.ServeInternal(server, auth.AuthContext{Identity: &auth.Identity{ID: "alice"}}); err != nil {
		t.Fatal(err)
	}
	conn := <-p.conns
	ref, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: "alknet/target", As: conn})
	if err != nil {
		t.Fatal(err)
	}
	if id := <-seen; id == nil || id.ID != "alice" {
		t.Fatalf("the internal dial acted as %v, want the connection's identity alice", id)
	}
	// Another node: only on the plugin's own ALPN.
	if _, err := h.DialPeer(ctx, &pluginpb.DialPeerRequest{Alpn: call.ALPN, As: conn, Target: "ed25519:00@peer:4433"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("DialPeer on another handler's ALPN: %v, want FailedPrecondition", err)
	}
	if len(dialed) != 0 {
		t.Fatalf("the node dialed %s for a refused DialPeer", <-dialed)
	}
	if ref, err := h.DialPeer(ctx, &pluginpb.DialPeerRequest{Alpn: "alknet/probe", As: conn, Target: "ed25519:00@peer:4433"}); err != nil || ref.GetConn() == 0 {
		t.Fatalf("DialPeer on its own ALPN: %v %v", ref, err)
	}
	if got := <-dialed; got != "ed25519:00@peer:4433 alknet/probe" {
		t.Fatalf("dialed %q", got)
	}
	// A session: the identity the core resolved from a credential.
	sess, err := h.Authenticate(ctx, &pluginpb.AuthenticateRequest{Conn: conn, Kind: "ssh_key", Credential: "SHA256:opsopsopsopsopsopsopsopsopsops"})
	if err != nil || sess.Identity.GetId() != "ops" || sess.Session == 0 {
		t.Fatalf("authenticate: %v %v", sess, err)
	}
	if _, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: "alknet/target", As: sess.Session}); err != nil {
		t.Fatal(err)
	}
	if id := <-seen; id == nil || id.ID != "ops" || !id.HasScope("admin") {
		t.Fatalf("the session dial acted as %v, want ops", id)
	}
	none, err := h.Authenticate(ctx, &pluginpb.AuthenticateRequest{Conn: conn, Kind: "ssh_key", Credential: "SHA256:nobodynobodynobodynobody"})
	if err != nil || none.Identity != nil || none.Session != 0 {
		t.Fatalf("an unknown key resolved: %v %v", none, err)
	}
	// Once the connection closes, its handle, its sessions and the
	// internal connection it made are gone.
	_ = client.CloseWithError(0, "")
	waitDenied(t, func() error {
		_, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: "alknet/target", As: conn})
		return err
	})
	waitDenied(t, func() error {
		_, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: "alknet/target", As: sess.Session})
		return err
	})
	waitDenied(t, func() error {
		st, err := h.Stream(ctx)
		if err != nil {
			return err
		}
		_ = st.Send(&pluginpb.Chunk{Open: &pluginpb.StreamOpen{Conn: ref.Conn}})
		_, err = st.Recv()
		return err
	})
}

// serveConn opens an internal connection to the plugin's ALPN as identity
// id, closed at the end of the test, and returns its client end and the
// handle the plugin got for it.
func (th *testHost) serveConn(t *testing.T, p *rawPlugin, alpn, id string) (endpoint.Conn, uint64) {
	t.Helper()
	client, server := endpoint.Pipe(alpn)
	t.Cleanup(func() { _ = client.CloseWithError(0, "") })
	if err := th.ep.ServeInternal(server, auth.AuthContext{Identity: &auth.Identity{ID: id}}); err != nil {
		t.Fatal(err)
	}
	return client, <-p.conns
}

func hostInvoke(ctx context.Context, h pluginpb.HostClient, as uint64, op string) (json.RawMessage, error) {
	st, err := h.Invoke(ctx, &pluginpb.HostInvokeRequest{As: as, Operation: op, Input: []byte("null")})
	if err != nil {
		return nil, err
	}
	r, err := st.Recv()
	if err != nil {
		return nil, err
	}
	if r.Kind == pluginpb.InvokeResult_ERROR {
		return nil, fmt.Errorf("%s: %s", r.Error.Code, r.Error.Message)
	}
	return r.Output, nil
}

// hostInvokes is hostInvoke on a Host.Invokes stream of its own.
func hostInvokes(ctx context.Context, h pluginpb.HostClient, as uint64, op string) (json.RawMessage, error) {
	st, err := h.Invokes(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&pluginpb.HostCallFrame{Id: 1, Request: &pluginpb.HostInvokeRequest{As: as, Operation: op, Input: []byte("null")}}); err != nil {
		return nil, err
	}
	f, err := st.Recv()
	if err != nil {
		return nil, err
	}
	if !f.Last || f.Id != 1 {
		return nil, fmt.Errorf("frame %v: want the last of call 1", f)
	}
	if f.StatusCode != 0 {
		return nil, status.Error(codes.Code(f.StatusCode), f.StatusMessage)
	}
	if f.Result.Kind == pluginpb.InvokeResult_ERROR {
		return nil, fmt.Errorf("%s: %s", f.Result.Error.Code, f.Result.Error.Message)
	}
	return f.Result.Output, nil
}

// Host.Invokes: many calls at once on one stream, each ended by a frame
// marked last; a subscription's items as they come; abort cancels the
// handler; the plugin's deadline travels; an id already running is
// refused; the stream's end cancels what runs.
func TestHostInvokesStream(t *testing.T) {
	p := &rawPlugin{manifest: manifest("probe"), conns: make(chan uint64, 1)}
	th := newTestHost(t, p)
	release := make(chan struct{})
	cancelled := make(chan string, 4)
	_ = th.reg.Register(call.Registration{Spec: call.Spec{Name: "core/block", OpType: call.Query},
		Call: func(ctx context.Context, in json.RawMessage) (any, error) {
			select {
			case <-release:
				return "released", nil
			case <-ctx.Done():
				cancelled <- string(in)
				return nil, ctx.Err()
			}
		}})
	_ = th.reg.Register(call.Registration{Spec: call.Spec{Name: "core/quick", OpType: call.Query},
		Call: func(context.Context, json.RawMessage) (any, error) { return "quick", nil }})
	items := make(chan struct{})
	_ = th.reg.Register(call.Registration{Spec: call.Spec{Name: "core/items", OpType: call.Subscription},
		Stream: func(ctx context.Context, _ json.RawMessage, emit func(any) error) error {
			if err := emit(1); err != nil {
				return err
			}
			<-items // the first item is out before the second exists
			return emit(2)
		}})
	th.start()
	th.waitState("probe", StateReady, nil)
	_, conn := th.serveConn(t, p, "alknet/probe", "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sctx, endStream := context.WithCancel(ctx)
	st, err := p.hostClient().Invokes(sctx)
	if err != nil {
		t.Fatal(err)
	}
	req := func(id uint64, op, in string, sub bool) {
		t.Helper()
		if err := st.Send(&pluginpb.HostCallFrame{Id: id, Request: &pluginpb.HostInvokeRequest{As: conn, Operation: op, Input: []byte(in), Subscribe: sub}}); err != nil {
			t.Fatal(err)
		}
	}
	next := func() *pluginpb.HostCallFrame {
		t.Helper()
		f, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	req(1, "core/block", `"one"`, false)
	req(2, "core/quick", `null`, false)
	if f := next(); f.Id != 2 || !f.Last || string(f.Result.GetOutput()) != `"quick"` || f.Result.GetRequestId() == "" {
		t.Fatalf("call 2 did not answer while call 1 runs: %v", f)
	}
	req(1, "core/quick", `null`, false)
	if f := next(); f.Id != 1 || !f.Last || codes.Code(f.StatusCode) != codes.InvalidArgument {
		t.Fatalf("a second call with a running id: %v", f)
	}
	req(3, "core/items", `null`, true)
	if f := next(); f.Id != 3 || f.Last || string(f.Result.GetOutput()) != "1" {
		t.Fatalf("first item: %v", f)
	}
	close(items)
	if f := next(); f.Id != 3 || f.Last || string(f.Result.GetOutput()) != "2" {
		t.Fatalf("second item: %v", f)
	}
	if f := next(); f.Id != 3 || !f.Last || f.Result.GetKind() != pluginpb.InvokeResult_COMPLETED {
		t.Fatalf("end of the subscription: %v", f)
	}
	if err := st.Send(&pluginpb.HostCallFrame{Id: 1, Abort: true}); err != nil {
		t.Fatal(err)
	}
	if in := <-cancelled; in != `"one"` {
		t.Fatalf("cancelled %s", in)
	}
	if f := next(); f.Id != 1 || !f.Last || f.Result.GetKind() != pluginpb.InvokeResult_ERROR {
		t.Fatalf("aborted call: %v", f)
	}
	if err := st.Send(&pluginpb.HostCallFrame{Id: 4, TimeoutMicros: 50_000, Request: &pluginpb.HostInvokeRequest{As: conn, Operation: "core/block", Input: []byte(`"four"`)}}); err != nil {
		t.Fatal(err)
	}
	if f := next(); f.Id != 4 || !f.Last || f.Result.GetError().GetCode() != string(call.CodeTimeout) {
		t.Fatalf("call past its deadline: %v", f)
	}
	<-cancelled
	req(5, "core/block", `"five"`, false)
	endStream()
	if in := <-cancelled; in != `"five"` {
		t.Fatalf("cancelled %s", in)
	}
}

func waitDenied(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if status.Code(err) == codes.PermissionDenied {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still accepted after the connection closed: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The call stream carries many calls at once, each ended by its last
// result; a cancelled caller aborts its call on the plugin; a closed
// stream fails what is pending.
func TestCallMux(t *testing.T) {
	blocked := make(chan struct{}, 2)
	release := make(chan struct{})
	p := &rawPlugin{manifest: manifest("mux", "mux/echo")}
	p.call = func(ctx context.Context, _ uint64, r *pluginpb.InvokeRequest) (*pluginpb.InvokeResult, error) {
		if string(r.Input) == `"block"` {
			blocked <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: r.Input}, nil
	}
	th := newTestHost(t, p)
	th.start()
	in := th.h.plugins["mux"].current()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprint(i)
			var got []byte
			err := in.mux.call(context.Background(), 10_000+uint64(i), &pluginpb.InvokeRequest{Input: []byte(want)}, func(r *pluginpb.InvokeResult) error {
				got = r.Output
				return nil
			})
			if err != nil || string(got) != want {
				t.Errorf("call %d: %q %v", i, got, err)
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- in.mux.call(ctx, 1, &pluginpb.InvokeRequest{Input: []byte(`"block"`)}, func(*pluginpb.InvokeResult) error { return nil })
	}()
	<-blocked // the call reached the plugin
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	close(release)
	pending := make(chan error)
	go func() {
		pending <- in.mux.call(context.Background(), 2, &pluginpb.InvokeRequest{Input: []byte(`"block"`)}, func(*pluginpb.InvokeResult) error { return nil })
	}()
	th.launcherOf("mux").Last().Stop(0)
	if err := <-pending; err != nil && !errors.Is(err, errMuxClosed) {
		t.Fatalf("pending call when the stream closed: %v", err)
	}
}

// chunkPipe is the plugin's side of a Host.Stream RPC in memory.
type chunkPipe struct {
	out chan *pluginpb.Chunk // what the bridge sends to the plugin
	in  chan *pluginpb.Chunk // what the plugin sends; closed: the RPC ended
}

func (c *chunkPipe) Send(ch *pluginpb.Chunk) error {
	c.out <- &pluginpb.Chunk{Data: append([]byte(nil), ch.Data...), Fin: ch.Fin, Reset_: ch.Reset_, Code: ch.Code}
	return nil
}

func (c *chunkPipe) Recv() (*pluginpb.Chunk, error) {
	ch, ok := <-c.in
	if !ok {
		return nil, io.EOF
	}
	return ch, nil
}

// bridged starts a bridge between a peer's stream and a chunk RPC.
func bridged(t *testing.T) (peer endpoint.Stream, rpc *chunkPipe, done chan struct{}) {
	t.Helper()
	peerConn, nodeConn := endpoint.Pipe("alknet/x")
	t.Cleanup(func() { _ = peerConn.CloseWithError(0, "") })
	accepted := make(chan endpoint.Stream, 1)
	go func() {
		st, err := nodeConn.AcceptStream(context.Background())
		if err == nil {
			accepted <- st
		}
	}()
	peer, err := peerConn.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rpc = &chunkPipe{out: make(chan *pluginpb.Chunk, 16), in: make(chan *pluginpb.Chunk, 16)}
	done = make(chan struct{})
	st := <-accepted
	go func() {
		bridge(st, rpc)
		close(done)
	}()
	return peer, rpc, done
}

// The bridge carries bytes both ways, a half-close in either direction and
// a reset with its code in either direction.
func TestBridge(t *testing.T) {
	peer, rpc, done := bridged(t)
	if _, err := peer.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if c := <-rpc.out; string(c.Data) != "hello" {
		t.Fatalf("plugin got %+v", c)
	}
	_ = peer.CloseWrite()
	if c := <-rpc.out; !c.Fin {
		t.Fatalf("plugin got %+v, want the half-close", c)
	}
	rpc.in <- &pluginpb.Chunk{Data: []byte("back")}
	buf := make([]byte, 16)
	if n, err := peer.Read(buf); err != nil || string(buf[:n]) != "back" {
		t.Fatalf("peer read %q %v", buf[:n], err)
	}
	rpc.in <- &pluginpb.Chunk{Reset_: true, Code: 7}
	var re *endpoint.ResetError
	if _, err := peer.Read(buf); !errors.As(err, &re) || re.Code != 7 {
		t.Fatalf("peer read after the plugin's reset: %v", err)
	}
	<-done

	peer, rpc, done = bridged(t)
	peer.CancelWrite(9)
	if c := <-rpc.out; !c.Reset_ || c.Code != 9 {
		t.Fatalf("plugin got %+v, want reset 9", c)
	}
	rpc.in <- &pluginpb.Chunk{Fin: true}
	if _, err := peer.Read(buf); err != io.EOF {
		t.Fatalf("peer read after the plugin's half-close: %v", err)
	}
	<-done

	// The plugin going away mid-stream resets the peer's stream.
	peer, rpc, done = bridged(t)
	close(rpc.in)
	if _, err := peer.Read(buf); !errors.As(err, &re) || re.Code != uint64(endpoint.CodeUnavailable) {
		t.Fatalf("peer read after the plugin went away: %v", err)
	}
	_ = peer.CloseWrite()
	<-rpc.out
	<-done
}

// An operation that declares acts_as_caller calls others as its caller:
// the caller's identity and every gate (access control, internal
// operations hidden), any operation — not the env with the plugin's
// authority. One that does not declare it is refused.
func TestInvokeAsCaller(t *testing.T) {
	p := &rawPlugin{manifest: manifest("probe", "probe/agent", "probe/plain")}
	p.manifest.Operations[0].ActsAsCaller = true
	p.call = func(ctx context.Context, handle uint64, r *pluginpb.InvokeRequest) (*pluginpb.InvokeResult, error) {
		var target string
		_ = json.Unmarshal(r.Input, &target)
		st, err := p.hostClient().Invoke(ctx, &pluginpb.HostInvokeRequest{As: handle, Operation: target, Input: []byte("null"), AsCaller: true})
		if err == nil {
			var res *pluginpb.InvokeResult
			if res, err = st.Recv(); err == nil {
				return res, nil
			}
		}
		return &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: []byte(`"host refused: ` + status.Code(err).String() + `"`)}, nil
	}
	th := newTestHost(t, p)
	whoami := func(ctx context.Context, _ json.RawMessage) (any, error) {
		info, _ := call.FromContext(ctx)
		if info.Identity == nil {
			return "anonymous", nil
		}
		return fmt.Sprintf("%s internal=%v parent=%s", info.Identity.ID, info.Internal, info.ParentID), nil
	}
	for _, r := range []call.Registration{
		{Spec: call.Spec{Name: "core/whoami", OpType: call.Query}, Call: whoami},
		{Spec: call.Spec{Name: "core/admin", OpType: call.Query, AccessControl: call.AccessControl{RequiredScopes: []string{"admin"}}}, Call: whoami},
		{Spec: call.Spec{Name: "core/hidden", OpType: call.Query, Visibility: call.Internal}, Call: whoami},
	} {
		if err := th.reg.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	th.start()
	th.waitState("probe", StateReady, nil)
	ops := &auth.Identity{ID: "ops", Scopes: []string{"admin"}}
	guest := &auth.Identity{ID: "guest"}
	for _, tc := range []struct {
		op, target string
		as         *auth.Identity
		want       string // output, or the error code
	}{
		{"probe/agent", "core/whoami", ops, `"ops internal=false parent=r"`},
		{"probe/agent", "core/admin", ops, `"ops internal=false parent=r"`},
		{"probe/agent", "core/admin", guest, "FORBIDDEN"},
		{"probe/agent", "core/admin", nil, "FORBIDDEN"},
		{"probe/agent", "core/hidden", ops, "NOT_FOUND"},
		{"probe/plain", "core/whoami", ops, `"host refused: FailedPrecondition"`}, // not declared
	} {
		out, cerr := th.call(tc.op, fmt.Sprintf("%q", tc.target), tc.as)
		got := string(out)
		if cerr != nil {
			got = string(cerr.Code)
		}
		if got != tc.want {
			t.Errorf("%s → %s as %v: %s, want %s", tc.op, tc.target, tc.as, got, tc.want)
		}
	}
	out, _ := th.call("services/schema", `{"name":"probe/agent"}`, ops)
	if !strings.Contains(string(out), `"acts_as_caller":true`) {
		t.Errorf("services/schema of probe/agent does not show acts_as_caller: %s", out)
	}
}

// What one plugin can make the core hold is bounded: accepts waiting on a
// connection, Host.Invoke calls running, connections it dialed. Past each
// bound the next request is refused with RESOURCE_EXHAUSTED — exactly one
// of bound+1 requests made at once — and what runs goes on.
func TestHostBoundsWhatAPluginHolds(t *testing.T) {
	// Smaller than the node's, so that the race detector's goroutine
	// limit is not reached; the same code counts.
	invokes, dialed, accepts := maxHostInvokes, maxDialedConns, maxPendingAccepts
	maxHostInvokes, maxDialedConns, maxPendingAccepts = 100, 100, 16
	t.Cleanup(func() { maxHostInvokes, maxDialedConns, maxPendingAccepts = invokes, dialed, accepts })
	p := &rawPlugin{manifest: manifest("probe"), conns: make(chan uint64, 1)}
	th := newTestHost(t, p)
	_ = th.reg.Register(call.Registration{Spec: call.Spec{Name: "core/block", OpType: call.Subscription},
		Stream: func(ctx context.Context, _ json.RawMessage, _ func(any) error) error {
			<-ctx.Done()
			return ctx.Err()
		}})
	if err := th.ep.Register("alknet/target", "test", endpoint.HandlerFunc(func(_ context.Context, c endpoint.Conn, _ auth.AuthContext) error {
		<-c.Context().Done()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	th.start()
	th.waitState("probe", StateReady, nil)
	_, conn := th.serveConn(t, p, "alknet/probe", "alice")
	h := p.hostClient()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// n requests at once: start each, and report how each ended (nil: it
	// is still running when ctx ends).
	atOnce := func(n int, start func(ctx context.Context) error) (exhausted int, errs []error) {
		t.Helper()
		rctx, stop := context.WithCancel(ctx)
		ended := make(chan error, n)
		for range n {
			go func() { ended <- start(rctx) }()
		}
		// The refused one ends at once; the others wait for rctx.
		first := <-ended
		if status.Code(first) != codes.ResourceExhausted {
			t.Fatalf("the first of %d requests to end: %v, want RESOURCE_EXHAUSTED", n, first)
		}
		stop()
		errs = append(errs, first)
		for range n - 1 {
			errs = append(errs, <-ended)
		}
		for _, err := range errs {
			if status.Code(err) == codes.ResourceExhausted {
				exhausted++
			}
		}
		return exhausted, errs
	}

	accept := func(ctx context.Context) error {
		st, err := h.Stream(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&pluginpb.Chunk{Open: &pluginpb.StreamOpen{Conn: conn, Accept: true}}); err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	if n, errs := atOnce(int(maxPendingAccepts)+1, accept); n != 1 {
		t.Errorf("%d accepts at once on one connection: %d refused (%v), want 1", maxPendingAccepts+1, n, errs[0])
	}

	invoke := func(ctx context.Context) error {
		st, err := h.Invoke(ctx, &pluginpb.HostInvokeRequest{As: conn, Operation: "core/block", Input: []byte("null"), Subscribe: true})
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	if n, _ := atOnce(int(maxHostInvokes)+1, invoke); n != 1 {
		t.Errorf("%d Host.Invoke calls at once: %d refused, want 1", maxHostInvokes+1, n)
	}

	var dialMu sync.Mutex
	var refs []uint64
	dial := func(ctx context.Context) error {
		ref, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: "alknet/target", As: conn})
		if err != nil {
			return err
		}
		dialMu.Lock()
		refs = append(refs, ref.GetConn())
		dialMu.Unlock()
		<-ctx.Done() // the connection stays open meanwhile
		_, _ = h.CloseConnection(context.Background(), &pluginpb.CloseConnectionRequest{Conn: ref.GetConn()})
		return nil
	}
	if n, _ := atOnce(int(maxDialedConns)+1, dial); n != 1 {
		t.Errorf("%d connections dialed at once: %d refused, want 1", maxDialedConns+1, n)
	}
	// Closed connections give their places back.
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor("the closed dialed connections still count", func() bool { return th.sup("probe").current().dialed.Load() == 0 })
	if _, err := h.DialInternal(ctx, &pluginpb.DialInternalRequest{Alpn: "alknet/target", As: conn}); err != nil {
		t.Fatalf("a dial after the others closed: %v", err)
	}
}

// tctx bounds a test's wait for a reload.
func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sup is plugin name's supervisor.
func (th *testHost) sup(name string) *supervisor {
	s, _ := th.h.supervisor(name)
	return s
}
