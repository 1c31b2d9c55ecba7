package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/scripts/bench/gwecho"
)

// http: the HTTP plugin's JSON gateway (docs/spec/handlers.md) on a real
// `bin/alknet serve` with the echo and http plugins alone. A client
// speaks HTTP/2 over TLS to the node's TCP port (ALPN h2), the node pinned
// by its key; the node ends TLS and hands the connection to the plugin,
// which calls echo/say (served by the echo plugin) through the node's
// registry as the caller. The anchors answer the same request with the
// same JSON: grpc-gateway in front of a grpc-go service (the peer a user
// would otherwise pick), a bare net/http handler (the ceiling of HTTP/2
// in Go), and echo/say over alknet/call on the same kind of node (the
// native protocol). The HTTP anchors run in a child process (this
// executable, runChild), as the node serves from processes of its own.
//
// http-call-c64 gives each of the 64 clients a connection of its own, as
// 64 separate programs calling the node have; http-call-c64-shared has
// them share one HTTP/2 connection, as the goroutines of one program do.
// http-sse-items streams echo/ticks with interval 0 (the plugin emits
// as fast as the stream takes them) over POST /subscribe.
var m11 = []benchmark{
	{
		Name: "http-call-c64", Area: "http", Unit: "calls/s", HigherIsBetter: true, Goal: 1.0,
		Description: "64 concurrent HTTP/2 clients, each on a connection of its own, POST /call " + string(httpCallBody) + ": the HTTP plugin vs grpc-gateway → grpc-go (the same JSON in and out)",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: httpPluginLabel + ", 64 connections", Start: startHTTPPluginCall(httpWorkers)},
		Anchor:  variant{Label: gatewayLabel + ", 64 connections", Start: startHTTPChildCall("grpc-gateway", httpWorkers)},
	},
	{
		Name: "http-call-c64-shared", Area: "http", Unit: "calls/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
		Description: "as http-call-c64 with the 64 clients sharing one HTTP/2 connection (one program's goroutines), on both sides",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: httpPluginLabel + ", 1 connection", Start: startHTTPPluginCall(1)},
		Anchor:  variant{Label: gatewayLabel + ", 1 connection", Start: startHTTPChildCall("grpc-gateway", 1)},
	},
	{
		Name: "http-call-c64-native", Area: "http", Unit: "calls/s", HigherIsBetter: true, Informational: true,
		Description: "as http-call-c64 against echo/say over alknet/call (QUIC, the node's own protocol): 64 concurrent callers, each on a call.Connection of its own, on the same kind of node — what the HTTP door costs over the native one",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: httpPluginLabel + ", 64 connections", Start: startHTTPPluginCall(httpWorkers)},
		Anchor:  variant{Label: "echo/say over alknet/call (QUIC, pinned), 64 call.Connections, bin/alknet serve + echo and http plugins", Start: startNativeCall(httpWorkers)},
	},
	{
		Name: "http-call-c64-nethttp", Area: "http", Unit: "calls/s", HigherIsBetter: true, Informational: true,
		Description: "as http-call-c64 against a bare net/http handler that decodes the request and encodes the answer with encoding/json (HTTP/2 over TLS 1.3, 64 connections): the ceiling",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: httpPluginLabel + ", 64 connections", Start: startHTTPPluginCall(httpWorkers)},
		Anchor:  variant{Label: "bare net/http JSON echo handler, HTTP/2 + TLS 1.3, child process, 64 connections", Start: startHTTPChildCall("http-echo", httpWorkers)},
	},
	{
		Name: "http-sse-items", Area: "http", Unit: "items/s", HigherIsBetter: true, Informational: true,
		Description: "one subscription to echo/ticks of 100,000 items (20,000 with -short), interval 0: POST /subscribe to the HTTP plugin, read as Server-Sent Events over HTTP/2, vs the same subscription over alknet/call (QUIC) on the same kind of node",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: httpPluginLabel + ", SSE over one HTTP/2 connection", Start: startHTTPPluginTicks},
		Anchor:  variant{Label: "echo/ticks over alknet/call (QUIC, pinned), call.Connection.Subscribe", Start: startNativeTicks},
	},
}

const (
	httpPluginLabel = "bin/alknet serve + http and echo plugins, HTTP/2 + TLS 1.3 (pinned) to the node's TCP port"
	gatewayLabel    = "grpc-gateway v2 → grpc-go (loopback TCP, insecure), HTTP/2 + TLS 1.3, child process"
	// httpWorkers is how many goroutines call at once in the call rows.
	httpWorkers = 64
)

// httpCallBody is what every POST /call sends: echo/say of callInput.
var httpCallBody = []byte(`{"operation":"/echo/say","input":` + string(callInput) + `}`)

// httpTicks is the length of one http-sse-items subscription.
func httpTicks(short bool) int {
	if short {
		return 20_000
	}
	return 100_000
}

// --- the node ---

// startHTTPNode starts `alknet serve` with the echo and http plugins
// alone (every other plugin in ./bin disabled) and waits until both are
// ready and /healthz answers.
func startHTTPNode(ctx context.Context) (*node, error) {
	h, err := makeNodeHome()
	if err != nil {
		return nil, err
	}
	if err := h.writeConfig("", "http"); err != nil {
		h.remove()
		return nil, err
	}
	n, err := startNodeIn(ctx, h, "echo", "http")
	if err != nil {
		return nil, err
	}
	if err := waitHealthz(ctx, "https://"+n.addr, pinNode(n.fp)); err != nil {
		n.close()
		return nil, fmt.Errorf("%w\n%s", err, n.proc.logs)
	}
	return n, nil
}

// pinNode accepts exactly the node whose key has fingerprint fp.
func pinNode(fp string) func(der []byte) error {
	return func(der []byte) error {
		if got := identity.CertFingerprint(der); got != fp {
			return fmt.Errorf("the node presented key %s, want %s", got, fp)
		}
		return nil
	}
}

// waitHealthz polls base/healthz until it answers 200.
func waitHealthz(ctx context.Context, base string, verify func([]byte) error) error {
	c := newH2Clients(base, 1, 1, verify)
	defer c.close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := c.get(ctx, "/healthz")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("GET /healthz never answered: %w", err)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// --- HTTP/2 clients ---

// h2Clients are HTTP/2-only clients of one server: conns transports (one
// connection each once warm), shared by workers goroutines through a pool.
type h2Clients struct {
	base       string
	transports []*http.Transport
	pool       chan *http.Client
	// handshakes counts TLS handshakes: after the warm-up it must equal
	// the number of transports (each holds one connection).
	handshakes atomic.Int64
}

// newH2Clients makes conns transports for base (https://host:port);
// verify checks the server's certificate (nil: any, as the anchors'
// clients in anchors.go).
func newH2Clients(base string, conns, workers int, verify func(der []byte) error) *h2Clients {
	c := &h2Clients{base: base, pool: make(chan *http.Client, workers)}
	var protos http.Protocols
	protos.SetHTTP2(true)
	for range conns {
		c.transports = append(c.transports, &http.Transport{
			TLSClientConfig: &tls.Config{
				MinVersion:         tls.VersionTLS13,
				ServerName:         identity.RawKeySNI,
				InsecureSkipVerify: true, // verified below: the key is pinned
				VerifyConnection: func(cs tls.ConnectionState) error {
					c.handshakes.Add(1)
					if verify == nil {
						return nil
					}
					if len(cs.PeerCertificates) == 0 {
						return errors.New("the server presented no certificate")
					}
					return verify(cs.PeerCertificates[0].Raw)
				},
			},
			Protocols:           &protos,
			MaxIdleConnsPerHost: workers,
		})
	}
	for i := range workers {
		c.pool <- &http.Client{Transport: c.transports[i%conns]}
	}
	return c
}

func (c *h2Clients) close() {
	for _, t := range c.transports {
		t.CloseIdleConnections()
	}
}

// do sends one request with a client from the pool and returns the body
// of a 200 answer over HTTP/2.
func (c *h2Clients) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	cl := <-c.pool
	defer func() { c.pool <- cl }()
	return c.doWith(ctx, cl, method, path, body)
}

// doWith is do with the client cl.
func (c *h2Clients) doWith(ctx context.Context, cl *http.Client, method, path string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if resp.ProtoMajor != 2 {
		return nil, fmt.Errorf("%s %s was answered over %s, want HTTP/2", method, path, resp.Proto)
	}
	return b, nil
}

func (c *h2Clients) get(ctx context.Context, path string) error {
	_, err := c.do(ctx, http.MethodGet, path, nil)
	return err
}

// call makes one POST /call and checks the answer.
func (c *h2Clients) call(ctx context.Context) error {
	b, err := c.do(ctx, http.MethodPost, "/call", httpCallBody)
	if err != nil {
		return err
	}
	return checkCallResult(b)
}

// checkCallResult checks a /call answer: {"request_id": …, "output":
// callInput} (whitespace aside: protojson adds some at random).
func checkCallResult(b []byte) error {
	var r struct {
		RequestID string          `json:"request_id"`
		Output    json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("POST /call answered %q: %v", b, err)
	}
	var out bytes.Buffer
	if r.RequestID == "" || json.Compact(&out, r.Output) != nil || !bytes.Equal(out.Bytes(), callInput) {
		return fmt.Errorf("POST /call answered %q, want a request_id and output %s", b, callInput)
	}
	return nil
}

// callInstance measures c.call by httpWorkers goroutines: the warm-up
// first opens each transport's connection with one call, then calls from
// every worker; the rounds check that no connection was opened since.
func callInstance(e *env, c *h2Clients, stop func()) *instance {
	in := timed(e, &caller{one: c.call, stop: func() { c.close(); stop() }}, httpWorkers, c.call)
	warm, measure := in.Warmup, in.Measure
	want := int64(len(c.transports))
	in.Warmup = func(ctx context.Context) error {
		for _, t := range c.transports {
			b, err := c.doWith(ctx, &http.Client{Transport: t}, http.MethodPost, "/call", httpCallBody)
			if err == nil {
				err = checkCallResult(b)
			}
			if err != nil {
				return err
			}
		}
		if err := warm(ctx); err != nil {
			return err
		}
		if n := c.handshakes.Load(); n != want {
			return fmt.Errorf("%d TLS handshakes during the warm-up, want one per connection (%d)", n, want)
		}
		return nil
	}
	in.Measure = func(ctx context.Context) (float64, error) {
		v, err := measure(ctx)
		if n := c.handshakes.Load(); err == nil && n != want {
			err = fmt.Errorf("%d TLS handshakes by the end of the round, want %d: connections were dropped", n, want)
		}
		return v, err
	}
	return in
}

// --- the subject ---

// startHTTPPluginCall calls the HTTP plugin of a fresh node from 64
// goroutines over conns HTTP/2 connections.
func startHTTPPluginCall(conns int) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		n, err := startHTTPNode(ctx)
		if err != nil {
			return nil, err
		}
		c := newH2Clients("https://"+n.addr, conns, httpWorkers, pinNode(n.fp))
		return callInstance(e, c, n.close), nil
	}
}

// startHTTPPluginTicks streams echo/ticks from the HTTP plugin of a fresh
// node as Server-Sent Events, one subscription per round.
func startHTTPPluginTicks(ctx context.Context, e *env) (*instance, error) {
	n, err := startHTTPNode(ctx)
	if err != nil {
		return nil, err
	}
	c := newH2Clients("https://"+n.addr, 1, 1, pinNode(n.fp))
	count := httpTicks(e.short)
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := c.ticks(ctx, count/10); return err },
		Measure: func(ctx context.Context) (float64, error) { return c.ticks(ctx, count) },
		Stop:    func() { c.close(); n.close() },
	}, nil
}

// ticksInput is echo/ticks' input: count items, no pause between them.
func ticksInput(count int) []byte {
	return []byte(`{"count":` + strconv.Itoa(count) + `,"interval_ms":0}`)
}

// ticks subscribes to echo/ticks of count items over POST /subscribe,
// reads the events to "completed", checks every item and returns the
// items per second, from sending the request to the end.
func (c *h2Clients) ticks(ctx context.Context, count int) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cl := <-c.pool
	defer func() { c.pool <- cl }()
	body := []byte(`{"operation":"/echo/ticks","input":` + string(ticksInput(count)) + `}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/subscribe", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	start := time.Now()
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, fmt.Errorf("POST /subscribe: %s over %s: %s", resp.Status, resp.Proto, bytes.TrimSpace(b))
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	got, event := 0, ""
	var scratch []byte
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, fmt.Errorf("POST /subscribe: the stream ended after %d of %d items: %v", got, count, err)
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		switch {
		case len(line) == 0: // the end of an event
			if event == "completed" {
				if got != count {
					return 0, fmt.Errorf("POST /subscribe completed after %d of %d items", got, count)
				}
				return float64(count) / time.Since(start).Seconds(), nil
			}
			event = ""
		case bytes.HasPrefix(line, []byte("event: ")):
			event = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data := line[len("data: "):]
			switch event {
			case "":
				if scratch, err = checkTick(scratch, data, got); err != nil {
					return 0, err
				}
				got++
			case "error":
				return 0, fmt.Errorf("POST /subscribe: event error after %d items: %s", got, data)
			}
		}
	}
}

// checkTick checks that item is echo/ticks' item {"n": i}.
func checkTick(scratch, item []byte, i int) ([]byte, error) {
	scratch = strconv.AppendInt(append(scratch[:0], `{"n":`...), int64(i), 10)
	scratch = append(scratch, '}')
	if bytes.Equal(item, scratch) {
		return scratch, nil
	}
	var buf bytes.Buffer
	if json.Compact(&buf, item) == nil && bytes.Equal(buf.Bytes(), scratch) {
		return scratch, nil
	}
	return scratch, fmt.Errorf("echo/ticks item %d is %q, want %s", i, item, scratch)
}

// --- the native anchor: alknet/call on the same kind of node ---

// connectQUICCall connects to the node's alknet/call over QUIC with the
// bench's key, the node pinned.
func connectQUICCall(ctx context.Context, n *node) (*call.Connection, error) {
	cert := benchKey().cert
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return call.New(nil).Connect(ctx, n.addr, call.Credentials{TLS: &cert, Peer: n.fp, QUIC: true})
}

// startNativeCall calls echo/say on a fresh node over alknet/call from 64
// goroutines through conns call connections.
func startNativeCall(conns int) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		n, err := startHTTPNode(ctx)
		if err != nil {
			return nil, err
		}
		var cs []*call.Connection
		stop := func() {
			for _, c := range cs {
				_ = c.Close()
			}
			n.close()
		}
		for range conns {
			c, err := connectQUICCall(ctx, n)
			if err != nil {
				stop()
				return nil, err
			}
			cs = append(cs, c)
		}
		pool := make(chan *call.Connection, httpWorkers)
		for i := range httpWorkers {
			pool <- cs[i%conns]
		}
		one := func(ctx context.Context) error {
			c := <-pool
			defer func() { pool <- c }()
			out, err := c.Call(ctx, "echo/say", callInput)
			if err != nil {
				return err
			}
			return checkEcho(out)
		}
		return timed(e, &caller{one: one, stop: stop}, httpWorkers, one), nil
	}
}

// startNativeTicks subscribes to echo/ticks on a fresh node over
// alknet/call, one subscription per round.
func startNativeTicks(ctx context.Context, e *env) (*instance, error) {
	n, err := startHTTPNode(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := connectQUICCall(ctx, n)
	if err != nil {
		n.close()
		return nil, err
	}
	count := httpTicks(e.short)
	ticks := func(ctx context.Context, count int) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		start := time.Now()
		sub, err := conn.Subscribe(ctx, "echo/ticks", json.RawMessage(ticksInput(count)))
		if err != nil {
			return 0, err
		}
		got := 0
		var scratch []byte
		for item := range sub.Items {
			if scratch, err = checkTick(scratch, item, got); err != nil {
				sub.Close()
				return 0, err
			}
			got++
		}
		if err := sub.Err(); err != nil {
			return 0, fmt.Errorf("echo/ticks after %d items: %w", got, err)
		}
		if got != count {
			return 0, fmt.Errorf("echo/ticks completed after %d of %d items", got, count)
		}
		return float64(count) / time.Since(start).Seconds(), nil
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := ticks(ctx, count/10); return err },
		Measure: func(ctx context.Context) (float64, error) { return ticks(ctx, count) },
		Stop: func() {
			_ = conn.Close()
			n.close()
		},
	}, nil
}

// --- the HTTP anchors, in a child process ---

// startHTTPChildCall runs the anchor server role ("grpc-gateway" or
// "http-echo", runHTTPAnchor) in a child process and calls it from 64
// goroutines over conns HTTP/2 connections.
func startHTTPChildCall(role string, conns int) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		addr, stop, err := startChild(role)
		if err != nil {
			return nil, err
		}
		c := newH2Clients("https://"+addr, conns, httpWorkers, nil)
		return callInstance(e, c, stop), nil
	}
}

// runHTTPAnchor is the child side of startHTTPChildCall: an HTTPS server
// (HTTP/2 and HTTP/1.1, TLS 1.3, a key of its own) on loopback answering
// POST /call. "http-echo": a net/http handler decoding the request and
// encoding the answer with encoding/json. "grpc-gateway": grpc-gateway's
// default ServeMux, calling the gwecho service (grpc-go, insecure) on a
// loopback TCP port of the same process through one grpc.ClientConn.
func runHTTPAnchor(role string) (addr string, stop func(), err error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", nil, err
	}
	cert, err := identity.RawKeyTLSCertificate(key)
	if err != nil {
		return "", nil, err
	}
	var handler http.Handler
	var stops []func()
	stopAll := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	switch role {
	case "http-echo":
		mux := http.NewServeMux()
		mux.HandleFunc("POST /call", netHTTPCall)
		handler = mux
	case "grpc-gateway":
		gln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		gs := grpc.NewServer()
		gwecho.RegisterEchoServer(gs, gwEchoServer{})
		var serving sync.WaitGroup
		serving.Go(func() { _ = gs.Serve(gln) })
		stops = append(stops, func() { gs.Stop(); serving.Wait() })
		cc, err := grpc.NewClient("passthrough:///"+gln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			stopAll()
			return "", nil, err
		}
		stops = append(stops, func() { _ = cc.Close() })
		mux := runtime.NewServeMux()
		if err := gwecho.RegisterEchoHandlerClient(context.Background(), mux, gwecho.NewEchoClient(cc)); err != nil {
			stopAll()
			return "", nil, err
		}
		handler = mux
	default:
		return "", nil, fmt.Errorf("unknown HTTP anchor %q", role)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopAll()
		return "", nil, err
	}
	srv := &http.Server{Handler: handler, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}}
	var serving sync.WaitGroup
	serving.Go(func() { _ = srv.ServeTLS(ln, "", "") })
	stops = append(stops, func() { _ = srv.Close(); serving.Wait() })
	return ln.Addr().String(), stopAll, nil
}

// netHTTPCall is the bare net/http anchor's POST /call: the same JSON in
// and out as the HTTP plugin's gateway.
func netHTTPCall(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
	var req struct {
		Operation string          `json:"operation"`
		Input     json.RawMessage `json:"input"`
	}
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, err := json.Marshal(struct {
		RequestID string          `json:"request_id"`
		Output    json.RawMessage `json:"output"`
	}{uuid.NewString(), req.Input})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// gwEchoServer is the gRPC service behind grpc-gateway: Call returns its
// input with a fresh request id, as echo/say through the HTTP plugin does.
type gwEchoServer struct {
	gwecho.UnimplementedEchoServer
}

func (gwEchoServer) Call(_ context.Context, in *gwecho.CallRequest) (*gwecho.CallResult, error) {
	return &gwecho.CallResult{RequestId: uuid.NewString(), Output: in.GetInput()}, nil
}
