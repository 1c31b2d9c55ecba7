package provider

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// mergeChunks feeds the JSON events to a merger.
func mergeChunks(t *testing.T, events ...string) (*merger, []string) {
	t.Helper()
	m := newMerger()
	var deltas []string
	on := func(s string) { deltas = append(deltas, s) }
	for _, e := range events {
		if err := m.addChunk([]byte(e), on); err != nil {
			t.Fatalf("event %s: %v", e, err)
		}
	}
	m.flush(on)
	return m, deltas
}

func TestMergeToolCalls(t *testing.T) {
	tests := []struct {
		name   string
		events []string
		want   []ToolCall
	}{
		{
			name: "OpenAI: two calls, arguments in pieces",
			events: []string{
				`{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get","arguments":""}}]}}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\": 1}"}}]}}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"put","arguments":""}}]}}]}`,
				`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}}]}`,
				`{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
			},
			want: []ToolCall{{"call_a", "get", `{"city": 1}`}, {"call_b", "put", `{}`}},
		},
		{
			name: "interleaved indexes",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\":"}},{"index":1,"id":"b","function":{"name":"g","arguments":"{\"y\":"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"arguments":"2}"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{"x":1}`}, {"b", "g", `{"y":2}`}},
		},
		{
			name: "id and name repeated on every delta",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":":1}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{"x":1}`}},
		},
		{
			name: "no index, one call",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{"x":1}`}},
		},
		{
			name: "no index, two calls",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{"x":1}`}, {"b", "g", `{}`}},
		},
		{
			name: "every parallel call at index 0",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\":"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"b","function":{"name":"f","arguments":"{\"x\":"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"2}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{"x":1}`}, {"b", "f", `{"x":2}`}},
		},
		{
			name: "sparse and negative indexes",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":-1,"id":"a","function":{"name":"f","arguments":"{"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":-1,"function":{"arguments":"}"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":5,"id":"b","function":{"name":"g","arguments":"[]"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{}`}, {"b", "g", `[]`}},
		},
		{
			name: "id-less calls told apart by name",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{\"x\":1}"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"g","arguments":"{\"y\":2}"}}]}}]}`,
			},
			want: []ToolCall{{"call_0", "f", `{"x":1}`}, {"call_1", "g", `{"y":2}`}},
		},
		{
			name: "same index twice in the first chunk",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f"}},{"index":0,"function":{"arguments":"{\"p\""}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":\".\"}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{"p":"."}`}},
		},
		{
			name: "id arrives after the first delta",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"{"}}]}}]}`,
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"arguments":"}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{}`}},
		},
		{
			name: "arguments sent as a JSON object",
			events: []string{
				`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":{"x": 1}}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{"x": 1}`}},
		},
		{
			name: "other choices ignored",
			events: []string{
				`{"choices":[{"index":1,"delta":{"tool_calls":[{"index":0,"id":"z","function":{"name":"zz","arguments":"{}"}}]}},{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}`,
			},
			want: []ToolCall{{"a", "f", `{}`}},
		},
		{
			name: "non-streamed message without indexes or ids",
			events: []string{
				`{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}},{"type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}]}`,
			},
			want: []ToolCall{{"call_0", "f", `{}`}, {"call_1", "f", `{"a":1}`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := mergeChunks(t, tt.events...)
			got := m.message().ToolCalls
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("tool calls\n got %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestMergeTextUsageFinish(t *testing.T) {
	m, deltas := mergeChunks(t,
		`{"id":"x","object":"chat.completion.chunk","model":"m-1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}`,
		`{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}`,
		`{"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":null}],"usage":null}`,
		`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`,
		`{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0}}}`,
	)
	res := m.response()
	if !slices.Equal(deltas, []string{"Hi", " there"}) {
		t.Fatalf("deltas %q", deltas)
	}
	want := Response{
		Message:      Message{Role: RoleAssistant, Content: "Hi there"},
		FinishReason: "stop",
		Usage:        Usage{PromptTokens: 9, CompletionTokens: 2, TotalTokens: 11},
		Model:        "m-1",
	}
	if !reflect.DeepEqual(res, want) {
		t.Fatalf("response\n got %#v\nwant %#v", res, want)
	}
}

// TestMergeSplitCharacters: a character cut between two deltas reaches
// the callback whole, however the server cut it.
func TestMergeSplitCharacters(t *testing.T) {
	tests := []struct {
		name   string
		events []string
		deltas []string
	}{
		{
			name: "raw UTF-8 bytes",
			events: []string{
				"{\"choices\":[{\"delta\":{\"content\":\"caf\xc3\"}}]}",
				"{\"choices\":[{\"delta\":{\"content\":\"\xa9!\"}}]}",
			},
			deltas: []string{"caf", "é!"},
		},
		{
			name: "four-byte character in three pieces",
			events: []string{
				"{\"choices\":[{\"delta\":{\"content\":\"a\xf0\x9f\"}}]}",
				"{\"choices\":[{\"delta\":{\"content\":\"\x98\"}}]}",
				"{\"choices\":[{\"delta\":{\"content\":\"\x80b\"}}]}",
			},
			deltas: []string{"a", "😀b"},
		},
		{
			name: "surrogate pair escapes",
			events: []string{
				`{"choices":[{"delta":{"content":"ok \ud83d"}}]}`,
				`{"choices":[{"delta":{"content":"\ude00."}}]}`,
			},
			deltas: []string{"ok ", "😀."},
		},
		{
			name: "lone surrogate at the end",
			events: []string{
				`{"choices":[{"delta":{"content":"x\ud83d"}}]}`,
			},
			deltas: []string{"x", "\ufffd"},
		},
		{
			name: "incomplete bytes at the end are kept",
			events: []string{
				"{\"choices\":[{\"delta\":{\"content\":\"x\xc3\"}}]}",
			},
			deltas: []string{"x", "\xc3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, deltas := mergeChunks(t, tt.events...)
			if !slices.Equal(deltas, tt.deltas) {
				t.Fatalf("deltas %q, want %q", deltas, tt.deltas)
			}
			if got, want := m.message().Content, strings.Join(tt.deltas, ""); got != want {
				t.Fatalf("content %q, want %q", got, want)
			}
		})
	}

	// In arguments, the pieces are joined before repair.
	m, _ := mergeChunks(t,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"s\":\"\ud83d"}}]}}]}`,
		"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\ude00 \xc3\"}}]}}]}",
		"{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\xa9\\\"}\"}}]}}]}",
	)
	if got, want := m.message().ToolCalls[0].Arguments, `{"s":"😀 é"}`; got != want {
		t.Fatalf("arguments %q, want %q", got, want)
	}
}

func TestMergeErrorEvent(t *testing.T) {
	m := newMerger()
	err := m.addChunk([]byte(`{"error":{"message":"model overloaded","type":"server_error"}}`), nil)
	if err == nil || !strings.Contains(err.Error(), "model overloaded") {
		t.Fatalf("error %v, want the provider's message", err)
	}
}

func TestUnquote(t *testing.T) {
	for _, s := range []string{
		"", "plain", "é😀", "a\"b\\c/d\b\f\n\r\t", "\u0000\u001f", "\u2028", "<>&",
	} {
		b, _ := json.Marshal(s)
		got, err := unquote(b)
		if err != nil || got != s {
			t.Errorf("unquote(%s) = %q, %v; want %q", b, got, err, s)
		}
	}
	for in, want := range map[string]string{
		`"\u00e9"`:       "é",
		`"\ud83d\ude00"`: "😀",
		`"\/"`:           "/",
		"\"\xff\"":       "\xff",
	} {
		if got, err := unquote([]byte(in)); err != nil || got != want {
			t.Errorf("unquote(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`"\x"`, `"\u12"`, `"\`, `x`, `"\uzzzz"`} {
		if _, err := unquote([]byte(in)); err == nil {
			t.Errorf("unquote(%s): no error", in)
		}
	}
}

func TestJoinSurrogates(t *testing.T) {
	hi := string(appendSurrogate(nil, 0xd83d))
	lo := string(appendSurrogate(nil, 0xde00))
	for in, want := range map[string]string{
		"plain":          "plain",
		hi + lo:          "😀",
		"a" + hi + "b":   "a\ufffdb",
		lo + hi:          "\ufffd\ufffd",
		hi + hi + lo:     "\ufffd😀",
		"\xed\x9f\xbf":   "\xed\x9f\xbf", // U+D7FF, not a surrogate
		"\xed\xa0":       "\xed\xa0",
		"é" + hi + lo:    "é😀",
		"\xff" + hi + lo: "\xff😀",
	} {
		if got := joinSurrogates(in); got != want {
			t.Errorf("joinSurrogates(%q) = %q, want %q", in, got, want)
		}
	}
}
