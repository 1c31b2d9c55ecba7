package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// chunk is one event of a streamed response ("chat.completion.chunk"), or
// a whole non-streamed response ("chat.completion", whose choices carry a
// message instead of a delta).
type chunk struct {
	Model   string          `json:"model"`
	Choices []choice        `json:"choices"`
	Usage   *Usage          `json:"usage"`
	Error   json.RawMessage `json:"error"`
}

type choice struct {
	Index        int     `json:"index"`
	Delta        delta   `json:"delta"`
	Message      *delta  `json:"message"`
	FinishReason *string `json:"finish_reason"`
}

type delta struct {
	Content   text            `json:"content"`
	ToolCalls []toolCallDelta `json:"tool_calls"`
}

type toolCallDelta struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Function struct {
		Name      string `json:"name"`
		Arguments text   `json:"arguments"`
	} `json:"function"`
}

// text is a JSON string decoded without the repairs of encoding/json,
// which would turn half a character into U+FFFD before the other half
// arrives in the next delta: invalid UTF-8 bytes are kept as they are,
// and an escaped UTF-16 surrogate without its partner (\ud83d, with
// \ude00 in the next delta) is kept in its 3-byte generalised UTF-8 form.
// joinSurrogates repairs the concatenation. null decodes as "", and a
// JSON object or array (sent for arguments by some servers) as its text.
type text string

func (t *text) UnmarshalJSON(b []byte) error {
	switch {
	case len(b) > 0 && b[0] == '"':
		s, err := unquote(b)
		if err != nil {
			return err
		}
		*t = text(s)
	case string(b) == "null":
		*t = ""
	default:
		*t = text(b)
	}
	return nil
}

// unquote decodes a JSON string literal, keeping invalid UTF-8 and lone
// surrogates (see text).
func unquote(b []byte) (string, error) {
	b = bytes.Trim(b, " \t\r\n")
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return "", errors.New("not a JSON string")
	}
	b = b[1 : len(b)-1]
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b), nil
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		if i+1 >= len(b) {
			return "", errors.New("JSON string ends in a backslash")
		}
		e := b[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b[i:])
			if !ok {
				return "", errors.New(`bad \u escape in a JSON string`)
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if r < 0xdc00 && i+6 <= len(b) && b[i] == '\\' && b[i+1] == 'u' {
					if r2, ok := hex4(b[i+2:]); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
						out = utf8.AppendRune(out, utf16.DecodeRune(r, r2))
						i += 6
						continue
					}
				}
				out = appendSurrogate(out, r)
				continue
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", fmt.Errorf("bad escape \\%c in a JSON string", e)
		}
	}
	return string(out), nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[:4]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(v), true
}

// appendSurrogate appends a UTF-16 surrogate in the 3-byte form UTF-8
// would give it if it allowed surrogates (0xED, 0xA0–0xBF, continuation).
func appendSurrogate(b []byte, r rune) []byte {
	return append(b, 0xe0|byte(r>>12), 0x80|byte(r>>6)&0x3f, 0x80|byte(r)&0x3f)
}

// surrogateAt reports whether s[i:] starts with an encoded surrogate, and
// which.
func surrogateAt(s string, i int) (rune, bool) {
	if i+3 > len(s) || s[i] != 0xed || s[i+1] < 0xa0 || s[i+1] > 0xbf || s[i+2]&0xc0 != 0x80 {
		return 0, false
	}
	return 0xd000 | rune(s[i+1]&0x3f)<<6 | rune(s[i+2]&0x3f), true
}

// joinSurrogates replaces each encoded high-low surrogate pair in s by the
// UTF-8 of the character it encodes, and each lone surrogate by U+FFFD
// (what encoding/json gives for one). Every other byte is kept.
func joinSurrogates(s string) string {
	if strings.IndexByte(s, 0xed) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, ok := surrogateAt(s, i)
		if !ok {
			b.WriteByte(s[i])
			i++
			continue
		}
		if r < 0xdc00 {
			if r2, ok := surrogateAt(s, i+3); ok && r2 >= 0xdc00 {
				b.WriteRune(utf16.DecodeRune(r, r2))
				i += 6
				continue
			}
		}
		b.WriteRune(utf8.RuneError)
		i += 3
	}
	return b.String()
}

// incompleteTail is how many bytes at the end of s may be the start of a
// character that the next delta completes: the leading bytes of a UTF-8
// sequence, or an encoded high surrogate.
func incompleteTail(s string) int {
	n := len(s)
	if n >= 3 {
		if r, ok := surrogateAt(s, n-3); ok && r < 0xdc00 {
			return 3
		}
	}
	for i := 1; i <= 3 && i <= n; i++ {
		c := s[n-i]
		switch {
		case c < 0x80:
			return 0
		case c < 0xc0:
			continue // continuation byte: look further back
		case c < 0xe0 && i < 2, c >= 0xe0 && c < 0xf0 && i < 3, c >= 0xf0 && c < 0xf8 && i < 4:
			return i
		default:
			return 0
		}
	}
	return 0
}

// streamError is an error event inside a 200 response.
type streamError struct{ msg string }

func (e *streamError) Error() string { return "error event in the stream: " + e.msg }

// merger builds the assistant message from a stream's chunks.
//
// Text deltas are appended and handed to the callback as they arrive,
// except that a character split between two deltas is held back until it
// is whole, so the callback always receives whole characters.
//
// Tool-call deltas are merged by index, with the rules for the variants of
// compatible servers listed in the package documentation (slot applies
// them).
type merger struct {
	content strings.Builder
	carry   string // start of a character split between text deltas
	calls   []*callAcc
	byIndex map[int]int    // provider index → its current call
	byID    map[string]int // id → call
	last    int            // call of the last tool-call delta; -1: none
	finish  string
	usage   Usage
	model   string
	events  int
}

type callAcc struct {
	id, name string
	args     strings.Builder
}

func newMerger() *merger {
	return &merger{byIndex: map[int]int{}, byID: map[string]int{}, last: -1}
}

// addChunk merges the JSON of one event.
func (m *merger) addChunk(data []byte, onDelta func(string)) error {
	m.events++
	var c chunk
	if err := json.Unmarshal(data, &c); err != nil {
		return fmt.Errorf("event %d is not a chat-completion chunk: %w", m.events, err)
	}
	if len(c.Error) > 0 && string(c.Error) != "null" {
		return &streamError{msg: providerMessage(c.Error)}
	}
	if c.Model != "" {
		m.model = c.Model
	}
	if c.Usage != nil {
		m.usage = *c.Usage
	}
	for i := range c.Choices {
		ch := &c.Choices[i]
		if ch.Index != 0 {
			continue // one completion is asked for; others are not ours
		}
		d := &ch.Delta
		if ch.Message != nil {
			// A whole message: its calls are in order, index or not.
			d = ch.Message
			for j := range d.ToolCalls {
				d.ToolCalls[j].Index = &j
			}
		}
		m.addDelta(d, onDelta)
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			m.finish = *ch.FinishReason
		}
	}
	return nil
}

func (m *merger) addDelta(d *delta, onDelta func(string)) {
	if d.Content != "" {
		m.addText(string(d.Content), onDelta)
	}
	for i := range d.ToolCalls {
		m.addToolCall(&d.ToolCalls[i])
	}
}

func (m *merger) addText(s string, onDelta func(string)) {
	s = m.carry + s
	n := incompleteTail(s)
	m.carry = s[len(s)-n:]
	m.emit(s[:len(s)-n], onDelta)
}

func (m *merger) emit(s string, onDelta func(string)) {
	if s == "" {
		return
	}
	s = joinSurrogates(s)
	m.content.WriteString(s)
	if onDelta != nil {
		onDelta(s)
	}
}

// flush emits text held back at the end of the stream.
func (m *merger) flush(onDelta func(string)) {
	c := m.carry
	m.carry = ""
	m.emit(c, onDelta)
}

func (m *merger) addToolCall(d *toolCallDelta) {
	k := m.slot(d)
	c := m.calls[k]
	if c.id == "" && d.ID != "" {
		c.id = d.ID
		m.byID[d.ID] = k
	}
	if c.name == "" {
		c.name = d.Function.Name
	}
	c.args.WriteString(string(d.Function.Arguments))
	m.last = k
}

// slot finds (or starts) the call a delta belongs to, by the rules of the
// package documentation.
func (m *merger) slot(d *toolCallDelta) int {
	if d.ID != "" {
		if k, ok := m.byID[d.ID]; ok {
			return k
		}
	}
	cur := m.last
	if d.Index != nil {
		cur = -1
		if k, ok := m.byIndex[*d.Index]; ok {
			cur = k
		}
	}
	if cur >= 0 {
		c := m.calls[cur]
		switch {
		case d.ID != "" && c.id != "":
			// a new id where a call with another id is open: a new call
		case d.ID == "" && d.Function.Name != "" && c.name != "" && d.Function.Name != c.name:
			// another tool's name without an id: a new call
		default:
			return cur
		}
	}
	m.calls = append(m.calls, &callAcc{})
	k := len(m.calls) - 1
	if d.Index != nil {
		m.byIndex[*d.Index] = k
	}
	return k
}

// message returns the assistant message merged so far (text held back
// included).
func (m *merger) message() Message {
	msg := Message{Role: RoleAssistant, Content: m.content.String() + joinSurrogates(m.carry)}
	for i, c := range m.calls {
		id := c.id
		if id == "" {
			id = "call_" + strconv.Itoa(i)
		}
		msg.ToolCalls = append(msg.ToolCalls, ToolCall{ID: id, Name: c.name, Arguments: joinSurrogates(c.args.String())})
	}
	return msg
}

func (m *merger) response() Response {
	return Response{Message: m.message(), FinishReason: m.finish, Usage: m.usage, Model: m.model}
}

// doneData is the data of the event that ends an OpenAI stream.
var doneData = []byte("[DONE]")

// readSSE merges an event stream until [DONE] or its end. A stream that
// ends without [DONE] is complete when a finish reason came; otherwise it
// was cut short.
func (m *merger) readSSE(r io.Reader, maxEvent int, onDelta func(string)) error {
	sr := newSSEReader(r, maxEvent)
	for {
		data, err := sr.next()
		if err == io.EOF {
			if m.finish == "" {
				return errors.New("the stream ended before the response was complete (no finish_reason, no [DONE])")
			}
			m.flush(onDelta)
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the event stream: %w", err)
		}
		data = bytes.TrimSpace(data)
		if bytes.Equal(data, doneData) {
			m.flush(onDelta)
			return nil
		}
		if len(data) == 0 {
			continue
		}
		if err := m.addChunk(data, onDelta); err != nil {
			return err
		}
	}
}

// readJSON merges a non-streamed response, which some servers send
// although the request asked for a stream.
func (m *merger) readJSON(r io.Reader, onDelta func(string)) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("reading the response: %w", err)
	}
	if err := m.addChunk(data, onDelta); err != nil {
		return err
	}
	m.flush(onDelta)
	return nil
}

// providerMessage extracts the message of an error value: an object with a
// "message" (OpenAI's {"error":{"message":…}}), or a string.
func providerMessage(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Message string `json:"message"`
		Code    any    `json:"code"`
		Type    string `json:"type"`
	}
	if json.Unmarshal(raw, &o) == nil {
		switch {
		case o.Message != "":
			return o.Message
		case o.Code != nil:
			return fmt.Sprint(o.Code)
		case o.Type != "":
			return o.Type
		}
	}
	return string(raw)
}
