package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatewayConfig serves the gateway with short bounds so tests reach them.
const gatewayConfig = `
[call]
deadline = "1s"

[plugins.http]
header_timeout = "1s"
max_body_bytes = "1MiB"
max_streams_per_identity = 2
`

// curlJSON runs curl and decodes its stdout; it returns the HTTP status
// curl printed after the body (-w).
func (n *httpNode) curlJSON(v any, args ...string) (int, http.Header) {
	n.t.Helper()
	out, stderr, code := n.curl(append([]string{"-D", "-", "-w", "\n%{http_code} %{http_version}"}, args...)...)
	if code != 0 {
		n.t.Fatalf("curl %v: exit %d: %s", args, code, stderr)
	}
	// -D - prints the headers first, then the body, then our -w line.
	head, rest, _ := strings.Cut(out, "\r\n\r\n")
	hdr := http.Header{}
	for _, l := range strings.Split(head, "\r\n")[1:] {
		if k, val, ok := strings.Cut(l, ":"); ok {
			hdr.Add(strings.TrimSpace(k), strings.TrimSpace(val))
		}
	}
	i := strings.LastIndex(rest, "\n")
	body, tail := rest[:i], rest[i+1:]
	var status int
	var version string
	fmt.Sscanf(tail, "%d %s", &status, &version)
	if version != "2" {
		n.t.Errorf("curl %v spoke HTTP/%s, want HTTP/2", args, version)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(body), v); err != nil {
			n.t.Fatalf("curl %v: %d %q is not JSON: %v", args, status, body, err)
		}
	}
	return status, hdr
}

type callError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	RequestID string `json:"request_id"`
}

// TestHTTPGatewayCurl drives every gateway endpoint with the stock curl
// over HTTP/2, pinned to the node's raw-key certificate: the status map,
// 401 against 403, a batch in order, search and schema, an SSE stream.
func TestHTTPGatewayCurl(t *testing.T) {
	n := startHTTPNode(t, gatewayConfig, "--enable-diag")
	post := func(path, token, body string) []string {
		a := []string{"--http2", "-H", "Content-Type: application/json", "--data-binary", body}
		if token != "" {
			a = append(a, "-H", "Authorization: Bearer "+token)
		}
		return append(a, n.base+path)
	}
	caps := n.token("echo:caps")
	other := n.token("git:read")
	creator := n.token("git:create")

	out, _, code := n.curl("--http2", n.base+"/healthz")
	if code != 0 || strings.TrimSpace(out) != "ok" {
		t.Fatalf("/healthz: %d %q", code, out)
	}

	var ok struct {
		RequestID string          `json:"request_id"`
		Output    json.RawMessage `json:"output"`
	}
	if st, _ := n.curlJSON(&ok, post("/call", "", `{"operation":"/echo/say","input":{"hello":"node"}}`)...); st != 200 || string(ok.Output) != `{"hello":"node"}` || len(ok.RequestID) != 36 {
		t.Fatalf("/call echo/say: %d %+v", st, ok)
	}
	if st, _ := n.curlJSON(&ok, post("/call", caps, `{"operation":"echo/caps"}`)...); st != 200 {
		t.Fatalf("/call echo/caps with a token holding echo:caps: %d", st)
	}
	// git/create twice: the second is the git plugin's own ALREADY_EXISTS,
	// which it declares with http_status 409.
	if st, _ := n.curlJSON(nil, post("/call", creator, `{"operation":"git/create","input":{"name":"dup"}}`)...); st != 200 {
		t.Fatalf("git/create: %d", st)
	}

	for _, tc := range []struct {
		name, token, body string
		status            int
		code, message     string
		header, value     string
	}{
		{"unknown operation", "", `{"operation":"/nope/op"}`, 404, "NOT_FOUND", "operation not found: nope/op", "", ""},
		{"no credentials", "", `{"operation":"echo/caps"}`, 401, "FORBIDDEN", "authentication required", "Www-Authenticate", "Bearer"},
		{"insufficient scopes", other, `{"operation":"echo/caps"}`, 403, "FORBIDDEN", "missing required scope: echo:caps", "", ""},
		{"bad token", "alk_not_a_key", `{"operation":"echo/say","input":1}`, 401, "FORBIDDEN", "token not accepted", "Www-Authenticate", `Bearer error="invalid_token"`},
		{"invalid input", "", `{"operation":"diag/sleep","input":{"ms":"long"}}`, 400, "INVALID_INPUT", "input does not match", "", ""},
		{"subscription as a call", "", `{"operation":"echo/ticks","input":{"count":1}}`, 400, "INVALID_OPERATION_TYPE", "", "", ""},
		{"deadline", "", `{"operation":"diag/sleep","input":{"ms":10000}}`, 504, "TIMEOUT", "", "Retry-After", "1"},
		{"handler failure", "", `{"operation":"diag/callback","input":{"name":"x"}}`, 500, "INTERNAL", "", "", ""},
		{"declared domain error", creator, `{"operation":"git/create","input":{"name":"dup"}}`, 409, "ALREADY_EXISTS", "", "", ""},
		{"not JSON", "", `{"operation": "echo/say",}`, 400, "INVALID_INPUT", "invalid JSON at line 1, column 26 (offset 25)", "", ""},
	} {
		var e callError
		st, hdr := n.curlJSON(&e, post("/call", tc.token, tc.body)...)
		if st != tc.status || e.Code != tc.code || !strings.Contains(e.Message, tc.message) {
			t.Errorf("%s: %d %+v, want %d %s %q", tc.name, st, e, tc.status, tc.code, tc.message)
		}
		if tc.header != "" && hdr.Get(tc.header) != tc.value {
			t.Errorf("%s: %s = %q, want %q", tc.name, tc.header, hdr.Get(tc.header), tc.value)
		}
	}

	// A batch answers in request order, each item on its own.
	var items []string
	for i := range 20 {
		if i%5 == 4 {
			items = append(items, `{"operation":"nope/op"}`)
		} else {
			items = append(items, fmt.Sprintf(`{"operation":"echo/say","input":{"i":%d}}`, i))
		}
	}
	var batch []struct {
		RequestID string          `json:"request_id"`
		Output    json.RawMessage `json:"output"`
		Status    int             `json:"status"`
		Error     *callError      `json:"error"`
	}
	if st, _ := n.curlJSON(&batch, post("/batch", "", "["+strings.Join(items, ",")+"]")...); st != 200 || len(batch) != 20 {
		t.Fatalf("/batch: %d, %d results", st, len(batch))
	}
	for i, r := range batch {
		if i%5 == 4 {
			if r.Status != 404 || r.Error == nil || r.Error.Code != "NOT_FOUND" {
				t.Errorf("batch item %d: %+v, want 404 NOT_FOUND", i, r)
			}
		} else if string(r.Output) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Errorf("batch item %d: output %s", i, r.Output)
		}
	}

	// Search and schema show what the caller can call, nothing more.
	var found struct {
		Operations []struct {
			Name string `json:"name"`
		} `json:"operations"`
	}
	names := func() string {
		var s []string
		for _, o := range found.Operations {
			s = append(s, o.Name)
		}
		return strings.Join(s, " ")
	}
	n.curlJSON(&found, "--http2", n.base+"/search?q=echo")
	if !strings.Contains(names(), "echo/say") || strings.Contains(names(), "echo/caps") {
		t.Errorf("anonymous /search?q=echo: %s (want echo/say, not echo/caps)", names())
	}
	n.curlJSON(&found, "--http2", "-H", "Authorization: Bearer "+caps, n.base+"/search?q=caps")
	if names() != "echo/caps" {
		t.Errorf("/search?q=caps with echo:caps: %q", names())
	}
	var spec struct {
		Name        string          `json:"name"`
		InputSchema json.RawMessage `json:"input_schema"`
	}
	if st, _ := n.curlJSON(&spec, "--http2", n.base+"/schema?name=echo/ticks"); st != 200 || spec.Name != "echo/ticks" || !strings.Contains(string(spec.InputSchema), "count") {
		t.Errorf("/schema?name=echo/ticks: %d %+v", st, spec)
	}
	var e callError
	if st, _ := n.curlJSON(&e, "--http2", n.base+"/schema?name=echo/caps"); st != 404 {
		t.Errorf("/schema of an operation the caller cannot see: %d %+v", st, e)
	}
	if st, _ := n.curlJSON(&e, "--http2", n.base+"/schema"); st != 400 {
		t.Errorf("/schema without a name: %d", st)
	}

	// SSE: N items, then completed.
	out, stderr, code := n.curl(append([]string{"-N"}, post("/subscribe", "", `{"operation":"echo/ticks","input":{"count":5}}`)...)...)
	if code != 0 {
		t.Fatalf("/subscribe: exit %d: %s", code, stderr)
	}
	var want strings.Builder
	for i := range 5 {
		fmt.Fprintf(&want, "data: {\"n\":%d}\n\n", i)
	}
	want.WriteString("event: completed\ndata: {}\n\n")
	if out != want.String() {
		t.Errorf("/subscribe echo/ticks count 5:\n%s\nwant:\n%s", out, want.String())
	}
	// The same over HTTP/1.1, which browsers use for WebSockets.
	out, _, _ = n.curl("--http1.1", "-H", "Content-Type: application/json", "--data-binary", `{"operation":"echo/say","input":"h1"}`, n.base+"/call")
	if !strings.Contains(out, `"output":"h1"`) {
		t.Errorf("/call over HTTP/1.1: %s", out)
	}
	// Wrong method: 405 naming the right one.
	if st, hdr := n.curlJSON(&e, "--http2", n.base+"/call"); st != 405 || hdr.Get("Allow") != "POST" {
		t.Errorf("GET /call: %d Allow=%q", st, hdr.Get("Allow"))
	}
}

// TestHTTPSubscribeDisconnectAborts: a client that goes away in the middle
// of an SSE stream aborts the subscription: the plugin's handler ends.
func TestHTTPSubscribeDisconnectAborts(t *testing.T) {
	n := startHTTPNode(t, gatewayConfig)
	admin := n.token("admin")
	echoCalls := func() int {
		_, b := n.do("POST", "/call", admin, strings.NewReader(`{"operation":"node/stats"}`))
		var r struct {
			Output nodeStats `json:"output"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("node/stats: %s", b)
		}
		for _, p := range r.Output.Plugins {
			if p.Name == "echo" {
				return p.CallsActive
			}
		}
		return -1
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", n.base+"/subscribe", strings.NewReader(`{"operation":"echo/ticks","input":{"count":1000000,"interval_ms":20}}`))
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("/subscribe: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	for got := 0; got < 3 && sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "data: ") {
			got++
		}
	}
	if a := echoCalls(); a != 1 {
		t.Fatalf("echo calls in flight while streaming: %d, want 1", a)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the echo subscription to end after the client left", func() bool { return echoCalls() == 0 })
}

// countingReader is a body that counts what the client sent of it.
type countingReader struct{ n atomic.Int64 }

func (r *countingReader) Read(p []byte) (int, error) {
	clear(p)
	r.n.Add(int64(len(p)))
	return len(p), nil
}

// TestHTTPBadInput: a 1 GiB body is refused unread, bad JSON is named
// by position, a slowloris client is closed at the header timeout and
// 10,000 unknown paths are answered by the decoy with nothing logged per
// request — while a parallel client's calls all succeed.
func TestHTTPBadInput(t *testing.T) {
	n := startHTTPNode(t, gatewayConfig)
	stop := make(chan struct{})
	var parallelOK, parallelFail atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the parallel client; stopped below
		defer wg.Done()
		c := pinnedClient(n.clientSPKI())
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := c.Post(n.base+"/call", "application/json", strings.NewReader(`{"operation":"echo/say","input":"still here"}`))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && strings.Contains(string(b), "still here") {
					parallelOK.Add(1)
					continue
				}
			}
			parallelFail.Add(1)
		}
	}()

	// 1 GiB announced: 413 before the body is read.
	body := &countingReader{}
	req, _ := http.NewRequest("POST", n.base+"/call", io.LimitReader(body, 1<<30))
	req.ContentLength = 1 << 30
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatalf("1 GiB body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(b), "1073741824 bytes is larger than this node accepts (1 MiB") {
		t.Errorf("1 GiB body: %d %s", resp.StatusCode, b)
	}
	if sent := body.n.Load(); sent > 64<<20 {
		t.Errorf("the client sent %d bytes of the refused body", sent)
	}
	// Chunked, no length: 413 once the bound is passed.
	resp, b = n.do("POST", "/call", "", io.LimitReader(&countingReader{}, 8<<20))
	if resp.StatusCode != 413 {
		t.Errorf("8 MiB body without a length: %d %s", resp.StatusCode, b)
	}

	resp, b = n.do("POST", "/call", "", strings.NewReader("{\"operation\": \"echo/say\",\n \"input\": [1, 2,, 3]}"))
	if resp.StatusCode != 400 || !strings.Contains(string(b), "invalid JSON at line 2, column 17 (offset 42)") {
		t.Errorf("invalid JSON: %d %s", resp.StatusCode, b)
	}

	// Slowloris: headers dribbled one byte at a time, never finished.
	conn, err := tls.Dial("tcp", n.srv.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: node\r\n"); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { // ends when the node closes the connection
		_, err := io.Copy(io.Discard, conn)
		closed <- err
	}()
	start := time.Now()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
slow:
	for {
		select {
		case <-closed:
			break slow
		case <-tick.C:
			if _, err := io.WriteString(conn, "X"); err != nil {
				<-closed
				break slow
			}
			if time.Since(start) > 20*time.Second {
				t.Fatal("the slowloris connection is still open after 20 s (header_timeout 1s)")
			}
		}
	}

	// 10,000 unknown paths: 404 from the decoy; the log does not grow.
	before := len(strings.Split(n.srv.logs.String(), "\n"))
	var notFound atomic.Int64
	var pw sync.WaitGroup
	paths := make(chan int)
	for range 32 {
		pw.Add(1)
		go func() {
			defer pw.Done()
			for i := range paths {
				resp, err := n.client.Get(fmt.Sprintf("%s/wp-admin/%d.php?x=%d", n.base, i, i))
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 404 {
					notFound.Add(1)
				}
			}
		}()
	}
	for i := range 10000 {
		paths <- i
	}
	close(paths)
	pw.Wait()
	if notFound.Load() != 10000 {
		t.Errorf("%d of 10000 unknown paths answered 404", notFound.Load())
	}
	if after := len(strings.Split(n.srv.logs.String(), "\n")); after-before > 5 {
		t.Errorf("the node logged %d lines for 10,000 unknown paths", after-before)
	}
	admin := n.token("admin")
	_, b = n.do("POST", "/call", admin, strings.NewReader(`{"operation":"http/stats"}`))
	var st struct {
		Output struct {
			Decoy        int64 `json:"decoy_requests"`
			BodyTooLarge int64 `json:"body_too_large"`
		} `json:"output"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Output.Decoy < 10000 || st.Output.BodyTooLarge < 2 {
		t.Errorf("http/stats: %s", b)
	}

	close(stop)
	wg.Wait()
	if parallelFail.Load() != 0 || parallelOK.Load() == 0 {
		t.Errorf("the parallel client: %d calls answered, %d failed", parallelOK.Load(), parallelFail.Load())
	}
}

// clientSPKI is the node's SubjectPublicKeyInfo, for another pinned
// client.
func (n *httpNode) clientSPKI() []byte {
	conn, err := tls.Dial("tcp", n.srv.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		n.t.Fatal(err)
	}
	defer conn.Close()
	spki := conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo
	if _, err := n.client.Get(n.base + "/healthz"); err != nil { // the pinned client accepts the same key
		n.t.Fatal(err)
	}
	return spki
}

// TestHTTPPerIdentityBounds: one identity's concurrent requests and open
// SSE streams are bounded (429 with Retry-After past them); another
// identity is not held back by them.
func TestHTTPPerIdentityBounds(t *testing.T) {
	n := startHTTPNode(t, `
[plugins.http]
max_requests_per_identity = 3
max_streams_per_identity = 2
`, "--enable-diag")
	other := n.token("echo:caps")
	running := func() int {
		_, b := n.do("POST", "/call", other, strings.NewReader(`{"operation":"diag/stats"}`))
		var r struct {
			Output struct {
				Running int `json:"running"`
			} `json:"output"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("diag/stats: %s", b)
		}
		return r.Output.Running
	}
	// Three anonymous calls that wait until they are cancelled.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { // ends when ctx is cancelled below
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "POST", n.base+"/call", strings.NewReader(`{"operation":"diag/sleep","input":{"ms":600000}}`))
			if resp, err := n.client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	waitFor(t, "three sleeping calls", func() bool { return running() == 3 })
	resp, b := n.do("POST", "/call", "", strings.NewReader(`{"operation":"echo/say","input":1}`))
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "too many concurrent requests") {
		t.Errorf("a fourth request of the same identity: %d %s", resp.StatusCode, b)
	}
	if resp, b := n.do("POST", "/call", other, strings.NewReader(`{"operation":"echo/say","input":1}`)); resp.StatusCode != 200 {
		t.Errorf("another identity meanwhile: %d %s", resp.StatusCode, b)
	}
	cancel()
	wg.Wait()
	waitFor(t, "the sleeping calls to be cancelled", func() bool { return running() == 0 })
	if resp, _ := n.do("POST", "/call", "", strings.NewReader(`{"operation":"echo/say","input":1}`)); resp.StatusCode != 200 {
		t.Errorf("after the calls ended: %d", resp.StatusCode)
	}

	// Two open SSE streams of one identity; the third is refused.
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	for i := range 2 {
		req, _ := http.NewRequestWithContext(sctx, "POST", n.base+"/subscribe", strings.NewReader(`{"operation":"echo/ticks","input":{"count":1000000,"interval_ms":50}}`))
		req.Header.Set("Authorization", "Bearer "+other)
		resp, err := n.client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream %d: %v %v", i, err, resp)
		}
		defer resp.Body.Close()
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil { // it has started
			t.Fatal(err)
		}
	}
	resp, b = n.do("POST", "/subscribe", other, strings.NewReader(`{"operation":"echo/ticks","input":{"count":1}}`))
	if resp.StatusCode != 429 || !strings.Contains(string(b), "too many open subscriptions") {
		t.Errorf("a third stream: %d %s", resp.StatusCode, b)
	}
	if resp, _ := n.do("POST", "/subscribe", "", strings.NewReader(`{"operation":"echo/ticks","input":{"count":1}}`)); resp.StatusCode != 200 {
		t.Errorf("another identity's stream: %d", resp.StatusCode)
	}
}
