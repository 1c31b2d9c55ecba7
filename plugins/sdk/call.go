package sdk

import "fmt"

// Call is one operation call routed to the plugin. Identity is who the
// node resolved the caller to (nil: anonymous); the node has already
// checked the operation's access control against it.
type Call struct {
	Operation string
	// RequestID is the caller's request id (for logs).
	RequestID string
	Identity  *Identity
	// ForwardedFor is the original caller recorded by a forwarding node:
	// audit only, it never grants anything.
	ForwardedFor *Identity
	// Internal is set for nested calls and calls from imported peers.
	Internal bool
	// Capabilities are the secrets granted to the plugin, for this call.
	Capabilities Capabilities

	handle uint64
	host   *Host
}

// Host is the node, for nested calls and internal dials as this call
// (pass the call as the Actor).
func (c *Call) Host() *Host { return c.host }

func (c *Call) actorHandle() uint64 { return c.handle }

// Code is an alknet/call error code (docs/spec/call.md §3), or one an
// operation declares (ErrorSpec).
type Code string

// The standard codes.
const (
	CodeNotFound             Code = "NOT_FOUND"
	CodeForbidden            Code = "FORBIDDEN"
	CodeInvalidInput         Code = "INVALID_INPUT"
	CodeInvalidOperationType Code = "INVALID_OPERATION_TYPE"
	CodeTimeout              Code = "TIMEOUT"
	CodeInternal             Code = "INTERNAL"
)

// Error is a call error. A handler returns one to answer with that code;
// any other error reaches the caller as INTERNAL "internal error" (and is
// logged by the SDK), a cancelled context as INTERNAL "request cancelled".
type Error struct {
	Code      Code
	Message   string
	Retryable bool
	// Details is any JSON-encodable value (optional).
	Details any
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf returns an Error with code and a formatted message; TIMEOUT is
// retryable.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: code == CodeTimeout}
}
