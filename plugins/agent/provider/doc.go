// Package provider is the agent plugin's client for OpenAI-compatible
// chat-completions APIs (OpenAI, and the servers that copy its API: vLLM,
// llama.cpp, Ollama, gateways…), streamed as server-sent events: the
// model side of the agent's tool-calling loop (docs/spec/handlers.md,
// "Agent").
//
// # Why it is hand-written
//
// The client is plain net/http and a small SSE reader rather than a vendor
// SDK. The official Go client is about 232k lines, makes a 15-line program
// a 35 MB binary, and mishandles streamed tool calls from some compatible
// servers (parallel calls that share an index, or carry none, are fused
// into one call with concatenated arguments). What this package needs —
// one request shape, one stream shape, tolerant merging — is a small
// package a reviewer can read in one sitting and a fuzzer can cover.
//
// # Use
//
//	c := &provider.Client{BaseURL: "https://api.openai.com/v1", Model: "gpt-4o-mini"}
//	res, err := c.Stream(ctx, provider.Request{Messages: msgs, Tools: tools},
//		provider.NewSecret(key), func(text string) { fmt.Print(text) })
//	// res.Message: the assistant's text and tool calls; res.Usage, res.FinishReason
//
// Stream posts to BaseURL + "/chat/completions" with "stream": true and
// "stream_options": {"include_usage": true}, passes each piece of text to
// the callback as it arrives, and returns the merged assistant message,
// the finish reason and the token usage (from the final chunk, whose
// "choices" is empty).
//
// # What is accepted
//
// The event stream: lines ending in LF, CRLF or CR; "data:" fields with or
// without the space after the colon, several in one event joined with a
// newline; comments and other fields ignored; "[DONE]" ends the stream (a
// stream that just ends is complete if a finish_reason came). One event
// may hold at most Client.MaxEventBytes (1 MiB by default), a response at
// most Client.MaxResponseBytes; past either the call fails with
// ErrTooLarge. An event {"error": …} in the stream is an error. A server
// that answers with one JSON completion instead of a stream is understood.
//
// JSON strings in the stream are decoded so that a character split
// between two deltas — as raw UTF-8 bytes, or as the two \u escapes of a
// surrogate pair — is whole again once the pieces are joined; the
// callback only ever receives whole characters.
//
// Tool calls are merged by index, as OpenAI streams them: the first delta
// of a call carries its index, id and name, later ones the index and a
// piece of the arguments, cut anywhere (inside a JSON token, inside a
// character); the pieces are concatenated. Compatible servers differ, and
// this is what is accepted:
//
//   - a delta whose id was seen before continues that call, whatever its
//     index: servers that repeat the id and name on every delta, or
//     re-announce a call at another index;
//   - a delta with a new id, where the current call of its index already
//     has another id, starts a new call: servers that give every parallel
//     call index 0; if that call has no id yet, the id becomes its id;
//   - a delta without an index belongs to the call of the previous delta,
//     or starts a new call when it carries a new id: servers that omit the
//     index, for one call or several;
//   - a delta without an id continues the current call of its index, but
//     a name other than that call's starts a new call;
//   - id and name keep their first non-empty value (a repeated name is
//     never appended); arguments sent as a JSON object instead of a
//     string are taken as their JSON text;
//   - calls are returned in the order they started; one that never got an
//     id gets "call_<n>", n its position.
//
// Only choice 0 is read; fields other than content, tool_calls,
// finish_reason, usage and model (reasoning text, logprobs, …) are
// ignored.
//
// # Retries, timeouts, cancellation
//
// 408, 429 and 5xx answers (but 501) and failures before any byte of the
// body are retried, at most Client.MaxRetries times, after the server's
// Retry-After (seconds or an HTTP date; or OpenAI's retry-after-ms) or an
// exponential backoff with jitter, either capped at Client.MaxRetryDelay
// (30 s by default). A stream that has begun is never retried. The whole
// call, retries included, is bounded by Client.Timeout; cancelling the
// context or running out of time closes the request, so the server sees
// the connection (or HTTP/2 stream) close. Errors are *Error: the
// endpoint, the HTTP status, the provider's message (shortened) and the
// number of attempts.
//
// # The key
//
// The key is a Secret: it prints and encodes as [REDACTED] and is revealed
// only for the Authorization header. It is not kept by the Client, and is
// removed from provider messages that echo it, so it appears in no error.
package provider
