package call

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"alknet.dev/alknet/core/auth"
)

// Event types: exactly these five (docs/spec/call.md §2).
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
//
// It walks the tokens of the one object itself (jsontext, see decodeJSON)
// rather than unmarshalling into a struct: this runs for every frame, and
// the three keys need no reflection.
func DecodeEnvelope(b []byte) (Envelope, error) {
	ed := envDecoders.Get().(*envDecoder)
	defer ed.release()
	ed.buf = *bytes.NewBuffer(b)
	ed.dec.Reset(&ed.buf, decodeOptions)
	env, err := ed.decode()
	if err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return env, nil
}

// envDecoder is a reusable decoder of envelopes; a *bytes.Buffer input is
// parsed in place.
type envDecoder struct {
	buf bytes.Buffer
	dec jsontext.Decoder
}

var envDecoders = sync.Pool{New: func() any { return new(envDecoder) }}

func (ed *envDecoder) release() {
	ed.buf = bytes.Buffer{}
	ed.dec.Reset(&ed.buf)
	envDecoders.Put(ed)
}

// eventType returns the type token as one of the constants when it is
// one (no allocation for the common case).
func eventType(v jsontext.Token) string {
	switch v.String() {
	case EventRequested:
		return EventRequested
	case EventResponded:
		return EventResponded
	case EventCompleted:
		return EventCompleted
	case EventAborted:
		return EventAborted
	case EventError:
		return EventError
	}
	return v.String()
}

var errRequired = errors.New("type, id and payload are required")

func (ed *envDecoder) decode() (Envelope, error) {
	d := &ed.dec
	tok, err := d.ReadToken()
	if err != nil {
		return Envelope{}, err
	}
	if tok.Kind() != '{' {
		return Envelope{}, fmt.Errorf("a frame is a JSON object, got %v", tok.Kind())
	}
	var env Envelope
	var haveType, haveID bool
	for {
		name, err := d.ReadToken()
		if err != nil {
			return Envelope{}, err
		}
		if name.Kind() == '}' {
			break
		}
		// A token is valid until the next read: classify the name first.
		field := 0
		switch name.String() {
		case "type":
			field = 1
		case "id":
			field = 2
		case "payload":
			field = 3
		}
		switch field {
		case 1, 2:
			v, err := d.ReadToken()
			if err != nil {
				return Envelope{}, err
			}
			switch v.Kind() {
			case 'n': // null counts as missing
				continue
			case '"':
			default:
				return Envelope{}, errors.New("type and id must be strings")
			}
			if field == 1 {
				env.Type, haveType = eventType(v), true
			} else {
				env.ID, haveID = v.String(), true
			}
		case 3:
			v, err := d.ReadValue()
			if err != nil {
				return Envelope{}, err
			}
			env.Payload = bytes.Clone(v)
		default:
			if err := d.SkipValue(); err != nil {
				return Envelope{}, err
			}
		}
	}
	if _, err := d.ReadToken(); err != io.EOF {
		if err == nil {
			err = errors.New("data after the envelope")
		}
		return Envelope{}, err
	}
	if !haveType || !haveID || env.Payload == nil {
		return Envelope{}, errRequired
	}
	return env, nil
}

// decodeJSON is the decoder of every frame and of the payloads read on the
// hot path: encoding/json/v2 (the standard library's, through its mirror
// module until Go 1.27 makes it the default). It reads a document in one
// pass where encoding/json validates it first and then decodes it — and
// again for each nested json.RawMessage — which made JSON the largest
// Alknet-side cost of a call. Names match exactly (docs/spec/call.md: field
// names are exact); a repeated name keeps the last value, as encoding/json
// did. Invalid UTF-8 makes a frame malformed: answers echo request bytes
// (ids, inputs), and an answer must be valid JSON.
func decodeJSON(b []byte, v any) error {
	return jsonv2.Unmarshal(b, v, decodeOptions)
}

var decodeOptions = jsonv2.JoinOptions(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(false))

// Encode serialises an envelope with payload p (marshalled unless it is
// already json.RawMessage).
func Encode(typ, id string, p any) ([]byte, error) {
	return appendEnvelope(nil, typ, id, p)
}

// appendEnvelope appends the envelope {"type","id","payload"} to dst.
//
// Written by hand rather than as json.Marshal(Envelope{...}) because it runs
// for every frame: Marshal would validate and compact the payload (and
// inside it the handler's output) once per nesting level. Here a raw payload
// or output is checked once with json.Valid and copied as it is; everything
// else still goes through encoding/json.
func appendEnvelope(dst []byte, typ, id string, p any) ([]byte, error) {
	dst = appendEnvelopeStart(dst, typ, id)
	var err error
	switch v := p.(type) {
	case json.RawMessage:
		dst, err = appendRaw(dst, v)
	case RespondedPayload:
		dst = append(dst, `{"output":`...)
		dst, err = appendRaw(dst, v.Output)
		dst = append(dst, '}')
	case requestPayload:
		dst, err = appendRequest(dst, v)
	default:
		var b []byte
		if b, err = json.Marshal(p); err == nil {
			dst = append(dst, b...)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", typ, err)
	}
	return append(dst, '}'), nil
}

// appendEnvelopeStart appends the envelope up to its payload's value.
func appendEnvelopeStart(dst []byte, typ, id string) []byte {
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, typ)
	dst = append(dst, `,"id":`...)
	dst = appendJSONString(dst, id)
	return append(dst, `,"payload":`...)
}

// appendRequest appends a call.requested payload; a forwarded_for
// identity (rare) goes through encoding/json.
func appendRequest(dst []byte, p requestPayload) ([]byte, error) {
	dst = append(dst, `{"operationId":`...)
	dst = appendJSONString(dst, p.OperationID)
	dst = append(dst, `,"input":`...)
	dst, err := appendRaw(dst, p.Input)
	if err != nil {
		return nil, err
	}
	if p.AuthToken != "" {
		dst = append(dst, `,"auth_token":`...)
		dst = appendJSONString(dst, p.AuthToken)
	}
	if p.ForwardedFor != nil {
		b, err := json.Marshal(p.ForwardedFor)
		if err != nil {
			return nil, err
		}
		dst = append(dst, `,"forwarded_for":`...)
		dst = append(dst, b...)
	}
	if p.Subscribe != nil {
		dst = append(dst, `,"subscribe":`...)
		dst = strconv.AppendBool(dst, *p.Subscribe)
	}
	return append(dst, '}'), nil
}

// appendRaw appends a JSON value given as bytes (nil is null) after
// checking that it is one valid JSON value.
func appendRaw(dst []byte, v json.RawMessage) ([]byte, error) {
	if v == nil {
		return append(dst, "null"...), nil
	}
	if !json.Valid(v) {
		return nil, errors.New("value is not valid JSON")
	}
	return append(dst, v...), nil
}

// appendJSONString appends s as a JSON string. Event types and request ids
// (UUIDs) are plain ASCII and are copied between quotes; anything else is
// escaped by encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
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
