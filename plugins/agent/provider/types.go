package provider

import (
	"encoding/json"
	"fmt"
	"log/slog"
)

// Roles of a Message.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleTool      = "tool"
)

// Message is one message of a conversation. Its JSON form (the tags) is
// for keeping history; the request body uses the chat-completions shape.
type Message struct {
	// Role is RoleSystem, RoleUser, RoleAssistant or RoleTool.
	Role string `json:"role"`
	// Content is the text. An assistant message that only calls tools
	// has none (it is sent as null).
	Content string `json:"content,omitempty"`
	// ToolCalls are the tools an assistant message calls.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID is, in a RoleTool message, the ToolCall.ID it answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// Name is an optional participant name (or, in a RoleTool message,
	// the tool's name, which some servers want).
	Name string `json:"name,omitempty"`
}

// ToolCall is a call of a tool by the model.
type ToolCall struct {
	// ID identifies the call; the RoleTool message with its result
	// carries it as ToolCallID.
	ID string `json:"id"`
	// Name is the tool's name.
	Name string `json:"name"`
	// Arguments is the JSON text of the arguments, as the model wrote
	// it: it may be invalid JSON, and the caller must check it.
	Arguments string `json:"arguments"`
}

// Tool is a function the model may call.
type Tool struct {
	// Name is the tool's name (providers allow [a-zA-Z0-9_-], up to 64).
	Name string `json:"name"`
	// Description tells the model what the tool does.
	Description string `json:"description,omitempty"`
	// Parameters is the JSON Schema of the arguments (an object schema);
	// empty means no arguments.
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

// Usage counts the tokens of one request, as the server reports them.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Request is one chat-completions request.
type Request struct {
	// Model overrides Client.Model when set.
	Model string
	// Messages is the conversation so far.
	Messages []Message
	// Tools the model may call; none means a plain chat.
	Tools []Tool
	// ToolChoice is "" (the server's default), "auto", "none",
	// "required", or the name of one tool the model must call.
	ToolChoice string
	// MaxTokens bounds the tokens the model generates; 0 leaves it to the
	// server.
	MaxTokens int
	// Temperature is sent when set.
	Temperature *float64
}

// Response is the outcome of one streamed request.
type Response struct {
	// Message is the assistant message: the text and the tool calls,
	// merged from the stream's deltas.
	Message Message
	// FinishReason is the server's reason for ending ("stop",
	// "tool_calls", "length", "content_filter", …).
	FinishReason string
	// Usage is the token count; zero when the server sent none.
	Usage Usage
	// Model is the model the server says answered.
	Model string
	// Attempts is the number of HTTP requests made (retries included).
	Attempts int
}

// redacted is what a Secret prints.
const redacted = "[REDACTED]"

// Secret is a provider's API key. Every way of printing or encoding it
// (fmt verbs, JSON, text, slog) gives [REDACTED]; Reveal returns the key
// and is called only to build the Authorization header. The key is held
// behind a pointer so that even reflection-based printing of a struct
// holding a Secret in an unexported field shows an address, not the key.
type Secret struct{ p *string }

// NewSecret wraps key.
func NewSecret(key string) Secret { return Secret{p: &key} }

// Reveal returns the key. Use it only where the key is sent; never log,
// store or wrap it in an error.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// IsZero reports whether there is no key (the Authorization header is
// then not sent, as local servers often need none).
func (s Secret) IsZero() bool { return s.Reveal() == "" }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return redacted }

// Format implements fmt.Formatter: every verb prints [REDACTED].
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON encodes "[REDACTED]".
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText encodes [REDACTED].
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
