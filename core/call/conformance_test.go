package call_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/capability"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

type staticCert struct{ c tls.Certificate }

func (s staticCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.c, nil }

type keyPair struct {
	cert tls.Certificate
	fp   string
}

func newKey(t testing.TB) keyPair {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	c, err := identity.RawKeyTLSCertificate(k)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{c, identity.KeyFingerprint(k.Public().(ed25519.PublicKey))}
}

// server is node A: an endpoint serving alknet/call over reg.
type server struct {
	ep  *endpoint.Endpoint
	key keyPair
	reg *call.Registry
}

func startServer(t *testing.T, reg *call.Registry, pol *auth.Policy) *server {
	t.Helper()
	k := newKey(t)
	prov := auth.NewProvider(pol)
	ep := endpoint.New(endpoint.Options{Listen: "127.0.0.1:0", Certs: staticCert{k.cert}, Auth: prov, DrainTimeout: time.Second})
	if err := ep.Register(call.ALPN, "test", &call.Adapter{Registry: reg, Policy: prov.Policy}); err != nil {
		t.Fatal(err)
	}
	if err := ep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.Shutdown)
	return &server{ep: ep, key: k, reg: reg}
}

// connect dials srv as node B with client c and credentials tweaks.
func connect(t *testing.T, srv *server, c *call.Client, mod func(*call.Credentials)) *call.Connection {
	t.Helper()
	me := newKey(t)
	cred := call.Credentials{TLS: &me.cert, Peer: srv.key.fp}
	if mod != nil {
		mod(&cred)
	}
	addr := srv.ep.UDPAddr().String()
	if cred.TCP {
		addr = srv.ep.TCPAddr().String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := c.Connect(ctx, addr, cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func code(err error) string {
	var ce *call.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	if err == nil {
		return ""
	}
	return "not a call error: " + err.Error()
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func query(name string, f call.CallFunc) call.Registration {
	return call.Registration{Spec: call.Spec{Name: name, OpType: call.Query}, Call: f}
}

func echo(_ context.Context, in json.RawMessage) (any, error) { return in, nil }

// --- Registry ---

func TestNotFoundUnknownAndInternalFromWire(t *testing.T) {
	reg := call.NewRegistry(nil)
	var ran atomic.Int32
	r := query("secret/op", func(context.Context, json.RawMessage) (any, error) { ran.Add(1); return "x", nil })
	r.Spec.Visibility = call.Internal
	if err := reg.Register(r); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	_, err := conn.Call(ctx5(t), "/nope/op", nil)
	if code(err) != call.CodeNotFound || err.Error() != "NOT_FOUND: operation not found: nope/op" {
		t.Fatalf("unknown: %v", err)
	}
	_, err = conn.Call(ctx5(t), "/secret/op", nil)
	if code(err) != call.CodeNotFound || !strings.Contains(err.Error(), "operation not found: secret/op") {
		t.Fatalf("internal from wire: %v", err)
	}
	if ran.Load() != 0 {
		t.Fatal("internal handler ran for a wire call")
	}
}

func TestForbiddenTexts(t *testing.T) {
	reg := call.NewRegistry(nil)
	for name, ac := range map[string]call.AccessControl{
		"a/all": {RequiredScopes: []string{"admin", "ops"}},
		"a/any": {RequiredScopesAny: []string{"git:read", "git:write"}},
		"a/res": {ResourceType: "repo", ResourceAction: "write"},
	} {
		r := query(name, echo)
		r.Spec.AccessControl = ac
		_ = reg.Register(r)
	}
	_ = reg.Register(query("a/open", echo))
	tok := "tok-ops-only"
	pol, _ := auth.NewPolicy([]auth.Peer{{PeerID: "p", AuthTokenHash: auth.HashToken(tok), Scopes: []string{"ops"}, Resources: map[string][]string{"repo": {"read"}}}}, nil)
	srv := startServer(t, reg, pol)
	anon := connect(t, srv, call.New(nil), nil)
	if _, err := anon.Call(ctx5(t), "a/all", nil); err == nil || err.Error() != "FORBIDDEN: authentication required" {
		t.Fatalf("anonymous: %v", err)
	}
	if out, err := anon.Call(ctx5(t), "a/open", 5); err != nil || string(out) != "5" {
		t.Fatalf("unrestricted op for anonymous: %s %v", out, err)
	}
	p := connect(t, srv, call.New(nil), func(c *call.Credentials) { c.AuthToken = tok })
	for name, want := range map[string]string{
		"a/all": "missing required scope: admin",
		"a/any": "missing required scope (any of: git:read, git:write)",
		"a/res": "missing resource permission: repo:write",
	} {
		_, err := p.Call(ctx5(t), name, nil)
		if code(err) != call.CodeForbidden || !strings.HasSuffix(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
}

func TestInvalidInputOnSchemaMismatch(t *testing.T) {
	reg := call.NewRegistry(nil)
	r := query("fs/put", echo)
	r.Spec.InputSchema = json.RawMessage(`{"type":"object","required":["path"],"properties":{"path":{"type":"string"}},"additionalProperties":false}`)
	_ = reg.Register(r)
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	_, err := conn.Call(ctx5(t), "fs/put", map[string]any{"path": 3})
	var ce *call.Error
	if !errors.As(err, &ce) || ce.Code != call.CodeInvalidInput || ce.Details == nil {
		t.Fatalf("schema mismatch: %v", err)
	}
	if _, err := conn.Call(ctx5(t), "fs/put", map[string]any{"path": "/x"}); err != nil {
		t.Fatalf("valid input: %v", err)
	}
	if _, err := conn.Call(ctx5(t), "services/schema", map[string]any{}); code(err) != call.CodeInvalidInput {
		t.Fatalf("services/schema without name: %v", err)
	}
}

func TestInvalidOperationTypeBothWays(t *testing.T) {
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("q/one", echo))
	_ = reg.Register(call.Registration{Spec: call.Spec{Name: "s/many", OpType: call.Subscription},
		Stream: func(ctx context.Context, _ json.RawMessage, emit func(any) error) error { return emit(1) }})
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	if _, err := conn.Call(ctx5(t), "s/many", nil); code(err) != call.CodeInvalidOperationType {
		t.Fatalf("call of a subscription: %v", err)
	}
	sub, err := conn.Subscribe(ctx5(t), "q/one", nil)
	if err != nil {
		t.Fatal(err)
	}
	for range sub.Items {
	}
	if code(sub.Err()) != call.CodeInvalidOperationType {
		t.Fatalf("subscribe to a query: %v", sub.Err())
	}
}

func TestKindMismatchRejectedAtRegistration(t *testing.T) {
	reg := call.NewRegistry(nil)
	err := reg.Register(call.Registration{Spec: call.Spec{Name: "x/q", OpType: call.Query}, Stream: func(context.Context, json.RawMessage, func(any) error) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "x/q") {
		t.Fatalf("query with stream handler: %v", err)
	}
	err = reg.Register(call.Registration{Spec: call.Spec{Name: "x/s", OpType: call.Subscription}, Call: echo})
	if err == nil {
		t.Fatal("subscription with call handler accepted")
	}
	_ = reg.Register(query("x/dup", echo))
	if err := reg.Register(query("x/dup", echo)); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate: %v", err)
	}
	if err := reg.SetOwned("plugin:x", []call.Registration{query("x/dup", echo)}); err == nil || !strings.Contains(err.Error(), "belongs to local") {
		t.Fatalf("another owner took over x/dup: %v", err)
	}
}

// An owner replaces and removes only its own operations (a plugin's
// upgrade), never another owner's.
func TestSetOwnedReplacesOnlyOwnOperations(t *testing.T) {
	reg := call.NewRegistry(nil)
	if err := reg.SetOwned("plugin:a", []call.Registration{query("a/one", echo), query("a/two", echo)}); err != nil {
		t.Fatal(err)
	}
	// services/list is the core's: a set that names it is refused whole.
	err := reg.SetOwned("plugin:a", []call.Registration{query("a/one", echo), query("services/list", echo)})
	if err == nil || !strings.Contains(err.Error(), "services/list belongs to local") || !strings.Contains(err.Error(), "plugin:a") {
		t.Fatalf("took over services/list: %v", err)
	}
	if owner, _ := reg.Owner("services/list"); owner != "local" {
		t.Fatalf("services/list now belongs to %q", owner)
	}
	if _, ok := reg.Owner("a/two"); !ok {
		t.Fatal("a refused set changed the registry")
	}
	if err := reg.SetOwned("plugin:a", []call.Registration{query("a/one", echo)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := reg.Owner("a/two"); ok {
		t.Fatal("an upgrade that dropped a/two kept it")
	}
	reg.RemoveOwned("plugin:a")
	if _, ok := reg.Owner("a/one"); ok {
		t.Fatal("RemoveOwned kept a/one")
	}
	if _, ok := reg.Owner("services/list"); !ok {
		t.Fatal("RemoveOwned removed the core's services/list")
	}
}

func TestServicesListHidesInternalAndNotPermitted(t *testing.T) {
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("pub/op", echo))
	in := query("hidden/internal", echo)
	in.Spec.Visibility = call.Internal
	_ = reg.Register(in)
	adm := query("adm/op", echo)
	adm.Spec.AccessControl.RequiredScopes = []string{"admin"}
	_ = reg.Register(adm)
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	ops, err := conn.ServicesList(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	names := fmt.Sprint(ops)
	if !strings.Contains(names, "pub/op") || strings.Contains(names, "hidden/internal") || strings.Contains(names, "adm/op") {
		t.Fatalf("services/list: %v", names)
	}
	if _, err := conn.ServicesSchema(ctx5(t), "adm/op"); code(err) != call.CodeNotFound {
		t.Fatalf("schema of a not-permitted op: %v", err)
	}
	sp, err := conn.ServicesSchema(ctx5(t), "/pub/op")
	if err != nil || sp.Name != "pub/op" || sp.Namespace != "pub" || sp.OpType != call.Query || sp.Provenance != "local" {
		t.Fatalf("schema: %+v %v", sp, err)
	}
}

func TestUndeclaredErrorCodeIsInternal(t *testing.T) {
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("e/undeclared", func(context.Context, json.RawMessage) (any, error) {
		return nil, &call.Error{Code: "QUOTA_EXCEEDED", Message: "over quota"}
	}))
	decl := query("e/declared", func(context.Context, json.RawMessage) (any, error) {
		return nil, &call.Error{Code: "QUOTA_EXCEEDED", Message: "over quota"}
	})
	decl.Spec.ErrorSchemas = []call.ErrorSchema{{Code: "QUOTA_EXCEEDED"}}
	_ = reg.Register(decl)
	_ = reg.Register(query("e/panic", func(context.Context, json.RawMessage) (any, error) { panic("secret internals") }))
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	_, err := conn.Call(ctx5(t), "e/undeclared", nil)
	var ce *call.Error
	if !errors.As(err, &ce) || ce.Code != call.CodeInternal || !strings.Contains(fmt.Sprint(ce.Details), "QUOTA_EXCEEDED") {
		t.Fatalf("undeclared: %+v", err)
	}
	// A declared custom code reaches the client, which treats it as INTERNAL
	// (unknown to it) and keeps the original code.
	_, err = conn.Call(ctx5(t), "e/declared", nil)
	if !errors.As(err, &ce) || ce.Code != call.CodeInternal || !strings.Contains(fmt.Sprint(ce.Details), "QUOTA_EXCEEDED") {
		t.Fatalf("declared: %+v", err)
	}
	_, err = conn.Call(ctx5(t), "e/panic", nil)
	if code(err) != call.CodeInternal || strings.Contains(err.Error(), "secret") {
		t.Fatalf("panic: %v", err)
	}
}

// --- Events ---

// rawCall sends one request on a raw stream and returns every frame.
func rawCall(t *testing.T, srv *server, op string, input string) []call.Envelope {
	t.Helper()
	c, err := dial.Dial(ctx5(t), srv.ep.UDPAddr().String(), dial.Options{ALPN: call.ALPN, Peer: srv.key.fp})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	st, _ := c.OpenStream(ctx5(t))
	b, _ := call.Encode(call.EventRequested, "r1", call.RequestPayload{OperationID: op, Input: json.RawMessage(input)})
	_ = call.WriteFrame(st, b)
	_ = st.CloseWrite()
	var out []call.Envelope
	for {
		body, err := call.ReadFrame(st)
		if err != nil {
			return out
		}
		e, err := call.DecodeEnvelope(body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

func tickReg(t *testing.T) *call.Registry {
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("q/echo", echo))
	_ = reg.Register(call.Registration{Spec: call.Spec{Name: "s/ticks", OpType: call.Subscription},
		Stream: func(ctx context.Context, in json.RawMessage, emit func(any) error) error {
			var n int
			_ = json.Unmarshal(in, &n)
			for i := range n {
				if err := emit(i); err != nil {
					return err
				}
			}
			return nil
		}})
	_ = reg.Register(call.Registration{Spec: call.Spec{Name: "s/fail", OpType: call.Subscription},
		Stream: func(ctx context.Context, in json.RawMessage, emit func(any) error) error {
			_ = emit("first")
			return call.Errorf(call.CodeForbidden, "stop")
		}})
	return reg
}

func TestQueryIsOneFrame(t *testing.T) {
	srv := startServer(t, tickReg(t), nil)
	frames := rawCall(t, srv, "/q/echo", `{"x":1}`)
	if len(frames) != 1 || frames[0].Type != call.EventResponded || frames[0].ID != "r1" || string(frames[0].Payload) != `{"output":{"x":1}}` {
		t.Fatalf("frames %+v", frames)
	}
	// Without the leading slash too.
	if frames := rawCall(t, srv, "q/echo", `2`); len(frames) != 1 || string(frames[0].Payload) != `{"output":2}` {
		t.Fatalf("no slash: %+v", frames)
	}
}

func TestSubscriptionNRespondedThenCompleted(t *testing.T) {
	srv := startServer(t, tickReg(t), nil)
	frames := rawCall(t, srv, "/s/ticks", `3`)
	if len(frames) != 4 || frames[3].Type != call.EventCompleted || string(frames[3].Payload) != `{}` {
		t.Fatalf("frames %+v", frames)
	}
	for i := range 3 {
		if frames[i].Type != call.EventResponded || string(frames[i].Payload) != fmt.Sprintf(`{"output":%d}`, i) {
			t.Fatalf("frame %d: %+v", i, frames[i])
		}
	}
}

func TestErrorEndsSubscriptionWithoutCompleted(t *testing.T) {
	srv := startServer(t, tickReg(t), nil)
	frames := rawCall(t, srv, "/s/fail", `null`)
	if len(frames) != 2 || frames[0].Type != call.EventResponded || frames[1].Type != call.EventError {
		t.Fatalf("frames %+v", frames)
	}
}

func TestMalformedFrameDoesNotDisturbOtherStream(t *testing.T) {
	reg := tickReg(t)
	srv := startServer(t, reg, nil)
	c, err := dial.Dial(ctx5(t), srv.ep.UDPAddr().String(), dial.Options{ALPN: call.ALPN, Peer: srv.key.fp})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	good, _ := c.OpenStream(ctx5(t))
	bad, _ := c.OpenStream(ctx5(t))
	_, _ = bad.Write([]byte{0, 0, 0, 4, 'n', 'o', 'p', 'e'})
	_ = bad.CloseWrite()
	if _, err := io.ReadAll(bad); err == nil {
		t.Log("bad stream closed cleanly") // closed either way; what matters is the other stream
	}
	b, _ := call.Encode(call.EventRequested, "g", call.RequestPayload{OperationID: "/q/echo", Input: json.RawMessage(`"ok"`)})
	_ = call.WriteFrame(good, b)
	_ = good.CloseWrite()
	body, err := call.ReadFrame(good)
	if err != nil || !strings.Contains(string(body), `"output":"ok"`) {
		t.Fatalf("good stream: %s %v", body, err)
	}
}

// --- Identity ---

func whoami(ctx context.Context, _ json.RawMessage) (any, error) {
	info, _ := call.FromContext(ctx)
	return map[string]any{"id": idOf(info.Identity), "forwarded_for": idOf(info.ForwardedFor)}, nil
}

func idOf(i *auth.Identity) string {
	if i == nil {
		return ""
	}
	return i.ID
}

func TestTokenOverridesConnectionIdentity(t *testing.T) {
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("who/ami", whoami))
	me := newKey(t)
	tok := "token-of-ci"
	pol, _ := auth.NewPolicy([]auth.Peer{
		{PeerID: "conn-peer", Fingerprints: []string{me.fp}},
		{PeerID: "token-peer", AuthTokenHash: auth.HashToken(tok)},
	}, nil)
	srv := startServer(t, reg, pol)
	ask := func(token string) string {
		conn := connect(t, srv, call.New(nil), func(c *call.Credentials) { c.TLS = &me.cert; c.AuthToken = token })
		out, err := conn.Call(ctx5(t), "who/ami", nil)
		if err != nil {
			return err.Error()
		}
		return string(out)
	}
	if got := ask(""); !strings.Contains(got, `"id":"conn-peer"`) {
		t.Fatalf("connection identity: %s", got)
	}
	if got := ask(tok); !strings.Contains(got, `"id":"token-peer"`) {
		t.Fatalf("token identity: %s", got)
	}
	// TestUnresolvableTokenIsRefused: a caller that presents a token that
	// is not accepted is told so, never served as someone else.
	if got := ask("not-a-known-token"); got != "FORBIDDEN: token not accepted" {
		t.Fatalf("unresolvable token: %s", got)
	}
}

func TestForwardedForNeverSatisfiesAccessControl(t *testing.T) {
	reg := call.NewRegistry(nil)
	r := query("adm/who", whoami)
	r.Spec.AccessControl.RequiredScopes = []string{"admin"}
	_ = reg.Register(r)
	srv := startServer(t, reg, nil)
	c, err := dial.Dial(ctx5(t), srv.ep.UDPAddr().String(), dial.Options{ALPN: call.ALPN, Peer: srv.key.fp})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	st, _ := c.OpenStream(ctx5(t))
	b, _ := call.Encode(call.EventRequested, "f", call.RequestPayload{OperationID: "/adm/who", Input: json.RawMessage(`null`),
		ForwardedFor: &auth.Identity{ID: "root", Scopes: []string{"admin"}}})
	_ = call.WriteFrame(st, b)
	_ = st.CloseWrite()
	body, _ := call.ReadFrame(st)
	if !strings.Contains(string(body), `"FORBIDDEN"`) || !strings.Contains(string(body), "authentication required") {
		t.Fatalf("forwarded_for granted access: %s", body)
	}
}

// --- Abort and deadline ---

type sleeper struct {
	started, cancelled, childCancelled atomic.Int32
	startedCh                          chan struct{}
}

func sleepReg(t *testing.T, s *sleeper) *call.Registry {
	reg := call.NewRegistry(nil)
	s.startedCh = make(chan struct{}, 16)
	child := query("sleep/child", func(ctx context.Context, _ json.RawMessage) (any, error) {
		<-ctx.Done()
		s.childCancelled.Add(1)
		return nil, ctx.Err()
	})
	child.Spec.Visibility = call.Internal
	_ = reg.Register(child)
	parent := query("sleep/parent", func(ctx context.Context, _ json.RawMessage) (any, error) {
		s.started.Add(1)
		done := make(chan struct{})
		go func() { _, _ = call.Nested(ctx, "sleep/child", nil, call.AbortDependents); close(done) }()
		s.startedCh <- struct{}{}
		<-ctx.Done()
		s.cancelled.Add(1)
		<-done
		return nil, ctx.Err()
	})
	parent.Env = []string{"sleep/child"}
	_ = reg.Register(parent)
	return reg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAbortCancelsHandlerAndNestedCalls(t *testing.T) {
	s := &sleeper{}
	srv := startServer(t, sleepReg(t, s), nil)
	conn := connect(t, srv, call.New(nil), nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := conn.Call(ctx, "sleep/parent", nil, call.WithID("abort-me")); errc <- err }()
	<-s.startedCh
	cancel() // the client sends call.aborted for "abort-me"
	if err := <-errc; code(err) != call.CodeInternal {
		t.Fatalf("aborted call: %v", err)
	}
	waitFor(t, "handler and child cancelled", func() bool { return s.cancelled.Load() == 1 && s.childCancelled.Load() == 1 })
}

func TestAbortUnknownIDIsNoop(t *testing.T) {
	srv := startServer(t, tickReg(t), nil)
	conn := connect(t, srv, call.New(nil), nil)
	if err := conn.Abort("no-such-request"); err != nil {
		t.Fatal(err)
	}
	if out, err := conn.Call(ctx5(t), "q/echo", 1); err != nil || string(out) != "1" {
		t.Fatalf("after unknown abort: %v", err)
	}
}

func TestDroppingSubscriptionSendsAbort(t *testing.T) {
	reg := call.NewRegistry(nil)
	var ended atomic.Int32
	_ = reg.Register(call.Registration{Spec: call.Spec{Name: "s/forever", OpType: call.Subscription},
		Stream: func(ctx context.Context, _ json.RawMessage, emit func(any) error) error {
			defer ended.Add(1)
			for i := 0; ; i++ {
				if err := emit(i); err != nil {
					return err
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
		}})
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	sub, err := conn.Subscribe(ctx5(t), "s/forever", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-sub.Items
	<-sub.Items
	sub.Close()
	waitFor(t, "server handler to see the abort", func() bool { return ended.Load() == 1 })
}

// slowOp is the query slow/op: it answers after 10 s unless its context
// ends first, which it counts in cancelled.
func slowOp(cancelled *atomic.Int32) call.Registration {
	return query("slow/op", func(ctx context.Context, _ json.RawMessage) (any, error) {
		select {
		case <-time.After(10 * time.Second):
			return "late", nil
		case <-ctx.Done():
			cancelled.Add(1)
			return nil, ctx.Err()
		}
	})
}

func TestDeadlineYieldsTimeoutAndCancels(t *testing.T) {
	reg := call.NewRegistry(nil)
	reg.SetDeadline(300 * time.Millisecond)
	var sawCancel atomic.Int32
	_ = reg.Register(slowOp(&sawCancel))
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	_, err := conn.Call(ctx5(t), "slow/op", nil)
	var ce *call.Error
	if !errors.As(err, &ce) || ce.Code != call.CodeTimeout || !ce.Retryable {
		t.Fatalf("server deadline: %v", err)
	}
	waitFor(t, "handler context cancelled", func() bool { return sawCancel.Load() == 1 })
	// Client-side timeout of a pending call.
	reg.SetDeadline(time.Minute)
	_, err = conn.Call(ctx5(t), "slow/op", nil, call.WithTimeout(200*time.Millisecond))
	if code(err) != call.CodeTimeout {
		t.Fatalf("client timeout: %v", err)
	}
	waitFor(t, "abort after client timeout", func() bool { return sawCancel.Load() == 2 })
}

// --- Client: default deny ---

type capProbe struct {
	entered atomic.Int32
	sawCaps atomic.Value
}

func capReg(p *capProbe, remoteSafe bool) *call.Registry {
	reg := call.NewRegistry(nil)
	r := query("caps/read", func(ctx context.Context, _ json.RawMessage) (any, error) {
		p.entered.Add(1)
		info, _ := call.FromContext(ctx)
		p.sawCaps.Store(strings.Join(info.Capabilities.Names(), ","))
		return info.Capabilities.Names(), nil
	})
	r.Spec.RemoteSafe = remoteSafe
	r.Capabilities = capability.New(map[string][]byte{"openai_key": []byte("sk-secret")})
	_ = reg.Register(r)
	_ = reg.Register(query("plain/op", echo))
	return reg
}

// callBack has node A call B back over the connection B opened.
func callBack(t *testing.T, bReg *call.Registry, client func(*call.Registry) *call.Client) (json.RawMessage, error) {
	aReg := call.NewRegistry(nil)
	_ = aReg.Register(query("a/callback", func(ctx context.Context, in json.RawMessage) (any, error) {
		info, _ := call.FromContext(ctx)
		var name string
		_ = json.Unmarshal(in, &name)
		return info.Peer.Call(ctx, name, nil)
	}))
	conn := connect(t, startServer(t, aReg, nil), client(bReg), nil)
	return conn.Call(ctx5(t), "a/callback", "caps/read")
}

func TestDefaultDenyNotFoundAndHandlerNeverRuns(t *testing.T) {
	p := &capProbe{}
	_, err := callBack(t, capReg(p, false), func(r *call.Registry) *call.Client { return call.New(r) })
	if code(err) != call.CodeNotFound || !strings.Contains(err.Error(), "operation not found: caps/read") {
		t.Fatalf("non-remote-safe op through default-deny client: %v", err)
	}
	if p.entered.Load() != 0 {
		t.Fatal("handler (which reads capabilities) was entered")
	}
}

func TestRemoteSafeDispatchesWithCapabilities(t *testing.T) {
	p := &capProbe{}
	out, err := callBack(t, capReg(p, true), func(r *call.Registry) *call.Client { return call.New(r) })
	if err != nil || string(out) != `["openai_key"]` || p.entered.Load() != 1 || p.sawCaps.Load() != "openai_key" {
		t.Fatalf("remote_safe: %s %v", out, err)
	}
}

func TestTrustedPeerDispatchesAllExternal(t *testing.T) {
	p := &capProbe{}
	out, err := callBack(t, capReg(p, false), func(r *call.Registry) *call.Client { return call.TrustedPeer(r) })
	if err != nil || string(out) != `["openai_key"]` || p.entered.Load() != 1 {
		t.Fatalf("trusted peer: %s %v", out, err)
	}
}

func TestServicesListOnDefaultDenyHidesNonRemoteSafe(t *testing.T) {
	p := &capProbe{}
	bReg := capReg(p, false)
	aReg := call.NewRegistry(nil)
	_ = aReg.Register(query("a/list", func(ctx context.Context, _ json.RawMessage) (any, error) {
		info, _ := call.FromContext(ctx)
		ops, err := info.Peer.ServicesList(ctx)
		names := []string{}
		for _, o := range ops {
			names = append(names, o.Name)
		}
		return names, err
	}))
	conn := connect(t, startServer(t, aReg, nil), call.New(bReg), nil)
	out, err := conn.Call(ctx5(t), "a/list", nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "caps/read") || strings.Contains(string(out), "plain/op") || !strings.Contains(string(out), "services/list") {
		t.Fatalf("default-deny services/list: %s", out)
	}
	conn2 := connect(t, startServer(t, aReg, nil), call.TrustedPeer(bReg), nil)
	out, _ = conn2.Call(ctx5(t), "a/list", nil)
	if !strings.Contains(string(out), "caps/read") {
		t.Fatalf("trusted services/list: %s", out)
	}
}

func TestConnectionCloseFailsPendingCalls(t *testing.T) {
	s := &sleeper{}
	srv := startServer(t, sleepReg(t, s), nil)
	conn := connect(t, srv, call.New(nil), nil)
	errc := make(chan error, 1)
	go func() { _, err := conn.Call(context.Background(), "sleep/parent", nil); errc <- err }()
	<-s.startedCh
	_ = conn.Close()
	err := <-errc
	if err == nil || err.Error() != "INTERNAL: connection closed" {
		t.Fatalf("pending call on close: %v", err)
	}
	waitFor(t, "server handler cancelled when the connection closed", func() bool { return s.cancelled.Load() == 1 })
}

// --- Two nodes, both directions, batch, single stream ---

func TestTwoNodesCallBothWaysAndBatch100(t *testing.T) {
	bReg := call.NewRegistry(nil)
	_ = bReg.Register(call.Registration{Spec: call.Spec{Name: "b/hello", OpType: call.Query, RemoteSafe: true},
		Call: func(_ context.Context, in json.RawMessage) (any, error) { return "hello from B " + string(in), nil }})
	aReg := tickReg(t)
	_ = aReg.Register(query("a/callback", func(ctx context.Context, in json.RawMessage) (any, error) {
		info, _ := call.FromContext(ctx)
		return info.Peer.Call(ctx, "b/hello", in)
	}))
	for _, tcp := range []bool{false, true} {
		t.Run(fmt.Sprintf("tcp=%v", tcp), func(t *testing.T) {
			conn := connect(t, startServer(t, aReg, nil), call.New(bReg), func(c *call.Credentials) { c.TCP = tcp })
			out, err := conn.Call(ctx5(t), "a/callback", 42)
			if err != nil || string(out) != `"hello from B 42"` {
				t.Fatalf("A calls B back: %s %v", out, err)
			}
			reqs := make([]call.Request, 100)
			for i := range reqs {
				reqs[i] = call.Request{Name: "q/echo", Input: map[string]int{"i": i}}
			}
			res := conn.Batch(ctx5(t), reqs)
			ids := map[string]bool{}
			for i, r := range res {
				if r.Err != nil || string(r.Output) != fmt.Sprintf(`{"i":%d}`, i) {
					t.Fatalf("batch %d: %s %v", i, r.Output, r.Err)
				}
				ids[r.ID] = true
			}
			if len(ids) != 100 {
				t.Fatalf("%d distinct ids", len(ids))
			}
			sub, err := conn.Subscribe(ctx5(t), "s/ticks", 1000)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for item := range sub.Items {
				if string(item) != fmt.Sprint(n) {
					t.Fatalf("item %d = %s", n, item)
				}
				n++
			}
			if sub.Err() != nil || n != 1000 {
				t.Fatalf("subscription: %d items, %v", n, sub.Err())
			}
		})
	}
}

func TestImportPeerForwardsWithForwardedForAndAbort(t *testing.T) {
	// B serves remote-safe ops; A imports them under "b" and calls them
	// nested on behalf of a caller.
	bReg := call.NewRegistry(nil)
	var bSaw atomic.Value
	var bCancelled atomic.Int32
	bStarted := make(chan struct{}, 1)
	_ = bReg.Register(call.Registration{Spec: call.Spec{Name: "svc/who", OpType: call.Query, RemoteSafe: true},
		Call: func(ctx context.Context, in json.RawMessage) (any, error) {
			info, _ := call.FromContext(ctx)
			bSaw.Store(idOf(info.ForwardedFor))
			return "ok", nil
		}})
	_ = bReg.Register(call.Registration{Spec: call.Spec{Name: "svc/block", OpType: call.Query, RemoteSafe: true},
		Call: func(ctx context.Context, in json.RawMessage) (any, error) {
			bStarted <- struct{}{}
			<-ctx.Done()
			bCancelled.Add(1)
			return nil, ctx.Err()
		}})
	_ = bReg.Register(query("svc/private", echo)) // not remote-safe: not imported
	bSrv := startServer(t, bReg, nil)
	aReg := call.NewRegistry(nil)
	conn := connect(t, bSrv, call.New(aReg), nil)
	imp := call.ImportOptions{Prefix: "b", PeerName: "node-b"}
	names, err := call.ImportPeer(ctx5(t), aReg, conn.Session, imp)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(names) != "[b/services/list b/services/schema b/svc/block b/svc/who]" {
		t.Fatalf("imported %v", names)
	}
	// The same peer again replaces its set; another peer may not take
	// names it owns, and that attempt changes nothing.
	if names, err := call.ImportPeer(ctx5(t), aReg, conn.Session, imp); err != nil || len(names) != 4 {
		t.Fatalf("import of the same peer again: %v %v", names, err)
	}
	if _, err := call.ImportPeer(ctx5(t), aReg, conn.Session, call.ImportOptions{Prefix: "b", PeerName: "node-c"}); err == nil ||
		!strings.Contains(err.Error(), "belongs to remote:node-b") {
		t.Fatalf("another peer's import under the same prefix: %v", err)
	}
	if owner, _ := aReg.Owner("b/svc/who"); owner != "remote:node-b" {
		t.Fatalf("b/svc/who is owned by %q after the refused import", owner)
	}
	// A peer listing more than the bound is refused.
	if _, err := call.ImportPeer(ctx5(t), call.NewRegistry(nil), conn.Session, call.ImportOptions{Prefix: "b", PeerName: "node-b", MaxOperations: 3}); err == nil ||
		!strings.Contains(err.Error(), "lists 5 operations; at most 3") {
		t.Fatalf("import over the bound: %v", err)
	}
	// Only the operations the patterns name.
	cReg := call.NewRegistry(nil)
	if names, err := call.ImportPeer(ctx5(t), cReg, conn.Session, call.ImportOptions{Prefix: "b", PeerName: "node-b", Operations: []string{"svc/w*"}}); err != nil || fmt.Sprint(names) != "[b/svc/who]" {
		t.Fatalf("import of svc/w*: %v %v", names, err)
	}
	caller := &auth.Identity{ID: "alice", Scopes: []string{"admin"}}
	out, cerr := aReg.Invoke(ctx5(t), call.Invocation{Name: "b/svc/who", Internal: true, Identity: caller}, nil)
	if cerr != nil || string(out) != `"ok"` || bSaw.Load() != "alice" {
		t.Fatalf("forwarded call: %s %v forwarded_for=%v", out, cerr, bSaw.Load())
	}
	// Imported ops are internal: not callable from the wire.
	if _, cerr := aReg.Invoke(ctx5(t), call.Invocation{Name: "b/svc/who"}, nil); cerr == nil || cerr.Code != call.CodeNotFound {
		t.Fatalf("imported op from the wire: %v", cerr)
	}
	// Imported as external operations behind a local gate: a caller from
	// the wire needs the scope, and sees them only with it.
	dReg := call.NewRegistry(nil)
	if _, err := call.ImportPeer(ctx5(t), dReg, conn.Session, call.ImportOptions{Prefix: "b", PeerName: "node-b",
		Visibility: call.External, Access: call.AccessControl{RequiredScopesAny: []string{"peer:b", "admin"}}}); err != nil {
		t.Fatal(err)
	}
	bob := &auth.Identity{ID: "bob", Scopes: []string{"echo"}}
	if _, cerr := dReg.Invoke(ctx5(t), call.Invocation{Name: "b/svc/who", Identity: bob}, nil); cerr == nil || cerr.Code != call.CodeForbidden {
		t.Fatalf("gated import without the scope: %v", cerr)
	}
	for _, s := range dReg.ListFor(bob, false) {
		if strings.HasPrefix(s.Name, "b/") {
			t.Fatalf("bob is shown %s", s.Name)
		}
	}
	carol := &auth.Identity{ID: "carol", Scopes: []string{"peer:b"}}
	if out, cerr := dReg.Invoke(ctx5(t), call.Invocation{Name: "b/svc/who", Identity: carol}, nil); cerr != nil || string(out) != `"ok"` || bSaw.Load() != "carol" {
		t.Fatalf("gated import with the scope: %s %v forwarded_for=%v", out, cerr, bSaw.Load())
	}
	if s := dReg.ListFor(carol, true); slices.ContainsFunc(s, func(s call.Spec) bool { return strings.HasPrefix(s.Name, "b/") }) {
		t.Fatal("imported operations are offered to a default-deny client's peer: they are not remote-safe here")
	}
	// Abort reaches the peer across the forwarded call.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-bStarted; cancel() }()
	_, cerr = aReg.Invoke(ctx, call.Invocation{Name: "b/svc/block", Internal: true, Identity: caller}, nil)
	if cerr == nil {
		t.Fatal("aborted forwarded call succeeded")
	}
	waitFor(t, "peer handler cancelled", func() bool { return bCancelled.Load() == 1 })
}

func TestConcurrentCallsShareOneConnection(t *testing.T) {
	srv := startServer(t, tickReg(t), nil)
	conn := connect(t, srv, call.New(nil), nil)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := conn.Call(ctx5(t), "q/echo", i)
			if err != nil || string(out) != fmt.Sprint(i) {
				t.Errorf("call %d: %s %v", i, out, err)
			}
		}()
	}
	wg.Wait()
}

// The caller's own context deadline bounds a call like the call timeout
// does (the Go client puts the earlier of the two on the stream): TIMEOUT,
// and the handler is aborted.
func TestCallerDeadlineYieldsTimeoutAndAborts(t *testing.T) {
	reg := call.NewRegistry(nil)
	var sawCancel atomic.Int32
	_ = reg.Register(slowOp(&sawCancel))
	conn := connect(t, startServer(t, reg, nil), call.New(nil), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := conn.Call(ctx, "slow/op", nil)
	if code(err) != call.CodeTimeout {
		t.Fatalf("call past the caller's deadline: %v, want TIMEOUT", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("TIMEOUT came after %s; the caller's deadline was 200ms", d)
	}
	waitFor(t, "abort after the caller's deadline", func() bool { return sawCancel.Load() == 1 })
	// The connection still serves.
	if out, err := conn.Call(ctx5(t), "slow/op", nil, call.WithTimeout(50*time.Millisecond)); code(err) != call.CodeTimeout {
		t.Fatalf("second call: %s %v", out, err)
	}
}
