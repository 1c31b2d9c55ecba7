package call_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
)

// startLimitedServer is startServer with limits and a node-wide budget.
func startLimitedServer(t *testing.T, reg *call.Registry, pol *auth.Policy, l call.Limits, node *call.Budget, log hclog.Logger) *server {
	t.Helper()
	k := newKey(t)
	prov := auth.NewProvider(pol)
	ep := endpoint.New(endpoint.Options{Listen: "127.0.0.1:0", Certs: staticCert{k.cert}, Auth: prov, DrainTimeout: time.Second})
	a := &call.Adapter{Registry: reg, Policy: prov.Policy, Limits: func() call.Limits { return l }, NodeBudget: node, Logger: log}
	if err := ep.Register(call.ALPN, "test", a); err != nil {
		t.Fatal(err)
	}
	if err := ep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.Shutdown)
	return &server{ep: ep, key: k, reg: reg}
}

// A header announcing a large frame costs the node only the bytes that
// arrive: the reader's buffer grows with them, and the budget counts them.
func TestFrameBodyGrowsWithArrivingBytes(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 60<<20)
	in := io.MultiReader(bytes.NewReader(hdr[:]), bytes.NewReader(make([]byte, 1024)))
	br := newTrackingReader(in)
	if _, err := call.ReadFrame(br); !errors.Is(err, io.EOF) {
		t.Fatalf("truncated frame: %v, want EOF", err)
	}
	if br.maxAsk > 64<<10 {
		t.Fatalf("the reader asked for %d bytes at once for a frame of which 1 KiB arrived", br.maxAsk)
	}
}

type trackingReader struct {
	r      io.Reader
	maxAsk int
}

func newTrackingReader(r io.Reader) *trackingReader { return &trackingReader{r: r} }

func (t *trackingReader) Read(p []byte) (int, error) {
	t.maxAsk = max(t.maxAsk, len(p))
	return t.r.Read(p)
}

// A frame over limits.max_frame_bytes closes its stream; a stream whose
// frames the connection's budget cannot hold is reset; other streams and
// the connection go on.
func TestFrameLimitAndBudgetResetOnlyTheStream(t *testing.T) {
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("q/echo", echo))
	logs := &syncWriter{w: &bytes.Buffer{}}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
	srv := startLimitedServer(t, reg, nil, call.Limits{MaxFrameBytes: 64 << 10, MaxRequestBytes: 128 << 10}, nil, log)
	c, err := dial.Dial(ctx5(t), srv.ep.UDPAddr().String(), dial.Options{ALPN: call.ALPN, Peer: srv.key.fp})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")

	// Over the frame limit: the stream ends without an answer.
	st, _ := c.OpenStream(ctx5(t))
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 64<<10+1)
	_, _ = st.Write(hdr[:])
	if _, err := io.ReadAll(st); err == nil {
		// A clean EOF is fine too: what matters is no answer.
	}

	// Over the connection's budget: four streams each announce 60 KiB and
	// send 50 KiB of it, holding 200 KiB > 128 KiB between them.
	var streams []endpoint.Stream
	for range 4 {
		st, err := c.OpenStream(ctx5(t))
		if err != nil {
			t.Fatal(err)
		}
		binary.BigEndian.PutUint32(hdr[:], 60<<10)
		_, _ = st.Write(hdr[:])
		_, _ = st.Write(make([]byte, 50<<10))
		streams = append(streams, st)
	}
	waitFor(t, "the over-budget log line", func() bool {
		return strings.Contains(logs.String(), "request bytes over budget; stream reset") &&
			strings.Contains(logs.String(), "budget=limits.max_request_bytes_per_connection")
	})
	// The connection still answers.
	if out, err := rawCallOn(t, c, "q/echo", `"still"`); err != nil || !strings.Contains(out, `"still"`) {
		t.Fatalf("after the reset: %s %v", out, err)
	}
	for _, st := range streams {
		st.CancelWrite(0)
	}
}

// rawCallOn sends one request on a new stream of c and returns the answer.
func rawCallOn(t *testing.T, c endpoint.Conn, op, input string) (string, error) {
	t.Helper()
	st, err := c.OpenStream(ctx5(t))
	if err != nil {
		return "", err
	}
	b, _ := call.Encode(call.EventRequested, "r1", json.RawMessage(`{"operationId":"/`+op+`","input":`+input+`}`))
	if err := call.WriteFrame(st, b); err != nil {
		return "", err
	}
	_ = st.CloseWrite()
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	body, err := call.ReadFrame(st)
	return string(body), err
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// Access control runs before the input is read, and number literals are
// bounded by their length before the schema's big-number parsing: a huge
// literal costs an anonymous caller a FORBIDDEN for a scoped operation
// and an INVALID_INPUT naming the limit for an open one.
func TestAccessControlBeforeInputAndLiteralBounds(t *testing.T) {
	reg := call.NewRegistry(nil)
	schema := json.RawMessage(`{"type":"object","properties":{"count":{"type":"integer","maximum":10}}}`)
	open := query("x/open", echo)
	open.Spec.InputSchema = schema
	scoped := query("x/scoped", echo)
	scoped.Spec.InputSchema = schema
	scoped.Spec.AccessControl.RequiredScopes = []string{"admin"}
	_ = reg.Register(open)
	_ = reg.Register(scoped)
	huge := `{"count":` + strings.Repeat("9", 1_000_000) + `}`
	ctx := context.Background()
	_, cerr := reg.Invoke(ctx, call.Invocation{Name: "x/scoped", Input: json.RawMessage(huge)}, nil)
	if cerr == nil || cerr.Code != call.CodeForbidden || cerr.Message != "authentication required" {
		t.Fatalf("scoped operation, anonymous: %v", cerr)
	}
	_, cerr = reg.Invoke(ctx, call.Invocation{Name: "x/scoped", Input: json.RawMessage(`{"count":"bad"}`)}, nil)
	if cerr == nil || cerr.Code != call.CodeForbidden {
		t.Fatalf("scoped operation with invalid input, anonymous: %v (the input must not matter)", cerr)
	}
	_, cerr = reg.Invoke(ctx, call.Invocation{Name: "x/open", Input: json.RawMessage(huge)}, nil)
	if cerr == nil || cerr.Code != call.CodeInvalidInput || !strings.Contains(cerr.Message, "a number literal of 1000000 characters; the limit is 100") {
		t.Fatalf("open operation, huge literal: %v", cerr)
	}
	deep := strings.Repeat("[", 200) + strings.Repeat("]", 200)
	_, cerr = reg.Invoke(ctx, call.Invocation{Name: "x/open", Input: json.RawMessage(deep)}, nil)
	if cerr == nil || cerr.Code != call.CodeInvalidInput || !strings.Contains(cerr.Message, "deeper than 128") {
		t.Fatalf("open operation, deep nesting: %v", cerr)
	}
	if out, cerr := reg.Invoke(ctx, call.Invocation{Name: "x/open", Input: json.RawMessage(`{"count":3}`)}, nil); cerr != nil || string(out) != `{"count":3}` {
		t.Fatalf("a valid input: %s %v", out, cerr)
	}
}

// tcpSession serves reg on one end of an in-memory single-stream
// connection and returns the client's end.
func tcpSession(t *testing.T, reg *call.Registry, l call.Limits, pol *auth.Policy) (net.Conn, *call.Session) {
	t.Helper()
	a, b := net.Pipe()
	var p func() *auth.Policy
	if pol != nil {
		p = func() *auth.Policy { return pol }
	}
	s := call.NewSession(endpoint.WrapStreamConn(a, call.ALPN, auth.TransportTCPTLS), call.SessionOptions{Registry: reg, Limits: l, Policy: p})
	done := make(chan struct{})
	go func() { s.Run(context.Background()); close(done) }()
	t.Cleanup(func() { _ = b.Close(); _ = s.Close(); <-done })
	return b, s
}

func writeRequest(t *testing.T, w io.Writer, id, op, input, token string) {
	t.Helper()
	p := `{"operationId":"/` + op + `","input":` + input
	if token != "" {
		p += `,"auth_token":"` + token + `"`
	}
	b, _ := call.Encode(call.EventRequested, id, json.RawMessage(p+"}"))
	if err := call.WriteFrame(w, b); err != nil {
		t.Fatal(err)
	}
}

// On a single-stream (TCP) connection at most MaxInFlight requests are
// served at once; more wait to be read. When the client goes away,
// everything it started is cancelled.
func TestSingleStreamInFlightCapAndCancelOnClose(t *testing.T) {
	var running, peak, cancelled atomic.Int32
	release := make(chan struct{})
	reg := call.NewRegistry(nil)
	_ = reg.Register(call.Registration{Spec: call.Spec{Name: "x/hold", OpType: call.Subscription},
		Stream: func(ctx context.Context, _ json.RawMessage, _ func(any) error) error {
			n := running.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			defer running.Add(-1)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				cancelled.Add(1)
				return ctx.Err()
			}
		}})
	client, _ := tcpSession(t, reg, call.Limits{MaxInFlight: 3}, nil)
	go func() { _, _ = io.Copy(io.Discard, client) }()
	go func() {
		for i := range 10 {
			p := `{"operationId":"/x/hold","input":null}`
			b, _ := call.Encode(call.EventRequested, "s"+string(rune('a'+i)), json.RawMessage(p))
			if call.WriteFrame(client, b) != nil {
				return
			}
		}
	}()
	waitFor(t, "3 handlers", func() bool { return running.Load() == 3 })
	if peak.Load() != 3 {
		t.Fatalf("%d requests served at once, the limit is 3", peak.Load())
	}
	_ = client.Close()
	waitFor(t, "the handlers to be cancelled", func() bool { return running.Load() == 0 })
	if cancelled.Load() < 3 {
		t.Fatalf("%d handlers cancelled when the client went away", cancelled.Load())
	}
	close(release)
}

// A rejected auth_token is answered FORBIDDEN "token not accepted", later
// each time, and the connection is closed after MaxAuthFailures of them;
// the log names each attempt by a hash prefix, never the token's
// characters.
func TestRejectedTokensAreSlowedThenClosed(t *testing.T) {
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("q/echo", echo))
	var logs bytes.Buffer
	sw := &syncWriter{w: &logs}
	a, b := net.Pipe()
	s := call.NewSession(endpoint.WrapStreamConn(a, call.ALPN, auth.TransportTCPTLS), call.SessionOptions{Registry: reg,
		Policy: func() *auth.Policy { p, _ := auth.NewPolicy(nil, nil); return p },
		Limits: call.Limits{MaxAuthFailures: 3, AuthPenalty: auth.NewPenalties()},
		Logger: hclog.New(&hclog.LoggerOptions{Output: sw, Level: hclog.Info})})
	go s.Run(context.Background())
	t.Cleanup(func() { _ = b.Close(); _ = s.Close() })
	var answers []string
	for i := range 3 {
		writeRequest(t, b, "t"+string(rune('0'+i)), "q/echo", "1", "guess-"+string(rune('0'+i)))
		body, err := call.ReadFrame(b)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		answers = append(answers, string(body))
	}
	for _, a := range answers {
		if !strings.Contains(a, `"code":"FORBIDDEN"`) || !strings.Contains(a, "token not accepted") {
			t.Fatalf("a rejected token's answer: %s", a)
		}
	}
	// The third rejection closes the connection.
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := call.ReadFrame(b); err == nil {
		t.Fatal("the connection is still open after 3 rejected tokens")
	}
	out := sw.String()
	if strings.Count(out, "result=reject") != 3 || strings.Contains(out, "guess-") || !strings.Contains(out, "id=sha256:") {
		t.Fatalf("auth attempt log lines:\n%s", out)
	}
	if !strings.Contains(out, "too many rejected tokens") {
		t.Fatalf("no line says why the connection closed:\n%s", out)
	}
}

// Invalid UTF-8 makes a frame malformed (it would be echoed back inside a
// JSON answer); a duplicate request id is never answered under the id of
// the request already running.
func TestInvalidUTF8AndDuplicateIDs(t *testing.T) {
	if _, err := call.DecodeEnvelope([]byte("{\"type\":\"call.requested\",\"id\":\"\xff\",\"payload\":{}}")); err == nil {
		t.Fatal("an envelope with invalid UTF-8 was accepted")
	}
	release := make(chan struct{})
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("x/wait", func(ctx context.Context, in json.RawMessage) (any, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return in, nil
	}))
	var logs bytes.Buffer
	sw := &syncWriter{w: &logs}
	a, client := net.Pipe()
	s := call.NewSession(endpoint.WrapStreamConn(a, call.ALPN, auth.TransportTCPTLS), call.SessionOptions{Registry: reg,
		Logger: hclog.New(&hclog.LoggerOptions{Output: sw, Level: hclog.Debug})})
	go s.Run(context.Background())
	t.Cleanup(func() { _ = client.Close(); _ = s.Close() })
	writeRequest(t, client, "same", "x/wait", `"first"`, "")
	writeRequest(t, client, "same", "x/wait", `"second"`, "")
	waitFor(t, "the duplicate to be seen", func() bool { return strings.Contains(sw.String(), "duplicate request id ignored") })
	close(release)
	// Both are served concurrently: whichever registered first is the one
	// answered.
	body, err := call.ReadFrame(client)
	if err != nil || !(strings.Contains(string(body), `"first"`) || strings.Contains(string(body), `"second"`)) {
		t.Fatalf("the answer: %s %v", body, err)
	}
	writeRequest(t, client, "after", "x/wait", `"after"`, "")
	if body, err := call.ReadFrame(client); err != nil || !strings.Contains(string(body), `"after"`) {
		t.Fatalf("the next answer: %s %v (the duplicate must never be answered)", body, err)
	}
}
