// Package sdktest runs a plugin in-process behind the node's own
// machinery, so what passes here behaves the same under a real node: the
// core's call registry with every gate (existence, visibility, access
// control, input schema, deadline), the plugin host's call stream and
// stream bridge, and the Host service with every RPC (nested calls,
// internal dials, authentication) — over in-memory gRPC connections with
// the production options and codec. Only the process boundary, go-plugin's
// handshake and AutoMTLS are left out.
//
//	h := sdktest.Start(t, myplugin.New(), sdktest.Options{Settings: map[string]any{"greeting": "hi"}})
//	out, err := h.Call(ctx, "hello/greet", "you", nil)
package sdktest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/pluginhost"
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/internal/hook"
	"alknet.dev/alknet/proto/pluginpb"
)

// Options configure a harness.
type Options struct {
	// Settings are the plugin's settings (any JSON-encodable value; nil:
	// none).
	Settings any
	// Capabilities are granted to the plugin and sent with every
	// connection and call, as the node does with configured grants.
	Capabilities map[string][]byte
	// Peers are the identities Host.Authenticate resolves credentials to.
	Peers []Peer
	// Logger receives the node side's log lines (default: none).
	Logger hclog.Logger
}

// Peer is an identity known to the harness's node, with the credentials
// that resolve to it.
type Peer struct {
	ID        string
	Scopes    []string
	Resources map[string][]string
	// SSHKeys are OpenSSH SHA256:<base64> key fingerprints.
	SSHKeys []string
	// Fingerprints are TLS fingerprints (ed25519:<hex>).
	Fingerprints []string
	// Token is a bearer token.
	Token string
}

// Harness is a plugin under test.
type Harness struct {
	name   string
	reg    *call.Registry
	ep     *endpoint.Endpoint
	host   *pluginhost.Host
	policy *auth.Provider

	mu       sync.Mutex
	caps     map[string][]byte
	settings json.RawMessage
}

// Start is New for tests: it fails t on error and closes at t.Cleanup.
func Start(t testing.TB, p sdk.Plugin, o Options) *Harness {
	t.Helper()
	h, err := New(p, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// New starts plugin p with options o; Close stops it.
func New(p sdk.Plugin, o Options) (*Harness, error) {
	newServer, manifest, err := hook.NewServer(p)
	if err != nil {
		return nil, err
	}
	h := &Harness{name: manifest.Name, caps: maps.Clone(o.Capabilities)}
	if o.Settings != nil {
		if h.settings, err = json.Marshal(o.Settings); err != nil {
			return nil, fmt.Errorf("settings: %w", err)
		}
	}
	pol, err := policy(o.Peers)
	if err != nil {
		return nil, err
	}
	h.policy = auth.NewProvider(pol)
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	h.reg = call.NewRegistry(log)
	h.ep = endpoint.New(endpoint.Options{Auth: h.policy, Logger: log, DrainTimeout: time.Second})
	protos := make([]int, len(manifest.ProtocolVersions))
	for i, v := range manifest.ProtocolVersions {
		protos[i] = int(v)
	}
	lock := &pluginhost.Lock{Format: 1, Plugins: map[string]*pluginhost.Locked{manifest.Name: {Versions: map[string]*pluginhost.Installed{
		manifest.Version: {Name: manifest.Name, Version: manifest.Version, ProtocolVersions: protos}}}}}
	h.host = pluginhost.New(pluginhost.Options{
		Catalog:  staticCatalog{lock},
		Launcher: pluginhost.InProcess(newServer),
		Endpoint: h.ep, Registry: h.reg, Logger: log,
		Config:  h.config,
		Resolve: h.resolve,
		Node:    &pluginpb.NodeInfo{Id: "ed25519:" + strings.Repeat("0", 64), Version: "sdktest", LogLevel: "debug"},
		Policy:  h.policy.Policy,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.host.Start(ctx); err != nil {
		return nil, err
	}
	for _, st := range h.host.Statuses() {
		if st.State != pluginhost.StateReady {
			h.Close()
			return nil, fmt.Errorf("plugin %s did not start: %s", st.Name, st.Error)
		}
	}
	return h, nil
}

type staticCatalog struct{ l *pluginhost.Lock }

func (c staticCatalog) Load() (*pluginhost.Lock, error) { return c.l, nil }

func policy(peers []Peer) (*auth.Policy, error) {
	ps := make([]auth.Peer, 0, len(peers))
	for _, p := range peers {
		ap := auth.Peer{PeerID: p.ID, Scopes: p.Scopes, Resources: p.Resources, SSHKeys: p.SSHKeys, Fingerprints: p.Fingerprints}
		if p.Token != "" {
			ap.AuthTokenHash = auth.HashToken(p.Token)
		}
		ps = append(ps, ap)
	}
	return auth.NewPolicy(ps, nil)
}

// grantPrefix marks the harness's grants (resolved from caps).
const grantPrefix = "sdktest:"

func (h *Harness) config(string) pluginhost.PluginConfig {
	h.mu.Lock()
	defer h.mu.Unlock()
	grants := map[string]string{}
	for name := range h.caps {
		grants[name] = grantPrefix + name
	}
	return pluginhost.PluginConfig{Settings: h.settings, Capabilities: grants}
}

func (h *Harness) resolve(grant string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.caps[strings.TrimPrefix(grant, grantPrefix)]
	if !ok {
		return nil, fmt.Errorf("no capability %q", grant)
	}
	return v, nil
}

// Close stops the plugin.
func (h *Harness) Close() {
	h.ep.Shutdown()
	h.host.Shutdown()
}

// SetCapabilities replaces the granted capabilities; the next connection
// or call gets them (as after a node reload).
func (h *Harness) SetCapabilities(caps map[string][]byte) {
	h.mu.Lock()
	h.caps = maps.Clone(caps)
	h.mu.Unlock()
}

// Reconfigure sends new settings as a node reload does, and waits until
// the plugin runs with them (applied live, or by a restart when the plugin
// asked for one).
func (h *Harness) Reconfigure(settings any) error {
	b, err := json.Marshal(settings)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.settings = b
	h.mu.Unlock()
	// A reload returns once the plugin's supervisor has acted on it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.host.Reload(ctx); err != nil {
		return err
	}
	if applied, _ := h.host.Settings(h.name); string(applied) != string(b) {
		return fmt.Errorf("the plugin runs with settings %s after the reload, want %s", applied, b)
	}
	return nil
}

func (h *Harness) status() pluginhost.Status {
	for _, st := range h.host.Statuses() {
		if st.Name == h.name {
			return st
		}
	}
	return pluginhost.Status{}
}

// AddOperation registers an operation of the node itself (provenance
// "local"), for the plugin's nested calls to reach.
func (h *Harness) AddOperation(name string, fn func(ctx context.Context, input json.RawMessage) (any, error)) error {
	return h.reg.Register(call.Registration{Spec: call.Spec{Name: name, OpType: call.Query}, Call: fn})
}

// ServeALPN serves alpn inside the harness's node with fn, for the
// plugin's internal dials to reach: fn gets each stream and the identity
// the dialing plugin acted as.
func (h *Harness) ServeALPN(alpn string, fn func(ctx context.Context, s endpoint.Stream, caller *sdk.Identity)) error {
	return h.ep.Register(alpn, "sdktest", endpoint.HandlerFunc(func(ctx context.Context, c endpoint.Conn, ac auth.AuthContext) error {
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			st, err := c.AcceptStream(ctx)
			if err != nil {
				return nil
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				fn(ctx, st, sdkIdentity(ac.Identity))
			}()
		}
	}))
}

// Call makes a query or mutation as a call from the network by caller
// (nil: anonymous) would: through every gate, then the plugin. A call
// error is an *sdk.Error.
func (h *Harness) Call(ctx context.Context, op string, input any, caller *sdk.Identity) (json.RawMessage, error) {
	out, err := h.invoke(ctx, op, input, caller, false, false, nil)
	return out, err
}

// CallInternal calls an internal operation, as a nested call would.
func (h *Harness) CallInternal(ctx context.Context, op string, input any) (json.RawMessage, error) {
	return h.invoke(ctx, op, input, nil, true, false, nil)
}

// Subscribe runs a subscription to its end and returns every item.
func (h *Harness) Subscribe(ctx context.Context, op string, input any, caller *sdk.Identity) ([]json.RawMessage, error) {
	var items []json.RawMessage
	_, err := h.invoke(ctx, op, input, caller, false, true, func(b json.RawMessage) error {
		items = append(items, append(json.RawMessage(nil), b...))
		return nil
	})
	return items, err
}

func (h *Harness) invoke(ctx context.Context, op string, input any, caller *sdk.Identity, internal, sub bool, emit func(json.RawMessage) error) (json.RawMessage, error) {
	in, err := json.Marshal(input)
	if err != nil {
		return nil, err
	}
	out, cerr := h.reg.Invoke(ctx, call.Invocation{Name: op, Input: in, Identity: authIdentity(caller), Internal: internal,
		RequestID: uuid.NewString(), Subscribe: sub}, emit)
	if cerr != nil {
		return nil, &sdk.Error{Code: sdk.Code(cerr.Code), Message: cerr.Message, Retryable: cerr.Retryable, Details: cerr.Details}
	}
	return out, nil
}

// Conn is the peer's side of a connection routed to the plugin.
type Conn struct {
	c endpoint.Conn
}

// Connect opens a connection on a.ALPN as if a peer described by a had
// connected to the node (a.Identity nil: anonymous); the plugin's
// ServeConn gets it with the granted capabilities.
func (h *Harness) Connect(_ context.Context, a sdk.Auth) (*Conn, error) {
	client, server := endpoint.Pipe(a.ALPN)
	ac := auth.AuthContext{Identity: authIdentity(a.Identity), ALPN: a.ALPN, Fingerprint: a.Fingerprint, Transport: a.Transport}
	if a.RemoteAddr != "" {
		ac.RemoteAddr = textAddr(a.RemoteAddr)
	}
	if err := h.ep.ServeInternal(server, ac); err != nil {
		return nil, err
	}
	return &Conn{c: client}, nil
}

// OpenStream opens a stream to the plugin; its ServeConn accepts it.
func (c *Conn) OpenStream(ctx context.Context) (*Stream, error) {
	st, err := c.c.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	return &Stream{st}, nil
}

// Close closes the connection; the plugin's AcceptStream fails.
func (c *Conn) Close() { _ = c.c.CloseWithError(0, "") }

// Closed is done when the connection is closed (by either side).
func (c *Conn) Closed() <-chan struct{} { return c.c.Context().Done() }

// Stream is the peer's end of one stream: Read, Write, CloseWrite
// (half-close: the plugin reads EOF) and Close.
type Stream struct{ endpoint.Stream }

type textAddr string

func (a textAddr) Network() string { return "tcp" }
func (a textAddr) String() string  { return string(a) }

var _ net.Addr = textAddr("")

func authIdentity(id *sdk.Identity) *auth.Identity {
	if id == nil {
		return nil
	}
	return &auth.Identity{ID: id.ID, Scopes: id.Scopes, Resources: id.Resources}
}

func sdkIdentity(id *auth.Identity) *sdk.Identity {
	if id == nil {
		return nil
	}
	return &sdk.Identity{ID: id.ID, Scopes: id.Scopes, Resources: id.Resources}
}
