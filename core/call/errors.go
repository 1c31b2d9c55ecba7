package call

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Error codes (docs/spec/call.md §3).
const (
	CodeNotFound             = "NOT_FOUND"
	CodeForbidden            = "FORBIDDEN"
	CodeInvalidInput         = "INVALID_INPUT"
	CodeInvalidOperationType = "INVALID_OPERATION_TYPE"
	CodeTimeout              = "TIMEOUT"
	CodeInternal             = "INTERNAL"
)

// Error is a call error as it travels in call.error.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	Details   any    `json:"details,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an Error with the retryable flag of its code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: code == CodeTimeout}
}

// NotFound is the error for an operation the caller may not know about.
func NotFound(name string) *Error { return Errorf(CodeNotFound, "operation not found: %s", name) }

// ErrConnectionClosed fails pending calls when their connection closes.
var ErrConnectionClosed = &Error{Code: CodeInternal, Message: "connection closed"}

// AsError converts any error to an *Error: call errors pass through,
// context deadline becomes TIMEOUT, anything else INTERNAL with a short
// text that leaks nothing of the handler's internals.
func AsError(err error) *Error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// fromPayload reads a call.error payload, mapping unknown codes to
// INTERNAL (not retryable), as clients must.
func fromPayload(raw json.RawMessage) *Error {
	var p ErrorPayload
	if err := json.Unmarshal(raw, &p); err != nil {
		return &Error{Code: CodeInternal, Message: "malformed error payload"}
	}
	switch p.Code {
	case CodeNotFound, CodeForbidden, CodeInvalidInput, CodeInvalidOperationType, CodeTimeout, CodeInternal:
	default:
		d := map[string]any{"original_code": p.Code}
		if p.Details != nil {
			d["details"] = p.Details
		}
		return &Error{Code: CodeInternal, Message: p.Message, Retryable: false, Details: d}
	}
	return &Error{Code: p.Code, Message: p.Message, Retryable: p.Retryable, Details: p.Details}
}
