package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// FuzzSSEReader: any bytes are read without panic; no event is larger than
// the bound; and the whole parse path (events, JSON chunks, merging) takes
// the same bytes without panic.
func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{
		"data: a\n\n",
		"data:a\r\n\r\ndata: [DONE]\r\n\r\n",
		"data: a\rdata: b\r\r",
		": ping\nevent: x\nid: 1\nretry: 5\ndata\n\n",
		"\xef\xbb\xbfdata: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
		"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"x\"}}]}}]}\n\n" +
			"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"\\ud83d\"}}]}}]}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n",
		"data: {\"error\":{\"message\":\"x\"}}\n\n",
		"data: " + string(bytes.Repeat([]byte("x"), 300)) + "\n\n",
	} {
		f.Add([]byte(s))
	}
	const max = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		sr := newSSEReader(iotest.HalfReader(bytes.NewReader(in)), max)
		for n := 0; ; n++ {
			d, err := sr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("error that is not ErrTooLarge: %v", err)
				}
				break
			}
			if len(d) > max {
				t.Fatalf("event of %d bytes, bound %d", len(d), max)
			}
			if n > len(in) {
				t.Fatalf("%d events from %d bytes", n, len(in))
			}
		}
		m := newMerger()
		_ = m.readSSE(bytes.NewReader(in), max, func(string) {})
		_ = m.response()
	})
}

// FuzzMergeDeltas decodes the input as a sequence of tool-call deltas and
// merges it. Nothing panics; no byte of arguments is lost or duplicated;
// and when every delta has an index and each index keeps to one id and
// one name (how OpenAI streams), there is one call per index, in order of
// first appearance, whose arguments are the concatenation of its pieces.
// The same input, as a JSON chunk, must not panic either.
func FuzzMergeDeltas(f *testing.F) {
	f.Add([]byte{0x18, 0, 3, '{', '"', 'a', 0x01, 0, 2, '"', ':', 0x00, 0, 2, '1', '}'})
	f.Add([]byte{0x19, 0, 2, 0xc3, 0, 0x01, 0, 1, 0xa9})
	f.Add([]byte{0x1c, 0, 1, 'x', 0x1c, 1, 1, 'y', 0x04, 0, 1, 'z'})
	f.Add([]byte{0x18, 0, 1, 'a', 0x18, 1, 1, 'b', 0x00, 0, 1, 'c'})
	f.Add([]byte(`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{"}}]}}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		// Each delta is 3 bytes and a piece: flags (bits 0–1 index,
		// bit 2 no index, bit 3 id, bit 4 name), a variant selecting a
		// different id and name (bit 0), a length (mod 16), the piece.
		type step struct {
			index    int
			hasIndex bool
			id, name string
			piece    string
		}
		var steps []step
		for rest := in; len(rest) >= 3; {
			flags, variant, n := rest[0], rest[1], int(rest[2]%16)
			rest = rest[3:]
			n = min(n, len(rest))
			s := step{index: int(flags & 3), hasIndex: flags&4 == 0, piece: string(rest[:n])}
			rest = rest[n:]
			suffix := strconv.Itoa(s.index) + "_" + strconv.Itoa(int(variant&1))
			if flags&8 != 0 {
				s.id = "id" + suffix
			}
			if flags&16 != 0 {
				s.name = "fn" + suffix
			}
			steps = append(steps, s)
		}

		m := newMerger()
		total := 0
		for _, s := range steps {
			d := toolCallDelta{ID: s.id}
			if s.hasIndex {
				d.Index = &s.index
			}
			d.Function.Name = s.name
			d.Function.Arguments = text(s.piece)
			m.addToolCall(&d)
			total += len(s.piece)
		}
		got := 0
		for _, c := range m.calls {
			got += c.args.Len()
		}
		if got != total {
			t.Fatalf("merged %d bytes of arguments from %d", got, total)
		}
		msg := m.message()
		if len(msg.ToolCalls) != len(m.calls) {
			t.Fatalf("%d tool calls from %d merged", len(msg.ToolCalls), len(m.calls))
		}

		// The OpenAI shape: indexes everywhere, one id and name per index,
		// no id shared by two indexes.
		openAI := true
		ids, names, idIndex := map[int]string{}, map[int]string{}, map[string]int{}
		var order []int
		pieces := map[int]string{}
		for _, s := range steps {
			if !s.hasIndex {
				openAI = false
				break
			}
			if _, seen := pieces[s.index]; !seen {
				order = append(order, s.index)
			}
			pieces[s.index] += s.piece
			if s.id != "" {
				if ids[s.index] != "" && ids[s.index] != s.id {
					openAI = false
				}
				if i, ok := idIndex[s.id]; ok && i != s.index {
					openAI = false
				}
				ids[s.index], idIndex[s.id] = s.id, s.index
			}
			if s.name != "" {
				if names[s.index] != "" && names[s.index] != s.name {
					openAI = false
				}
				names[s.index] = s.name
			}
		}
		if !openAI {
			return
		}
		if len(m.calls) != len(order) {
			t.Fatalf("%d calls for %d indexes", len(m.calls), len(order))
		}
		for k, idx := range order {
			c := m.calls[k]
			if c.args.String() != pieces[idx] {
				t.Fatalf("index %d: arguments %q, want %q", idx, c.args.String(), pieces[idx])
			}
			if msg.ToolCalls[k].Arguments != joinSurrogates(pieces[idx]) {
				t.Fatalf("index %d: returned %q, want %q", idx, msg.ToolCalls[k].Arguments, joinSurrogates(pieces[idx]))
			}
			if c.id != ids[idx] || c.name != names[idx] {
				t.Fatalf("index %d: id %q name %q, want %q %q", idx, c.id, c.name, ids[idx], names[idx])
			}
		}

		// And the same bytes as an event.
		_ = newMerger().addChunk(in, func(string) {})
	})
}

// FuzzUnquote: nothing panics; on every JSON string that encoding/json
// decodes without substituting U+FFFD (no invalid UTF-8, no lone
// surrogate: what unquote keeps for a later delta to complete), unquote
// gives the same string.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{`"a"`, `"\u00e9"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\\\"\/\b\f\n\r\t"`, "\"\xc3\"", `"\u`, "\"\" "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := unquote(in)
		var want string
		if !bytes.HasPrefix(in, []byte(`"`)) || json.Unmarshal(in, &want) != nil || strings.ContainsRune(want, utf8.RuneError) {
			return
		}
		if err != nil || got != want {
			t.Fatalf("unquote(%q) = %q, %v; encoding/json gives %q", in, got, err, want)
		}
	})
}
