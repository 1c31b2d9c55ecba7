package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Defaults of the Client's zero fields.
const (
	DefaultTimeout          = 10 * time.Minute
	DefaultMaxRetries       = 3
	DefaultRetryDelay       = 500 * time.Millisecond
	DefaultMaxRetryDelay    = 30 * time.Second
	DefaultMaxEventBytes    = 1 << 20
	DefaultMaxResponseBytes = 64 << 20
)

// ErrTimeout is wrapped by the error of a request that ran out of
// Client.Timeout.
var ErrTimeout = errors.New("request timed out")

// Client talks to one OpenAI-compatible chat-completions endpoint. The
// zero value of each field but BaseURL means its default. A Client holds
// no key (each call is given one) and is safe for concurrent use.
type Client struct {
	// BaseURL is the API's base, requests go to BaseURL + "/chat/completions"
	// (e.g. "https://api.openai.com/v1", "http://localhost:11434/v1").
	BaseURL string
	// Model is the model asked for when the Request names none.
	Model string
	// HTTPClient sends the requests; nil means http.DefaultClient. Its own
	// timeout, if any, applies to each attempt besides Timeout below.
	HTTPClient *http.Client
	// Header is sent with every request (e.g. an organisation header);
	// Content-Type, Accept and (given a key) Authorization are set by the
	// client.
	Header http.Header
	// Timeout bounds a whole call of Stream: every attempt, the waits
	// between them and the streamed body (DefaultTimeout; negative: none).
	Timeout time.Duration
	// MaxRetries is how many times a failed request is sent again
	// (DefaultMaxRetries; negative: never).
	MaxRetries int
	// RetryDelay is the wait before the first retry when the server says
	// nothing; it doubles for each further retry, with jitter
	// (DefaultRetryDelay).
	RetryDelay time.Duration
	// MaxRetryDelay caps any wait between attempts, the server's
	// Retry-After included (DefaultMaxRetryDelay).
	MaxRetryDelay time.Duration
	// MaxEventBytes bounds the data of one server-sent event
	// (DefaultMaxEventBytes).
	MaxEventBytes int
	// MaxResponseBytes bounds a response body (DefaultMaxResponseBytes).
	MaxResponseBytes int64
	// MaxCompletionTokens sends Request.MaxTokens as
	// "max_completion_tokens", which OpenAI's reasoning models require,
	// instead of "max_tokens", which compatible servers know.
	MaxCompletionTokens bool
}

// Error is the error of a failed Stream. It never contains the key: the
// provider's message has every occurrence of it replaced.
type Error struct {
	// URL is the endpoint, without user information or query.
	URL string
	// StatusCode is the HTTP status of the last attempt; 0 when no
	// response came.
	StatusCode int
	// Message is the provider's error message, shortened.
	Message string
	// Attempts is the number of requests made.
	Attempts int
	// Err is the cause, if any: ErrTimeout, the context's error, a
	// transport error, an error reading the stream (ErrTooLarge, …).
	Err error
	// note says why retrying stopped early.
	note string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("provider: POST ")
	b.WriteString(e.URL)
	if e.StatusCode != 0 && (e.StatusCode < 200 || e.StatusCode > 299) {
		fmt.Fprintf(&b, ": HTTP %d", e.StatusCode)
		if t := http.StatusText(e.StatusCode); t != "" {
			b.WriteString(" " + t)
		}
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Attempts == 1 {
		b.WriteString(" (1 attempt")
	} else {
		fmt.Fprintf(&b, " (%d attempts", e.Attempts)
	}
	if e.note != "" {
		b.WriteString("; " + e.note)
	}
	b.WriteString(")")
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// failure is how one attempt failed.
type failure struct {
	status     int
	message    string
	err        error
	retryable  bool
	retryAfter time.Duration
	hasAfter   bool // the server said when to retry
}

// Stream sends req and reads the streamed answer. Each piece of assistant
// text is passed to onDelta (which may be nil) as it arrives, in order, on
// the calling goroutine; the returned Response holds the whole message.
// key is sent as "Authorization: Bearer <key>" (not at all when zero).
//
// A request answered 408, 429 or 5xx (but 501), or failing before any
// byte of a response body was read, is retried up to MaxRetries times,
// after the server's Retry-After (or retry-after-ms) or an exponential
// backoff, each capped at MaxRetryDelay. Nothing is retried once the
// stream has begun. Cancelling ctx, or running out of Timeout, closes the
// request. On error the Response holds what arrived before the failure.
func (c *Client) Stream(ctx context.Context, req Request, key Secret, onDelta func(text string)) (Response, error) {
	endpoint, shown, err := c.endpoint()
	if err != nil {
		return Response{}, err
	}
	body, err := c.encode(req)
	if err != nil {
		return Response{}, fmt.Errorf("provider: POST %s: %w", shown, err)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout, ErrTimeout)
		defer cancel()
	}
	maxRetries := c.MaxRetries
	if maxRetries == 0 {
		maxRetries = DefaultMaxRetries
	}
	for attempt := 1; ; attempt++ {
		res, f := c.attempt(ctx, endpoint, body, key, onDelta)
		res.Attempts = attempt
		if f == nil {
			return res, nil
		}
		e := &Error{URL: shown, StatusCode: f.status, Message: f.message, Attempts: attempt, Err: f.err}
		if ctx.Err() != nil {
			e.Err = contextError(ctx, timeout)
			return res, e
		}
		if !f.retryable || attempt > maxRetries {
			return res, e
		}
		wait := c.backoff(attempt)
		if f.hasAfter {
			wait = min(f.retryAfter, c.maxRetryDelay())
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			e.note = fmt.Sprintf("not retried: the next attempt, in %v, would come after the deadline", wait.Round(time.Millisecond))
			return res, e
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			e.Err = contextError(ctx, timeout)
			return res, e
		}
	}
}

// contextError says why ctx ended: the client's own timeout, or the
// caller's cancellation or deadline (with its cause, if any).
func contextError(ctx context.Context, timeout time.Duration) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrTimeout) {
		return fmt.Errorf("%w: no complete response within %v", ErrTimeout, timeout)
	}
	if cause == nil || cause == ctx.Err() {
		return ctx.Err()
	}
	return fmt.Errorf("%w: %w", ctx.Err(), cause)
}

// attempt makes one request and reads its response.
func (c *Client) attempt(ctx context.Context, endpoint string, body []byte, key Secret, onDelta func(string)) (Response, *failure) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return Response{}, &failure{err: err}
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	if !key.IsZero() {
		hreq.Header.Set("Authorization", "Bearer "+key.Reveal())
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(hreq)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the method and URL are in the Error already
		}
		return Response{}, &failure{err: err, retryable: true}
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		f := &failure{
			status:    resp.StatusCode,
			message:   errorBodyMessage(resp.Body, key),
			retryable: retryableStatus(resp.StatusCode),
		}
		f.retryAfter, f.hasAfter = retryAfter(resp.Header, time.Now())
		return Response{}, f
	}

	maxResp := c.MaxResponseBytes
	if maxResp <= 0 {
		maxResp = DefaultMaxResponseBytes
	}
	maxEvent := c.MaxEventBytes
	if maxEvent <= 0 {
		maxEvent = DefaultMaxEventBytes
	}
	br := &boundedReader{r: resp.Body, max: maxResp}
	m := newMerger()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		err = m.readJSON(br, onDelta)
	} else {
		err = m.readSSE(br, maxEvent, onDelta)
	}
	res := m.response()
	if err == nil {
		// What follows [DONE] is at most the end of the chunked body: read
		// it (bounded) so the connection goes back to the pool for the
		// next step.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	}
	if err != nil {
		f := &failure{status: resp.StatusCode, err: err, retryable: br.n == 0}
		var se *streamError
		if errors.As(err, &se) {
			f.err = errors.New("error event in the stream")
			f.message = shorten(scrub(se.msg, key))
		}
		return res, f
	}
	return res, nil
}

// retryableStatus: 408 (request timeout), 429 (rate limit) and the 5xx
// statuses but 501 (not implemented), which no retry fixes.
func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests ||
		(code >= 500 && code <= 599 && code != http.StatusNotImplemented)
}

// retryAfter reads when the server wants the next attempt: retry-after-ms
// (OpenAI's, in milliseconds) or Retry-After (seconds or an HTTP date).
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms >= 0 && ms < 1e12 {
			return time.Duration(ms * float64(time.Millisecond)), true
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s < 0 || math.IsNaN(s) {
			return 0, false
		}
		return time.Duration(min(s, 1e9) * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// backoff is the wait before retry n (1, 2, …) when the server gave none:
// RetryDelay doubled n-1 times, capped, between half and all of it.
func (c *Client) backoff(n int) time.Duration {
	d := c.RetryDelay
	if d <= 0 {
		d = DefaultRetryDelay
	}
	limit := c.maxRetryDelay()
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}

func (c *Client) maxRetryDelay() time.Duration {
	if c.MaxRetryDelay > 0 {
		return c.MaxRetryDelay
	}
	return DefaultMaxRetryDelay
}

// endpoint returns the request URL and the form shown in errors (without
// user information or query, which may hold credentials).
func (c *Client) endpoint() (string, string, error) {
	const example = "like https://api.openai.com/v1"
	if c.BaseURL == "" {
		return "", "", errors.New("provider: no base URL; set one " + example)
	}
	u, err := url.Parse(strings.TrimRight(c.BaseURL, "/") + "/chat/completions")
	if err != nil {
		return "", "", errors.New("provider: the base URL is not a URL; set one " + example)
	}
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", fmt.Errorf("provider: base URL %s is not an http(s) URL %s", strings.TrimSuffix(shown, "/chat/completions"), example)
	}
	return u.String(), shown, nil
}

// errorBodyMessage reads the message of an error response: OpenAI's
// {"error":{"message":…}}, {"error":"…"}, {"message":…} or {"detail":…}
// (other compatible servers), or the body's text.
func errorBodyMessage(r io.Reader, key Secret) string {
	b, _ := io.ReadAll(io.LimitReader(r, 64<<10))
	var v struct {
		Error   json.RawMessage `json:"error"`
		Message json.RawMessage `json:"message"`
		Detail  json.RawMessage `json:"detail"`
	}
	msg := string(bytes.TrimSpace(b))
	if json.Unmarshal(b, &v) == nil {
		switch {
		case len(v.Error) > 0 && string(v.Error) != "null":
			msg = providerMessage(v.Error)
		case len(v.Message) > 0:
			msg = providerMessage(v.Message)
		case len(v.Detail) > 0:
			msg = providerMessage(v.Detail)
		}
	}
	return shorten(scrub(msg, key))
}

// scrub removes the key from a message (some servers echo a wrong key).
func scrub(s string, key Secret) string {
	if k := key.Reveal(); k != "" {
		s = strings.ReplaceAll(s, k, redacted)
	}
	return s
}

// maxMessage bounds the provider's message in an error.
const maxMessage = 300

// shorten makes s one line of at most maxMessage bytes (plus an ellipsis).
func shorten(s string) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// The request body, in the chat-completions shape.
type (
	wireRequest struct {
		Model               string        `json:"model"`
		Messages            []wireMessage `json:"messages"`
		Tools               []wireTool    `json:"tools,omitempty"`
		ToolChoice          any           `json:"tool_choice,omitempty"`
		MaxTokens           int           `json:"max_tokens,omitempty"`
		MaxCompletionTokens int           `json:"max_completion_tokens,omitempty"`
		Temperature         *float64      `json:"temperature,omitempty"`
		Stream              bool          `json:"stream"`
		StreamOptions       struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	wireMessage struct {
		Role       string         `json:"role"`
		Content    *string        `json:"content"`
		ToolCalls  []wireToolCall `json:"tool_calls,omitempty"`
		ToolCallID string         `json:"tool_call_id,omitempty"`
		Name       string         `json:"name,omitempty"`
	}
	wireToolCall struct {
		ID       string       `json:"id"`
		Type     string       `json:"type"`
		Function wireFunction `json:"function"`
	}
	wireFunction struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	}
	wireTool struct {
		Type     string          `json:"type"`
		Function wireToolFuncDef `json:"function"`
	}
	wireToolFuncDef struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters"`
	}
)

// noParameters is the schema sent for a tool without one: some servers
// require "parameters".
var noParameters = json.RawMessage(`{"type":"object","properties":{}}`)

func (c *Client) encode(req Request) ([]byte, error) {
	w := wireRequest{Model: req.Model, Temperature: req.Temperature, Stream: true}
	if w.Model == "" {
		w.Model = c.Model
	}
	if w.Model == "" {
		return nil, errors.New("no model: set the provider's model or the request's")
	}
	w.StreamOptions.IncludeUsage = true
	if c.MaxCompletionTokens {
		w.MaxCompletionTokens = req.MaxTokens
	} else {
		w.MaxTokens = req.MaxTokens
	}
	switch req.ToolChoice {
	case "":
	case "auto", "none", "required":
		w.ToolChoice = req.ToolChoice
	default:
		w.ToolChoice = map[string]any{"type": "function", "function": map[string]string{"name": req.ToolChoice}}
	}
	w.Messages = make([]wireMessage, 0, len(req.Messages))
	for i, m := range req.Messages {
		if m.Role == "" {
			return nil, fmt.Errorf("message %d has no role", i)
		}
		wm := wireMessage{Role: m.Role, ToolCallID: m.ToolCallID, Name: m.Name}
		if m.Content != "" || len(m.ToolCalls) == 0 {
			wm.Content = &m.Content
		}
		for _, tc := range m.ToolCalls {
			args := tc.Arguments
			if args == "" {
				args = "{}" // servers that parse the arguments of past calls reject ""
			}
			wm.ToolCalls = append(wm.ToolCalls, wireToolCall{ID: tc.ID, Type: "function", Function: wireFunction{Name: tc.Name, Arguments: args}})
		}
		w.Messages = append(w.Messages, wm)
	}
	for _, t := range req.Tools {
		p := t.Parameters
		if len(bytes.TrimSpace(p)) == 0 {
			p = noParameters
		} else if !json.Valid(p) {
			return nil, fmt.Errorf("tool %q: parameters are not valid JSON", t.Name)
		}
		w.Tools = append(w.Tools, wireTool{Type: "function", Function: wireToolFuncDef{Name: t.Name, Description: t.Description, Parameters: p}})
	}
	return json.Marshal(w)
}
