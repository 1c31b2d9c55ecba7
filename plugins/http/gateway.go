package httpplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// routes is the plugin's handler: the gateway, MCP, WebSocket call
// sessions, the console, and the decoy for every other path.
func (p *Plugin) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", p.healthz)
	mux.HandleFunc("/call", p.gate(p.call, http.MethodPost))
	mux.HandleFunc("/batch", p.gate(p.batch, http.MethodPost))
	mux.HandleFunc("/search", p.gate(p.search, http.MethodGet))
	mux.HandleFunc("/schema", p.gate(p.schema, http.MethodGet))
	mux.HandleFunc("/subscribe", p.gate(p.subscribe, http.MethodPost, http.MethodGet))
	p.extraRoutes(mux)
	mux.HandleFunc("/", p.decoy)
	return p.count(mux)
}

// extraRoutes is where the other parts of the plugin (OpenAPI, MCP,
// WebSocket, console) add their paths.
func (p *Plugin) extraRoutes(mux *http.ServeMux) {
	for _, r := range extraRoutes {
		r(p, mux)
	}
}

// extraRoutes are registered by the files that serve them (init).
var extraRoutes []func(*Plugin, *http.ServeMux)

// count keeps the counters http/stats reports.
func (p *Plugin) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.stats.requests.Add(1)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		switch {
		case sw.status >= 500:
			p.stats.status5xx.Add(1)
		case sw.status >= 400:
			p.stats.status4xx.Add(1)
		}
	})
}

// statusWriter records the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and Hijack.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (p *Plugin) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, "ok\n")
}

// gate checks the method, resolves the caller (a bad token is 401 here,
// before any other work) and bounds the caller's concurrent requests.
func (p *Plugin) gate(h func(http.ResponseWriter, *http.Request, *caller), methods ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ok := false
		for _, m := range methods {
			ok = ok || r.Method == m
		}
		if !ok {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeError(w, http.StatusMethodNotAllowed, "", &sdk.Error{Code: sdk.CodeInvalidInput,
				Message: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, strings.Join(methods, " or "))})
			return
		}
		c, cerr := p.callerOf(r, "")
		if cerr != nil {
			p.writeCallError(w, r, nil, "", "", cerr)
			return
		}
		defer c.done()
		if !p.requests.acquire(c.key, p.cfg.Load().requestsPerID) {
			p.throttled(w, "concurrent requests")
			return
		}
		defer p.requests.release(c.key)
		h(w, r, c)
	}
}

func (p *Plugin) throttled(w http.ResponseWriter, what string) {
	p.stats.throttled.Add(1)
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusTooManyRequests, "", &sdk.Error{Code: "TOO_MANY_REQUESTS", Retryable: true,
		Message: "too many " + what + " for this identity; retry when some have finished"})
}

// callRequest is the body of /call and /subscribe, and one item of /batch.
type callRequest struct {
	Operation string          `json:"operation"`
	Input     json.RawMessage `json:"input,omitempty"`
}

// callResult is the answer of /call, and one item of /batch.
type callResult struct {
	RequestID string          `json:"request_id,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	// Status and Error: a /batch item that failed.
	Status int        `json:"status,omitempty"`
	Error  *errorBody `json:"error,omitempty"`
}

// errorBody is a call error as JSON (docs/spec/call.md §3).
type errorBody struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	Details   any    `json:"details,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

func (p *Plugin) call(w http.ResponseWriter, r *http.Request, c *caller) {
	var req callRequest
	if !p.readJSON(w, r, &req) {
		return
	}
	if req.Operation == "" {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "the body names no operation: send {\"operation\": \"/svc/op\", \"input\": …}"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.Load().callTimeout)
	defer cancel()
	id, out, err := p.host.InvokeWithID(ctx, c.actor, req.Operation, input(req.Input))
	if err != nil {
		p.writeCallError(w, r, c, req.Operation, id, err)
		return
	}
	writeJSON(w, http.StatusOK, callResult{RequestID: id, Output: out})
}

// input is the input to send: JSON null when the request has none.
func input(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

func (p *Plugin) batch(w http.ResponseWriter, r *http.Request, c *caller) {
	var reqs []callRequest
	if !p.readJSON(w, r, &reqs) {
		return
	}
	cfg := p.cfg.Load()
	if len(reqs) > cfg.maxBatch {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "a batch of %d calls: at most %d (max_batch)", len(reqs), cfg.maxBatch))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), cfg.callTimeout)
	defer cancel()
	results := make([]callResult, len(reqs))
	// The batch's calls run concurrently, at most batchParallel at once;
	// the answers keep the order of the requests.
	const batchParallel = 16
	sem := make(chan struct{}, batchParallel)
	var wg sync.WaitGroup
	for i, req := range reqs {
		if req.Operation == "" {
			e := errorOf(sdk.Errorf(sdk.CodeInvalidInput, "batch item %d names no operation", i), "")
			results[i] = callResult{Status: http.StatusBadRequest, Error: e}
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() { // owned by this request: waited for below
			defer wg.Done()
			defer func() { <-sem }()
			id, out, err := p.host.InvokeWithID(ctx, c.actor, req.Operation, input(req.Input))
			if err != nil {
				status, e := p.statusOf(ctx, c, req.Operation, err)
				e.RequestID = ""
				results[i] = callResult{RequestID: id, Status: status, Error: e}
				return
			}
			results[i] = callResult{RequestID: id, Output: out}
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, results)
}

func (p *Plugin) search(w http.ResponseWriter, r *http.Request, c *caller) {
	q := strings.ToLower(r.URL.Query().Get("q"))
	out, err := p.host.Invoke(r.Context(), c.actor, "services/list", struct{}{})
	if err != nil {
		p.writeCallError(w, r, c, "services/list", "", err)
		return
	}
	var list struct {
		Operations []json.RawMessage `json:"operations"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		writeError(w, http.StatusBadGateway, "", sdk.Errorf(sdk.CodeInternal, "services/list answered something else: %v", err))
		return
	}
	found := []json.RawMessage{}
	for _, op := range list.Operations {
		var o struct {
			Name string `json:"name"`
		}
		if json.Unmarshal(op, &o) == nil && strings.Contains(strings.ToLower(o.Name), q) {
			found = append(found, op)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"operations": found})
}

func (p *Plugin) schema(w http.ResponseWriter, r *http.Request, c *caller) {
	name := r.URL.Query().Get("name")
	if name == "" {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "name the operation: /schema?name=svc/op"))
		return
	}
	out, err := p.host.Invoke(r.Context(), c.actor, "services/schema", map[string]string{"name": name})
	if err != nil {
		p.writeCallError(w, r, c, "services/schema", "", err)
		return
	}
	writeRawJSON(w, http.StatusOK, out)
}

// sseKeepalive is how often an idle SSE stream gets a comment line, so
// proxies and clients see it alive (and its headers go out).
const sseKeepalive = 15 * time.Second

// subscribe streams a subscription as Server-Sent Events: one "data:"
// event per item, then "event: completed", or "event: error" with the
// call error. An error before the first item is an ordinary HTTP error
// answer. The client going away aborts the subscription.
func (p *Plugin) subscribe(w http.ResponseWriter, r *http.Request, c *caller) {
	var req callRequest
	if r.Method == http.MethodGet { // EventSource can only GET
		req.Operation = r.URL.Query().Get("operation")
		if in := r.URL.Query().Get("input"); in != "" {
			req.Input = json.RawMessage(in)
			if !json.Valid(req.Input) {
				writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "the input parameter is not JSON"))
				return
			}
		}
	} else if !p.readJSON(w, r, &req) {
		return
	}
	if req.Operation == "" {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "name the operation: {\"operation\": \"/svc/op\", \"input\": …}"))
		return
	}
	p.stream(w, r, c, req)
}

// stream answers a subscription as Server-Sent Events (see subscribe).
func (p *Plugin) stream(w http.ResponseWriter, r *http.Request, c *caller, req callRequest) {
	if !p.streams.acquire(c.key, p.cfg.Load().streamsPerID) {
		p.throttled(w, "open subscriptions and WebSockets")
		return
	}
	defer p.streams.release(c.key)
	p.stats.sseOpen.Add(1)
	defer p.stats.sseOpen.Add(-1)

	rc := http.NewResponseController(w)
	var mu sync.Mutex // the keepalive and the items write to w
	started := false
	start := func() {
		if !started {
			h := w.Header()
			h.Set("Content-Type", "text/event-stream")
			h.Set("Cache-Control", "no-store")
			h.Set("X-Accel-Buffering", "no")
			w.WriteHeader(http.StatusOK)
			started = true
		}
	}
	send := func(b []byte) error {
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	stop := make(chan struct{})
	var kwg sync.WaitGroup
	kwg.Add(1)
	go func() { // owned by this request: stopped and waited for below
		defer kwg.Done()
		t := time.NewTicker(sseKeepalive)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				start()
				_ = send([]byte(": keepalive\n\n"))
				mu.Unlock()
			}
		}
	}()
	var buf bytes.Buffer
	err := p.host.Subscribe(r.Context(), c.actor, req.Operation, input(req.Input), func(item json.RawMessage) error {
		mu.Lock()
		defer mu.Unlock()
		start()
		buf.Reset()
		buf.WriteString("data: ")
		if err := json.Compact(&buf, item); err != nil { // one line per event
			buf.Write(item)
		}
		buf.WriteString("\n\n")
		p.stats.sseItems.Add(1)
		return send(buf.Bytes())
	})
	close(stop)
	kwg.Wait()
	if r.Context().Err() != nil {
		return // the client went away: the subscription was aborted
	}
	if err != nil && !started {
		p.writeCallError(w, r, c, req.Operation, "", err)
		return
	}
	start()
	if err != nil {
		_, e := p.statusOf(r.Context(), c, req.Operation, err)
		b, _ := json.Marshal(e)
		_ = send(append(append([]byte("event: error\ndata: "), b...), '\n', '\n'))
		return
	}
	_ = send([]byte("event: completed\ndata: {}\n\n"))
}

// readBody reads a body of at most max_body_bytes: 413 for a larger one
// (without reading it when Content-Length says so).
func (p *Plugin) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	max := p.cfg.Load().maxBody
	if r.ContentLength > max {
		p.tooLarge(w, r.ContentLength, max)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		p.tooLarge(w, -1, max)
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "read the body: %v", err))
		return nil, false
	}
	return body, true
}

// decodeBody decodes body, one JSON value, into v (strict: unknown keys
// are refused when v is a struct): 400 naming the position of an error.
func decodeBody(w http.ResponseWriter, body []byte, v any) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "%s", jsonErrorText(body, err)))
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "", sdk.Errorf(sdk.CodeInvalidInput, "invalid JSON at %s: data after the JSON value", position(body, dec.InputOffset())))
		return false
	}
	return true
}

// readJSON reads a JSON body of at most max_body_bytes into v (readBody,
// decodeBody).
func (p *Plugin) readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, ok := p.readBody(w, r)
	return ok && decodeBody(w, body, v)
}

func (p *Plugin) tooLarge(w http.ResponseWriter, n, max int64) {
	p.stats.bodyTooLarge.Add(1)
	msg := fmt.Sprintf("the body is larger than this node accepts (%s, max_body_bytes)", sdk.ByteSize(max))
	if n > 0 {
		msg = fmt.Sprintf("a body of %d bytes is larger than this node accepts (%s, max_body_bytes)", n, sdk.ByteSize(max))
	}
	// The body is not read: close the connection rather than drain it.
	w.Header().Set("Connection", "close")
	writeError(w, http.StatusRequestEntityTooLarge, "", sdk.Errorf(sdk.CodeInvalidInput, "%s", msg))
}

// jsonErrorText says what is wrong with a JSON body, and where.
func jsonErrorText(body []byte, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		// Offset counts the bytes read, the offending one included.
		return fmt.Sprintf("invalid JSON at %s: %v", position(body, se.Offset-1), se)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "the body"
		}
		return fmt.Sprintf("invalid JSON at %s: %s is %s, want %s", position(body, te.Offset-1), field, te.Value, te.Type)
	case errors.Is(err, io.EOF):
		return "the body is empty: send a JSON value"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no error type for it.
		return strings.TrimPrefix(err.Error(), "json: ") + `: the body takes "operation" and "input"`
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("invalid JSON at %s: the body ends inside a value", position(body, int64(len(body))))
	}
	return "invalid JSON: " + err.Error()
}

// position is "line L, column C (offset O)" of the byte at offset
// (counted from 0) in body; lines and columns count from 1.
func position(body []byte, offset int64) string {
	offset = min(max(offset, 0), int64(len(body)))
	before := body[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(offset) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return fmt.Sprintf("line %d, column %d (offset %d)", line, col, offset)
}

// statusOf maps a call error to its HTTP status (docs/spec/handlers.md
// §HTTP): NOT_FOUND 404, FORBIDDEN 401 without credentials and 403 with
// them, INVALID_INPUT and INVALID_OPERATION_TYPE 400, TIMEOUT 504,
// INTERNAL 500, an operation's own codes their declared http_status.
func (p *Plugin) statusOf(ctx context.Context, c *caller, op string, err error) (int, *errorBody) {
	var ce *sdk.Error
	if !errors.As(err, &ce) {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			ce = sdk.Errorf(sdk.CodeTimeout, "no answer in time")
		case errors.Is(err, context.Canceled):
			ce = sdk.Errorf(sdk.CodeInternal, "request cancelled")
		default:
			ce = sdk.Errorf(sdk.CodeInternal, "%v", err)
		}
	}
	e := errorOf(ce, "")
	switch ce.Code {
	case sdk.CodeNotFound:
		return http.StatusNotFound, e
	case sdk.CodeForbidden:
		if c == nil || (c.id == nil && !c.token) || ce.Message == "authentication required" {
			return http.StatusUnauthorized, e
		}
		return http.StatusForbidden, e
	case sdk.CodeInvalidInput, sdk.CodeInvalidOperationType:
		return http.StatusBadRequest, e
	case sdk.CodeTimeout:
		return http.StatusGatewayTimeout, e
	case sdk.CodeInternal:
		return http.StatusInternalServerError, e
	}
	if c == nil || op == "" {
		return http.StatusInternalServerError, e
	}
	return p.errs.status(ctx, p, c, op, string(ce.Code)), e
}

func errorOf(ce *sdk.Error, requestID string) *errorBody {
	return &errorBody{Code: string(ce.Code), Message: ce.Message, Retryable: ce.Retryable, Details: ce.Details, RequestID: requestID}
}

// writeCallError answers a failed call with its status and the call error.
func (p *Plugin) writeCallError(w http.ResponseWriter, r *http.Request, c *caller, op, requestID string, err error) {
	status, e := p.statusOf(r.Context(), c, op, err)
	e.RequestID = requestID
	switch status {
	case http.StatusUnauthorized:
		if err == errUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer`)
		}
	case http.StatusGatewayTimeout:
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, e)
}

func writeError(w http.ResponseWriter, status int, requestID string, ce *sdk.Error) {
	writeJSON(w, status, errorOf(ce, requestID))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":"INTERNAL","message":"encode the answer","retryable":false}`)
	}
	writeRawJSON(w, status, b)
}

func writeRawJSON(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
