package call

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFrameRoundTripOneAndMany(t *testing.T) {
	var buf bytes.Buffer
	bodies := []string{`{"a":1}`, `{"type":"x","id":"1","payload":{}}`, `"s"`}
	for _, b := range bodies {
		if err := WriteFrame(&buf, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range bodies {
		got, err := ReadFrame(&buf)
		if err != nil || string(got) != want {
			t.Fatalf("got %q %v, want %q", got, err, want)
		}
	}
	if _, err := ReadFrame(&buf); !errors.Is(err, io.EOF) {
		t.Fatalf("after last frame: %v", err)
	}
}

func TestFrame64KiBPayload(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 64<<10)
	var buf bytes.Buffer
	_ = WriteFrame(&buf, body)
	if binary.BigEndian.Uint32(buf.Bytes()[:4]) != 64<<10 {
		t.Fatal("length prefix is not the body length, big-endian")
	}
	got, err := ReadFrame(&buf)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("64 KiB: %v", err)
	}
}

func TestFrameEOFCases(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty input":     {},
		"2-byte prefix":   {0, 0},
		"truncated body":  {0, 0, 0, 10, '{', '}'},
		"prefix, no body": {0, 0, 0, 1},
	} {
		if _, err := ReadFrame(bytes.NewReader(in)); !errors.Is(err, io.EOF) {
			t.Errorf("%s: %v, want io.EOF (stream closed)", name, err)
		}
	}
}

func TestFrameLengthZeroAndTooLarge(t *testing.T) {
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 0})); !errors.Is(err, ErrEmptyFrame) {
		t.Fatalf("length 0: %v", err)
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrame+1)
	if _, err := ReadFrame(bytes.NewReader(hdr[:])); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("64 MiB + 1: %v", err)
	}
	if err := WriteFrame(io.Discard, make([]byte, MaxFrame+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("writer accepted an over-size body: %v", err)
	}
	if err := WriteFrame(io.Discard, nil); !errors.Is(err, ErrEmptyFrame) {
		t.Fatalf("writer accepted an empty body: %v", err)
	}
}

func TestFrameExactly64MiBAccepted(t *testing.T) {
	body := make([]byte, MaxFrame)
	var buf bytes.Buffer
	if err := WriteFrame(&buf, body); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFrame(&buf)
	if err != nil || len(got) != MaxFrame {
		t.Fatalf("exactly 64 MiB: %d %v", len(got), err)
	}
}

func TestFrameLeavesFollowingBytes(t *testing.T) {
	var buf bytes.Buffer
	_ = WriteFrame(&buf, []byte("one"))
	buf.WriteString("TRAILING")
	if _, err := ReadFrame(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "TRAILING" {
		t.Fatalf("reader consumed %q too much", "TRAILING"[:8-buf.Len()])
	}
}

func TestEnvelopeDecoding(t *testing.T) {
	e, err := DecodeEnvelope([]byte(`{"payload":{"x":1},"extra":true,"id":"7","type":"call.responded"}`))
	if err != nil || e.Type != EventResponded || e.ID != "7" || string(e.Payload) != `{"x":1}` {
		t.Fatalf("%+v %v", e, err)
	}
	for _, bad := range []string{`{"type":"a","id":"1"}`, `{"id":"1","payload":{}}`, `{"type":"a","payload":{}}`, `[1]`, `nope`, `{"type":"a","id":"1","payload":{}} x`} {
		if _, err := DecodeEnvelope([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestEventPayloadShapes(t *testing.T) {
	cases := map[string]struct {
		typ  string
		p    any
		want string
	}{
		"responded":       {EventResponded, RespondedPayload{Output: json.RawMessage(`{"a":1}`)}, `{"type":"call.responded","id":"i","payload":{"output":{"a":1}}}`},
		"error":           {EventError, Errorf(CodeForbidden, "authentication required"), `{"type":"call.error","id":"i","payload":{"code":"FORBIDDEN","message":"authentication required","retryable":false}}`},
		"error+details":   {EventError, &Error{Code: CodeInvalidInput, Message: "m", Details: []string{"d"}}, `{"type":"call.error","id":"i","payload":{"code":"INVALID_INPUT","message":"m","retryable":false,"details":["d"]}}`},
		"timeout":         {EventError, &Error{Code: CodeTimeout, Message: "deadline exceeded", Retryable: true}, `{"type":"call.error","id":"i","payload":{"code":"TIMEOUT","message":"deadline exceeded","retryable":true}}`},
		"completed":       {EventCompleted, empty, `{"type":"call.completed","id":"i","payload":{}}`},
		"aborted":         {EventAborted, empty, `{"type":"call.aborted","id":"i","payload":{}}`},
		"request minimal": {EventRequested, RequestPayload{OperationID: "/fs/put", Input: json.RawMessage(`1`)}, `{"type":"call.requested","id":"i","payload":{"operationId":"/fs/put","input":1}}`},
	}
	for name, c := range cases {
		b, err := Encode(c.typ, "i", c.p)
		if err != nil || string(b) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", name, b, c.want)
		}
	}
	// A responded payload without output reads as null.
	var r RespondedPayload
	_ = json.Unmarshal([]byte(`{}`), &r)
	if r.Output != nil {
		t.Fatal("missing output")
	}
	// Unknown codes read as INTERNAL, not retryable.
	e := fromPayload(json.RawMessage(`{"code":"QUOTA","message":"m","retryable":true}`))
	if e.Code != CodeInternal || e.Retryable || !strings.Contains(string(must(json.Marshal(e.Details))), "QUOTA") {
		t.Fatalf("unknown code: %+v", e)
	}
}

func must(b []byte, _ error) []byte { return b }

// FuzzFrameAndEnvelope: frame and envelope decoding never panic; a decoded
// envelope re-encodes and decodes to the same value.
func FuzzFrameAndEnvelope(f *testing.F) {
	var buf bytes.Buffer
	b, _ := Encode(EventRequested, "1", RequestPayload{OperationID: "/echo/say", Input: json.RawMessage(`{"x":1}`)})
	_ = WriteFrame(&buf, b)
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0, 0, 0, 5, 'n', 'u', 'l', 'l', ' '})
	f.Fuzz(func(t *testing.T, data []byte) {
		// The in-place reader the session uses yields the same frames as
		// ReadFrame.
		br := bufio.NewReaderSize(bytes.NewReader(data), 64)
		ref := bytes.NewReader(data)
		for range 8 {
			want, werr := ReadFrame(ref)
			got, skip, gerr := nextFrame(br, MaxFrame, nil)
			if (werr == nil) != (gerr == nil) || (werr != nil && errors.Is(werr, io.EOF) != errors.Is(gerr, io.EOF)) || !bytes.Equal(got, want) {
				t.Fatalf("nextFrame %q %v, ReadFrame %q %v", got, gerr, want, werr)
			}
			if gerr != nil {
				break
			}
			_, _ = br.Discard(skip)
		}
		r := bytes.NewReader(data)
		for range 8 {
			body, err := ReadFrame(r)
			if err != nil {
				return
			}
			if len(body) == 0 || len(body) > MaxFrame {
				t.Fatalf("accepted a %d-byte body", len(body))
			}
			env, err := DecodeEnvelope(body)
			if err != nil {
				continue
			}
			again, err := Encode(env.Type, env.ID, env.Payload)
			if err != nil {
				continue // payload is valid JSON per decoder; encoding may still reject odd numbers
			}
			env2, err := DecodeEnvelope(again)
			if err != nil || env2.Type != env.Type || env2.ID != env.ID {
				t.Fatalf("re-decode: %+v %v", env2, err)
			}
			// The typed answer encoder: a payload as an output comes back
			// byte for byte.
			bp := new([]byte)
			if frame, err := encodeAnswer(bp, env.ID, env.Payload); err == nil {
				ans, err := DecodeEnvelope(frame[4:])
				if err != nil {
					t.Fatalf("answer frame %q: %v", frame, err)
				}
				out, err := answer(ans, "x/y")
				if err != nil || !bytes.Equal(out, env.Payload) {
					t.Fatalf("answer of %q: %q %v", env.Payload, out, err)
				}
			}
			// The server's payload decoder, and the client's request
			// encoder on what it decoded.
			var p wireRequest
			if decodeJSON(env.Payload, &p) != nil || p.OperationID == "" {
				continue
			}
			req, err := Encode(EventRequested, env.ID, requestPayload{RequestPayload: RequestPayload{
				OperationID: p.OperationID, Input: json.RawMessage(p.Input), AuthToken: p.AuthToken}, Subscribe: p.Subscribe})
			if err != nil {
				continue
			}
			env3, err := DecodeEnvelope(req)
			var p2 wireRequest
			if err != nil || decodeJSON(env3.Payload, &p2) != nil || p2.OperationID != p.OperationID || p2.AuthToken != p.AuthToken {
				t.Fatalf("request round trip: %q → %q: %v", env.Payload, req, err)
			}
		}
	})
}

// FuzzCheckLiterals: inputs come from anonymous callers; the scan never
// panics, and whatever it accepts is JSON whose number literals and
// nesting are within the bounds.
func FuzzCheckLiterals(f *testing.F) {
	f.Add([]byte(`{"count":3,"s":"x","a":[1,2.5e10,-0.0]}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]`))
	f.Add([]byte(strings.Repeat("9", 101)))
	f.Add([]byte(`{"a":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := checkLiterals(b); err != nil {
			return
		}
		if !json.Valid(b) && len(bytes.TrimSpace(b)) > 0 {
			t.Fatalf("accepted invalid JSON %q", b)
		}
		depth, max := 0, 0
		inString, escaped := false, false
		run := 0
		for _, c := range b {
			switch {
			case inString:
				switch {
				case escaped:
					escaped = false
				case c == '\\':
					escaped = true
				case c == '"':
					inString = false
				}
				continue
			case c == '"':
				inString = true
			case c == '[' || c == '{':
				depth++
				max = depth
			case c == ']' || c == '}':
				depth--
			}
			if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
				run++
				if run > MaxNumberLiteral {
					t.Fatalf("accepted a number literal over %d characters in %q", MaxNumberLiteral, b)
				}
			} else {
				run = 0
			}
		}
		if max > MaxInputDepth {
			t.Fatalf("accepted nesting of %d levels", max)
		}
	})
}
