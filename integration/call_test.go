package integration

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

func callConn(t *testing.T, srv *server, reg *call.Registry) *call.Connection {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	cert, _ := identity.RawKeyTLSCertificate(k)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := call.New(reg).Connect(ctx, srv.Addr, call.Credentials{TLS: &cert, Peer: srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func tctx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestCallBetweenProcesses: node B is `alknet serve`, node A is this test
// binary as a CallClient with its own registry, over real QUIC.
func TestCallBetweenProcesses(t *testing.T) {
	srv := startServe(t, newCLI(t, nil), "--enable-diag", "--call-deadline", "1s")
	aReg := call.NewRegistry(nil)
	_ = aReg.Register(call.Registration{Spec: call.Spec{Name: "a/hello", OpType: call.Query, RemoteSafe: true},
		Call: func(_ context.Context, in json.RawMessage) (any, error) { return "A says hi to " + string(in), nil }})
	conn := callConn(t, srv, aReg)

	// A calls B.
	info, err := conn.Call(tctx(t, 10*time.Second), "/node/info", nil)
	if err != nil || !strings.Contains(string(info), srv.FP) || !strings.Contains(string(info), `"alknet/call"`) {
		t.Fatalf("node/info: %s %v", info, err)
	}
	// B calls A back on the same connection.
	out, err := conn.Call(tctx(t, 10*time.Second), "/diag/callback", map[string]any{"name": "a/hello", "input": "B"})
	if err != nil || string(out) != `"A says hi to \"B\""` {
		t.Fatalf("callback: %s %v", out, err)
	}
	// A batch of 100 correlated requests.
	reqs := make([]call.Request, 100)
	for i := range reqs {
		reqs[i] = call.Request{Name: "diag/say", Input: map[string]int{"i": i}}
	}
	for i, r := range conn.Batch(tctx(t, 20*time.Second), reqs) {
		if r.Err != nil || string(r.Output) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("batch[%d]: %s %v", i, r.Output, r.Err)
		}
	}
	// A subscription of 1000 items, then completed.
	sub, err := conn.Subscribe(tctx(t, 20*time.Second), "diag/ticks", map[string]int{"count": 1000})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for item := range sub.Items {
		if string(item) != fmt.Sprintf(`{"n":%d}`, n) {
			t.Fatalf("item %d: %s", n, item)
		}
		n++
	}
	if sub.Err() != nil || n != 1000 {
		t.Fatalf("subscription: %d items, %v", n, sub.Err())
	}
	// Abort of a long handler: the handler sees its context cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := conn.Call(ctx, "diag/sleep", map[string]int{"ms": 60000}); errc <- err }()
	waitStats(t, conn, `"running":1`)
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("aborted call returned a result")
	}
	waitStats(t, conn, `"cancelled":1`)
	// A handler sleeping past the node's deadline (1s) yields TIMEOUT.
	_, err = conn.Call(tctx(t, 10*time.Second), "diag/sleep", map[string]int{"ms": 5000})
	var ce *call.Error
	if !asCallError(err, &ce) || ce.Code != call.CodeTimeout || !ce.Retryable {
		t.Fatalf("past deadline: %v", err)
	}
	waitStats(t, conn, `"timed_out":1`)
}

func asCallError(err error, ce **call.Error) bool {
	e, ok := err.(*call.Error)
	*ce = e
	return ok
}

func waitStats(t *testing.T, conn *call.Connection, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := conn.Call(tctx(t, 5*time.Second), "diag/stats", nil)
		if err == nil && strings.Contains(string(out), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("diag/stats never showed %s: %s %v", want, out, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMalformedFramesCloseOnlyTheirStream sends 1000 random, truncated and
// oversized frames, each on its own stream of one connection, while a
// well-formed call runs on another stream; the node keeps serving.
func TestMalformedFramesCloseOnlyTheirStream(t *testing.T) {
	srv := startServe(t, newCLI(t, nil), "--enable-diag")
	raw, err := dial.Dial(tctx(t, 10*time.Second), srv.Addr, dial.Options{ALPN: call.ALPN, Peer: srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseWithError(0, "")
	good := call.New(nil).Attach(raw, "")
	defer good.Close()

	// The well-formed call: a subscription that spans the whole attack.
	sub, err := good.Subscribe(tctx(t, 60*time.Second), "diag/ticks", map[string]int{"count": 200, "interval_ms": 10})
	if err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range 1000 {
		var frame []byte
		switch i % 4 {
		case 0: // random bytes
			frame = make([]byte, 1+rng.IntN(64))
			for j := range frame {
				frame[j] = byte(rng.UintN(256))
			}
		case 1: // truncated: length says more than is sent
			frame = binary.BigEndian.AppendUint32(nil, 100)
			frame = append(frame, `{"type":"call.requested"`...)
		case 2: // oversized length
			frame = binary.BigEndian.AppendUint32(nil, call.MaxFrame+1+uint32(rng.IntN(1000)))
		case 3: // valid length, not an envelope
			body := []byte(`{"type":"call.requested","id":`)
			frame = append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st, err := raw.OpenStream(ctx)
			if err != nil {
				t.Errorf("open stream %d: %v", i, err)
				return
			}
			_, _ = st.Write(frame)
			_ = st.CloseWrite()
			buf := make([]byte, 1)
			_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = st.Read(buf) // the node closes or resets the stream
			st.CancelRead(0)
		}()
	}
	wg.Wait()
	n := 0
	for range sub.Items {
		n++
	}
	if sub.Err() != nil || n != 200 {
		t.Fatalf("well-formed subscription beside the garbage: %d items, %v", n, sub.Err())
	}
	if out, err := good.Call(tctx(t, 10*time.Second), "diag/say", "still here"); err != nil || string(out) != `"still here"` {
		t.Fatalf("after the garbage: %s %v", out, err)
	}
	// A fresh connection works too: the process is alive.
	fresh := callConn(t, srv, nil)
	if _, err := fresh.Call(tctx(t, 10*time.Second), "node/info", nil); err != nil {
		t.Fatalf("new connection: %v", err)
	}
}

func TestCallCLI(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node, "--enable-diag")
	client := newCLI(t, nil)
	out := client.ok("", "call", "--peer", srv.FP, srv.Addr, "/diag/say", `{"x":[1,2]}`)
	if out != "{\n  \"x\": [\n    1,\n    2\n  ]\n}\n" {
		t.Fatalf("call output %q", out)
	}
	if out := client.ok(`"from stdin"`, "call", "--peer", srv.FP, srv.Addr, "/diag/say", "-"); out != "\"from stdin\"\n" {
		t.Fatalf("stdin input %q", out)
	}
	out = client.ok("", "call", "--peer", srv.FP, "--subscribe", srv.Addr, "/diag/ticks", `{"count":3}`)
	if out != "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n" {
		t.Fatalf("subscribe output %q", out)
	}
	r := client.run("", "call", "--peer", srv.FP, srv.Addr, "/nope/op")
	var ce call.Error
	if r.code != 1 || json.Unmarshal([]byte(strings.TrimSpace(r.stderr)), &ce) != nil || ce.Code != "NOT_FOUND" || r.stdout != "" {
		t.Fatalf("call.error: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = client.run("", "call", "--peer", srv.FP, srv.Addr, "/diag/sleep", `{"ms":"soon"}`)
	if r.code != 1 || !strings.Contains(r.stderr, `"code":"INVALID_INPUT"`) {
		t.Fatalf("invalid input: %+v", r)
	}
	if msg := client.fail("", "call", "--peer", srv.FP, srv.Addr, "/diag/say", `not json`); !strings.Contains(msg, "not JSON") {
		t.Fatalf("bad JSON argument: %s", msg)
	}
	list := client.ok("", "services", "--peer", srv.FP, srv.Addr)
	for _, want := range []string{"OPERATION", "/diag/ticks", "subscription", "/node/info", "/services/schema"} {
		if !strings.Contains(list, want) {
			t.Fatalf("services lacks %q:\n%s", want, list)
		}
	}
	var ops []call.Spec
	if err := json.Unmarshal([]byte(client.ok("", "services", "--json", "--peer", srv.FP, srv.Addr)), &ops); err != nil || len(ops) < 5 {
		t.Fatalf("services --json: %v %d", err, len(ops))
	}
	sch := client.ok("", "schema", "--peer", srv.FP, srv.Addr, "diag/ticks")
	if !strings.Contains(sch, `"op_type": "subscription"`) || !strings.Contains(sch, `"input_schema"`) {
		t.Fatalf("schema:\n%s", sch)
	}
	// A token from a file: an API key resolves to its prefix as identity.
	token := strings.TrimSpace(node.ok("", "apikey", "create", "--scope", "call:invoke"))
	srv.waitLog("configuration reloaded")
	tokFile := writeFile(t, t.TempDir()+"/tok", token+"\n", 0o600)
	client.ok("", "call", "--peer", srv.FP, "--token-file", tokFile, srv.Addr, "/diag/say", "1")
	srv.waitLog("method=token id=" + token[:8] + " result=accept")
	if strings.Contains(srv.logs.String(), token) {
		t.Fatal("token logged")
	}
}

// operatorConn connects to srv with the node's own key, read from its
// (plain) vault: the node's operator, with scope admin — what `alknet`
// beside the node is. node/info shows versions and plugins only to such
// callers.
func operatorConn(t *testing.T, srv *server) *call.Connection {
	t.Helper()
	f, err := vault.ReadFile(filepath.Join(srv.cli.dataDir, vault.FileName))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := f.Seed(nil)
	if err != nil {
		t.Fatal(err)
	}
	v := vault.New()
	v.UnlockSeed(seed)
	key, err := v.NodeKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := identity.RawKeyTLSCertificate(key.Signer())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := call.New(nil).Connect(tctx(t, 10*time.Second), srv.Addr, call.Credentials{TLS: &cert, Peer: srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
