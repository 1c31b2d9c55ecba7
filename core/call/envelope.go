package call

import (
	"encoding/json"
	"errors"
	"fmt"

	"alknet.dev/alknet/core/auth"
)

// Event types: exactly these five (spec/call.md §2).
const (
	EventRequested = "call.requested"
	EventResponded = "call.responded"
	EventCompleted = "call.completed"
	EventAborted   = "call.aborted"
	EventError     = "call.error"
)

// Envelope is one frame's body.
type Envelope struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

// ErrMalformed is a frame body that is not an envelope.
var ErrMalformed = errors.New("call: malformed envelope")

// DecodeEnvelope parses a frame body. type, id and payload are all
// required; unknown keys are ignored.
func DecodeEnvelope(b []byte) (Envelope, error) {
	var raw struct {
		Type    *string         `json:"type"`
		ID      *string         `json:"id"`
		Payload json.RawMessage `json:"payload"`
	}
	// json.Unmarshal (unlike a Decoder) rejects trailing data by itself and
	// allocates less: this runs for every frame.
	if err := json.Unmarshal(b, &raw); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if raw.Type == nil || raw.ID == nil || raw.Payload == nil {
		return Envelope{}, fmt.Errorf("%w: type, id and payload are required", ErrMalformed)
	}
	return Envelope{Type: *raw.Type, ID: *raw.ID, Payload: raw.Payload}, nil
}

// Encode serialises an envelope with payload p (marshalled unless it is
// already json.RawMessage).
func Encode(typ, id string, p any) ([]byte, error) {
	var raw json.RawMessage
	switch v := p.(type) {
	case json.RawMessage:
		raw = v
	default:
		b, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encode %s payload: %w", typ, err)
		}
		raw = b
	}
	if raw == nil {
		raw = json.RawMessage("null")
	}
	return json.Marshal(Envelope{Type: typ, ID: id, Payload: raw})
}

// RequestPayload is the payload of call.requested.
type RequestPayload struct {
	OperationID  string          `json:"operationId"`
	Input        json.RawMessage `json:"input"`
	AuthToken    string          `json:"auth_token,omitempty"`
	ForwardedFor *auth.Identity  `json:"forwarded_for,omitempty"`
}

// RespondedPayload is the payload of call.responded.
type RespondedPayload struct {
	Output json.RawMessage `json:"output"`
}

// ErrorPayload is the payload of call.error.
type ErrorPayload struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	Details   any    `json:"details,omitempty"`
}

// empty is the payload of call.completed and call.aborted.
var empty = json.RawMessage("{}")
