package provider_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/agent/provider"
)

// A scripted OpenAI-compatible server: real HTTP on loopback; each request
// is recorded and answered by the test's handler, told which attempt it is.

type recorded struct {
	at     time.Time
	path   string
	header http.Header
	body   map[string]any
}

type server struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newServer(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, attempt int)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		raw, err := io.ReadAll(r.Body) // read fully: the server then watches the connection
		var body map[string]any
		if err == nil {
			err = json.Unmarshal(raw, &body)
		}
		if err != nil {
			t.Errorf("request body: %v", err)
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, recorded{at: at, path: r.URL.Path, header: r.Header.Clone(), body: body})
		n := len(s.reqs)
		s.mu.Unlock()
		handle(w, r, n)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

func (s *server) client() *provider.Client {
	return &provider.Client{BaseURL: s.URL + "/v1", Model: "test-model", HTTPClient: s.Client(), RetryDelay: time.Millisecond}
}

// startSSE answers 200 with an event stream.
func startSSE(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
}

// event writes one event and flushes it.
func event(w http.ResponseWriter, data string) {
	fmt.Fprintf(w, "data: %s\n\n", data)
	w.(http.Flusher).Flush()
}

func textChunk(s string) string {
	b, _ := json.Marshal(s)
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"test-model","choices":[{"index":0,"delta":{"content":` + string(b) + `},"finish_reason":null}],"usage":null}`
}

const (
	stopChunk  = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"test-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`
	usageChunk = `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"test-model","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`
)

// answer streams text, a stop, the usage chunk and [DONE].
func answer(w http.ResponseWriter, text ...string) {
	startSSE(w)
	for _, s := range text {
		event(w, textChunk(s))
	}
	event(w, stopChunk)
	event(w, usageChunk)
	event(w, "[DONE]")
}

var hello = provider.Request{Messages: []provider.Message{{Role: provider.RoleUser, Content: "hello"}}}

// waitFor fails the test unless ch is closed (or sent to) within a while.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestStreamText(t *testing.T) {
	pieces := []string{"Hel", "lo, ", "wörld"}
	got := make(chan string)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		startSSE(w)
		event(w, `{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"test-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`)
		fmt.Fprint(w, ": keep-alive\n\n")
		for _, p := range pieces {
			event(w, textChunk(p))
			// The next piece is sent only once this one reached the
			// callback: text is handed over as it arrives.
			select {
			case s := <-got:
				if s != p {
					t.Errorf("callback got %q, want %q", s, p)
				}
			case <-r.Context().Done():
				return
			}
		}
		event(w, stopChunk)
		event(w, usageChunk)
		event(w, "[DONE]")
	})
	var deltas []string
	res, err := srv.client().Stream(t.Context(), hello, provider.NewSecret("sk-test"), func(s string) {
		deltas = append(deltas, s)
		select {
		case got <- s:
		case <-time.After(10 * time.Second):
			t.Errorf("the server did not take delta %q", s)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deltas, pieces) {
		t.Fatalf("callback got %q, want %q", deltas, pieces)
	}
	if res.Message.Role != provider.RoleAssistant || res.Message.Content != "Hello, wörld" || len(res.Message.ToolCalls) != 0 {
		t.Fatalf("message %+v", res.Message)
	}
	if res.FinishReason != "stop" || res.Model != "test-model" || res.Attempts != 1 {
		t.Fatalf("finish %q, model %q, attempts %d", res.FinishReason, res.Model, res.Attempts)
	}
	if want := (provider.Usage{PromptTokens: 12, CompletionTokens: 5, TotalTokens: 17}); res.Usage != want {
		t.Fatalf("usage %+v, want %+v (from the chunk with empty choices)", res.Usage, want)
	}

	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	r := reqs[0]
	if r.path != "/v1/chat/completions" {
		t.Errorf("path %q", r.path)
	}
	if r.header.Get("Content-Type") != "application/json" || r.header.Get("Accept") != "text/event-stream" {
		t.Errorf("headers %v", r.header)
	}
	b := r.body
	if b["model"] != "test-model" || b["stream"] != true {
		t.Errorf("body %v", b)
	}
	if so, _ := b["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("stream_options %v", b["stream_options"])
	}
	if msgs, _ := b["messages"].([]any); len(msgs) != 1 || fmt.Sprint(msgs[0]) != "map[content:hello role:user]" {
		t.Errorf("messages %v", b["messages"])
	}
	if _, ok := b["tools"]; ok {
		t.Errorf("tools sent without tools: %v", b["tools"])
	}
}

// TestStreamToolCalls: two tool calls whose arguments come in pieces cut
// inside JSON tokens and inside characters, as compatible servers do.
func TestStreamToolCalls(t *testing.T) {
	weather := provider.Tool{
		Name:        "get_weather",
		Description: "Current weather of a city.",
		Parameters:  json.RawMessage(`{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}`),
	}
	tc := func(index int, extra, args string) string {
		a, _ := json.Marshal(args)
		return fmt.Sprintf(`{"id":"chatcmpl-2","object":"chat.completion.chunk","model":"test-model","choices":[{"index":0,"delta":{"tool_calls":[{"index":%d%s,"function":{"arguments":%s}}]},"finish_reason":null}]}`, index, extra, a)
	}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		startSSE(w)
		event(w, `{"id":"chatcmpl-2","object":"chat.completion.chunk","model":"test-model","choices":[{"index":0,"delta":{"role":"assistant","content":"Checking."},"finish_reason":null}]}`)
		// Call 0: the arguments text holds "é" as the JSON escape \u00e9,
		// cut in the middle of the escape and of the key.
		event(w, tc(0, `,"id":"call_0","type":"function"`, ""))
		event(w, `{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"get_weather"}}]}}]}`)
		event(w, tc(0, "", `{"ci`))
		event(w, `{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}`)
		event(w, tc(0, "", `ty": "Montr\u00`))
		// Call 1, interleaved: "é" as raw UTF-8 in the stream, its two
		// bytes in two events; id and name repeated, as some servers do.
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_1\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Montr\xc3\"}}]}}]}\n\n")
		event(w, tc(0, "", `e9al"}`))
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_1\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\xa9al\\\"}\"}}]}}]}\n\n")
		event(w, `{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`)
		event(w, `{"choices":[],"usage":{"prompt_tokens":40,"completion_tokens":30,"total_tokens":70}}`)
		event(w, "[DONE]")
	})
	req := hello
	req.Tools = []provider.Tool{weather}
	res, err := srv.client().Stream(t.Context(), req, provider.Secret{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.FinishReason != "tool_calls" || res.Message.Content != "Checking." || res.Usage.TotalTokens != 70 {
		t.Fatalf("finish %q, content %q, usage %+v", res.FinishReason, res.Message.Content, res.Usage)
	}
	want := []provider.ToolCall{
		{ID: "call_0", Name: "get_weather", Arguments: `{"city": "Montr\u00e9al"}`},
		{ID: "call_1", Name: "get_weather", Arguments: `{"city": "Montréal"}`},
	}
	if !slices.Equal(res.Message.ToolCalls, want) {
		t.Fatalf("tool calls\n got %q\nwant %q", res.Message.ToolCalls, want)
	}
	for _, c := range res.Message.ToolCalls {
		var args struct{ City string }
		if err := json.Unmarshal([]byte(c.Arguments), &args); err != nil || args.City != "Montréal" {
			t.Fatalf("%s arguments %q: city %q, %v", c.ID, c.Arguments, args.City, err)
		}
	}

	tools, _ := srv.requests()[0].body["tools"].([]any)
	if len(tools) != 1 {
		t.Fatalf("tools sent: %v", srv.requests()[0].body["tools"])
	}
	sent, _ := json.Marshal(tools[0])
	if string(sent) != `{"function":{"description":"Current weather of a city.","name":"get_weather","parameters":{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}},"type":"function"}` {
		t.Fatalf("tool sent as %s", sent)
	}
}

func TestRetryAfter429(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, attempt int) {
		if attempt == 1 {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`)
			return
		}
		answer(w, "ok")
	})
	c := srv.client()
	c.RetryDelay = 10 * time.Millisecond // the server's Retry-After wins
	res, err := c.Stream(t.Context(), hello, provider.NewSecret("k"), nil)
	if err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	if len(reqs) != 2 || res.Attempts != 2 || res.Message.Content != "ok" {
		t.Fatalf("%d requests, %d attempts, content %q", len(reqs), res.Attempts, res.Message.Content)
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap < time.Second {
		t.Fatalf("second attempt %v after the first, want ≥ 1s (Retry-After: 1)", gap)
	}
}

func TestRetry500ThenSuccess(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, attempt int) {
		if attempt == 1 {
			http.Error(w, "upstream exploded", http.StatusInternalServerError)
			return
		}
		answer(w, "fine")
	})
	res, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(srv.requests()); n != 2 || res.Attempts != 2 || res.Message.Content != "fine" {
		t.Fatalf("%d requests, %d attempts, content %q", n, res.Attempts, res.Message.Content)
	}
}

func TestRetriesExhausted(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":{"message":"The engine is currently overloaded"}}`)
	})
	c := srv.client()
	c.MaxRetries = 2
	_, err := c.Stream(t.Context(), hello, provider.Secret{}, nil)
	var pe *provider.Error
	if !errors.As(err, &pe) || pe.StatusCode != http.StatusServiceUnavailable || pe.Attempts != 3 {
		t.Fatalf("error %#v", err)
	}
	if n := len(srv.requests()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	for _, want := range []string{srv.URL + "/v1/chat/completions", "HTTP 503 Service Unavailable", "The engine is currently overloaded", "(3 attempts)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestErrorBody400(t *testing.T) {
	long := strings.Repeat("very ", 1000)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, attempt int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		msg := "Invalid value for 'model': no such model\n(see the docs)"
		if attempt > 1 {
			msg = long
		}
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error"}})
	})
	_, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
	if err == nil {
		t.Fatal("no error")
	}
	want := "provider: POST " + srv.URL + "/v1/chat/completions: HTTP 400 Bad Request: Invalid value for 'model': no such model (see the docs) (1 attempt)"
	if err.Error() != want {
		t.Fatalf("error\n %q\nwant\n %q", err, want)
	}
	if n := len(srv.requests()); n != 1 {
		t.Fatalf("%d requests: a 400 is not retried", n)
	}
	// A long message is shortened.
	_, err = srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
	if err == nil || len(err.Error()) > 500 || !strings.Contains(err.Error(), "very very") || !strings.Contains(err.Error(), "…") {
		t.Fatalf("error of %d bytes: %v", len(fmt.Sprint(err)), err)
	}
}

// TestTimeout: a server that never answers, or stops in the middle of the
// stream, runs into the request timeout; the request is closed.
func TestTimeout(t *testing.T) {
	for _, midStream := range []bool{false, true} {
		t.Run(fmt.Sprintf("midStream=%v", midStream), func(t *testing.T) {
			closed := make(chan struct{})
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
				if midStream {
					startSSE(w)
					event(w, textChunk("partial"))
				}
				<-r.Context().Done()
				close(closed)
			})
			c := srv.client()
			c.Timeout = 300 * time.Millisecond
			res, err := c.Stream(t.Context(), hello, provider.Secret{}, nil)
			if !errors.Is(err, provider.ErrTimeout) {
				t.Fatalf("error %v, want ErrTimeout", err)
			}
			if !strings.Contains(err.Error(), "request timed out: no complete response within 300ms (1 attempt)") {
				t.Fatalf("error %q", err)
			}
			waitFor(t, closed, "the server to see the request closed")
			if n := len(srv.requests()); n != 1 {
				t.Fatalf("%d requests", n)
			}
			if midStream && res.Message.Content != "partial" {
				t.Fatalf("partial response %+v", res)
			}
		})
	}
}

func TestCancelClosesRequest(t *testing.T) {
	closed := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		startSSE(w)
		event(w, textChunk("first"))
		<-r.Context().Done()
		close(closed)
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	res, err := srv.client().Stream(ctx, hello, provider.Secret{}, func(string) { cancel() })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	waitFor(t, closed, "the server to see the request closed")
	if res.Message.Content != "first" {
		t.Fatalf("partial response %+v", res)
	}
	if n := len(srv.requests()); n != 1 {
		t.Fatalf("%d requests: a cancelled request is not retried", n)
	}
}

func TestKeyNeverLeaks(t *testing.T) {
	const key = "sk-CANARY-7f3a9c0e1d2b"
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		// Some servers echo the key they were given.
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s. You can find your API key at https://example.com.","code":"invalid_api_key"}}`, key)
	})
	c := srv.client()
	secret := provider.NewSecret(key)
	req := hello
	_, err := c.Stream(t.Context(), req, secret, nil)
	if err == nil {
		t.Fatal("no error")
	}
	if got := srv.requests()[0].header.Get("Authorization"); got != "Bearer "+key {
		t.Fatalf("Authorization %q", got)
	}
	if !strings.Contains(err.Error(), "Incorrect API key provided: [REDACTED]") {
		t.Fatalf("error %q", err)
	}

	holder := struct {
		Key    provider.Secret
		hidden provider.Secret
		Ptr    *provider.Secret
	}{secret, secret, &secret}
	var out bytes.Buffer
	for _, v := range []any{secret, &secret, holder, &holder, c, req, err} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%T"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
		fmt.Fprintln(&out, v)
	}
	j, jerr := json.Marshal(holder)
	if jerr != nil || !strings.Contains(string(j), `"Key":"[REDACTED]"`) {
		t.Fatalf("JSON %s, %v", j, jerr)
	}
	out.Write(j)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("call", "key", secret, "holder", holder, "err", err)
	slog.New(slog.NewTextHandler(&out, nil)).Info("call", "key", secret, "holder", holder, "err", err)
	if strings.Contains(out.String(), key) || strings.Contains(out.String(), key[3:]) {
		t.Fatalf("the key leaked:\n%s", out.String())
	}
	if secret.Reveal() != key || secret.String() != "[REDACTED]" {
		t.Fatal("Reveal/String")
	}

	// No key: no Authorization header.
	_, _ = c.Stream(t.Context(), req, provider.Secret{}, nil)
	if h, ok := srv.requests()[1].header["Authorization"]; ok {
		t.Fatalf("Authorization %q sent without a key", h)
	}
}

func TestOversizeEvent(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		startSSE(w)
		event(w, textChunk("before"))
		event(w, textChunk(strings.Repeat("x", provider.DefaultMaxEventBytes)))
		event(w, stopChunk)
		event(w, "[DONE]")
	})
	res, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
	if !errors.Is(err, provider.ErrTooLarge) || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Fatalf("error %v, want ErrTooLarge", err)
	}
	if res.Message.Content != "before" || len(srv.requests()) != 1 {
		t.Fatalf("content %q after %d requests", res.Message.Content, len(srv.requests()))
	}
}

func TestResponseTooLarge(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		startSSE(w)
		for range 100 {
			event(w, textChunk("0123456789"))
		}
		event(w, stopChunk)
		event(w, "[DONE]")
	})
	c := srv.client()
	c.MaxResponseBytes = 4096
	_, err := c.Stream(t.Context(), hello, provider.Secret{}, nil)
	if !errors.Is(err, provider.ErrTooLarge) || !strings.Contains(err.Error(), "response larger than 4096 bytes") {
		t.Fatalf("error %v", err)
	}
}

func TestStreamErrorEvent(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		startSSE(w)
		event(w, textChunk("Sure"))
		event(w, `{"error":{"message":"Provider returned error: overloaded","code":502}}`)
	})
	res, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
	if err == nil || !strings.Contains(err.Error(), "error event in the stream: Provider returned error: overloaded (1 attempt)") {
		t.Fatalf("error %v", err)
	}
	if res.Message.Content != "Sure" || len(srv.requests()) != 1 {
		t.Fatalf("content %q after %d requests: a begun stream is not retried", res.Message.Content, len(srv.requests()))
	}
}

func TestStreamEnd(t *testing.T) {
	t.Run("cut short", func(t *testing.T) {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
			startSSE(w)
			event(w, textChunk("half"))
		})
		res, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
		if err == nil || !strings.Contains(err.Error(), "ended before the response was complete") || res.Message.Content != "half" {
			t.Fatalf("%q, %v", res.Message.Content, err)
		}
	})
	t.Run("finished without [DONE]", func(t *testing.T) {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
			startSSE(w)
			event(w, textChunk("all"))
			event(w, stopChunk)
		})
		res, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
		if err != nil || res.Message.Content != "all" || res.FinishReason != "stop" {
			t.Fatalf("%+v, %v", res, err)
		}
	})
	t.Run("empty body is retried", func(t *testing.T) {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request, attempt int) {
			if attempt == 1 {
				startSSE(w)
				return
			}
			answer(w, "second")
		})
		res, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, nil)
		if err != nil || res.Message.Content != "second" || res.Attempts != 2 {
			t.Fatalf("%+v, %v", res, err)
		}
	})
}

func TestNonStreamedAnswer(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprint(w, `{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"whole","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`)
	})
	var deltas []string
	res, err := srv.client().Stream(t.Context(), hello, provider.Secret{}, func(s string) { deltas = append(deltas, s) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Message.Content != "whole" || !slices.Equal(deltas, []string{"whole"}) || res.Usage.TotalTokens != 3 ||
		!slices.Equal(res.Message.ToolCalls, []provider.ToolCall{{ID: "c1", Name: "f", Arguments: "{}"}}) {
		t.Fatalf("%+v, deltas %q", res, deltas)
	}
}

func TestRetryAfterBeyondDeadline(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		w.Header().Set("Retry-After", "20")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	c := srv.client()
	c.Timeout = 5 * time.Second
	_, err := c.Stream(t.Context(), hello, provider.Secret{}, nil)
	if err == nil || !strings.Contains(err.Error(), "HTTP 429 Too Many Requests (1 attempt; not retried: the next attempt, in 20s, would come after the deadline)") {
		t.Fatalf("error %v", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Fatalf("%d requests", n)
	}
}

func TestRequestBody(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request, _ int) { answer(w, "ok") })
	temp := 0.25
	req := provider.Request{
		Model: "other-model",
		Messages: []provider.Message{
			{Role: provider.RoleSystem, Content: "be brief"},
			{Role: provider.RoleUser, Content: ""},
			{Role: provider.RoleAssistant, ToolCalls: []provider.ToolCall{{ID: "c1", Name: "f"}}},
			{Role: provider.RoleTool, ToolCallID: "c1", Name: "f", Content: `{"ok":true}`},
		},
		Tools:       []provider.Tool{{Name: "f"}},
		ToolChoice:  "f",
		MaxTokens:   100,
		Temperature: &temp,
	}
	c := srv.client()
	if _, err := c.Stream(t.Context(), req, provider.Secret{}, nil); err != nil {
		t.Fatal(err)
	}
	c.MaxCompletionTokens = true
	req.ToolChoice = "required"
	if _, err := c.Stream(t.Context(), req, provider.Secret{}, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"max_tokens":100,"messages":[{"content":"be brief","role":"system"},{"content":"","role":"user"},{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{}","name":"f"},"id":"c1","type":"function"}]},{"content":"{\"ok\":true}","name":"f","role":"tool","tool_call_id":"c1"}],"model":"other-model","stream":true,"stream_options":{"include_usage":true},"temperature":0.25,"tool_choice":{"function":{"name":"f"},"type":"function"},"tools":[{"function":{"name":"f","parameters":{"properties":{},"type":"object"}},"type":"function"}]}`,
		`{"max_completion_tokens":100,"messages":[{"content":"be brief","role":"system"},{"content":"","role":"user"},{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{}","name":"f"},"id":"c1","type":"function"}]},{"content":"{\"ok\":true}","name":"f","role":"tool","tool_call_id":"c1"}],"model":"other-model","stream":true,"stream_options":{"include_usage":true},"temperature":0.25,"tool_choice":"required","tools":[{"function":{"name":"f","parameters":{"properties":{},"type":"object"}},"type":"function"}]}`,
	}
	for i, r := range srv.requests() {
		got, _ := json.Marshal(r.body)
		if string(got) != want[i] {
			t.Errorf("request %d\n got %s\nwant %s", i, got, want[i])
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		c    provider.Client
		req  provider.Request
		want string
	}{
		{provider.Client{Model: "m"}, hello, "provider: no base URL; set one like https://api.openai.com/v1"},
		{provider.Client{BaseURL: "ftp://user:pw@host/v1?key=x", Model: "m"}, hello, "provider: base URL ftp://host/v1 is not an http(s) URL like https://api.openai.com/v1"},
		{provider.Client{BaseURL: "http://127.0.0.1:9/v1"}, hello, "provider: POST http://127.0.0.1:9/v1/chat/completions: no model: set the provider's model or the request's"},
		{provider.Client{BaseURL: "http://127.0.0.1:9", Model: "m"}, provider.Request{Tools: []provider.Tool{{Name: "f", Parameters: json.RawMessage("{")}}}, `provider: POST http://127.0.0.1:9/chat/completions: tool "f": parameters are not valid JSON`},
	} {
		_, err := tt.c.Stream(t.Context(), tt.req, provider.Secret{}, nil)
		if err == nil || err.Error() != tt.want {
			t.Errorf("error %v, want %s", err, tt.want)
		}
	}
}
