package provider

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// readAllEvents reads every event of in.
func readAllEvents(r io.Reader, maxEvent int) ([]string, error) {
	sr := newSSEReader(r, maxEvent)
	var out []string
	for {
		d, err := sr.next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(d))
	}
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"space after colon", "data: a\n\n", []string{"a"}},
		{"no space after colon", "data:a\n\n", []string{"a"}},
		{"only one space is dropped", "data:  a\n\n", []string{" a"}},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"a", "b"}},
		{"CR", "data: a\rdata: b\r\r", []string{"a\nb"}},
		{"multi-line data joined with LF", "data: a\ndata:b\ndata\n\n", []string{"a\nb\n"}},
		{"comments and other fields ignored", ": keep-alive\nevent: chunk\nid: 7\nretry: 10\nfoo: bar\ndata: a\n\n", []string{"a"}},
		{"field without colon", "data\n\n", []string{""}},
		{"blank lines without data dispatch nothing", "\n\n\r\n: x\n\ndata: a\n\n", []string{"a"}},
		{"event cut at end of stream", "data: a", []string{"a"}},
		{"no blank line at end of stream", "data: a\ndata: [DONE]\n", []string{"a\n[DONE]"}},
		{"byte-order mark", "\xef\xbb\xbfdata: a\n\n", []string{"a"}},
		{"field name must be exact", "data : a\nDATA: b\ndat: c\n\n", nil},
		{"two events", "data: {\"x\":1}\n\ndata: [DONE]\n\n", []string{`{"x":1}`, "[DONE]"}},
		{"colon in value", "data: a:b: c\n\n", []string{"a:b: c"}},
		{"empty stream", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range []io.Reader{strings.NewReader(tt.in), iotest.OneByteReader(strings.NewReader(tt.in))} {
				got, err := readAllEvents(r, 1024)
				if err != nil {
					t.Fatalf("%q: %v", tt.in, err)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("%q: events %q, want %q", tt.in, got, tt.want)
				}
			}
		})
	}
}

func TestSSEReaderBounds(t *testing.T) {
	const max = 16
	ok := "data: " + strings.Repeat("x", max) + "\n\n"
	if got, err := readAllEvents(strings.NewReader(ok), max); err != nil || len(got) != 1 {
		t.Fatalf("event of exactly %d bytes: %q, %v", max, got, err)
	}
	for name, in := range map[string]string{
		"one line":            "data: " + strings.Repeat("x", max+1) + "\n\n",
		"lines together":      "data: " + strings.Repeat("x", 10) + "\ndata: " + strings.Repeat("x", 10) + "\n\n",
		"long comment":        ":" + strings.Repeat("x", max+lineSlack+1) + "\n",
		"long line never cut": "data: " + strings.Repeat("x", 10*max),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := readAllEvents(strings.NewReader(in), max)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestBoundedReader(t *testing.T) {
	b, err := io.ReadAll(&boundedReader{r: strings.NewReader("0123456789"), max: 10})
	if err != nil || string(b) != "0123456789" {
		t.Fatalf("at the bound: %q, %v", b, err)
	}
	br := &boundedReader{r: strings.NewReader("0123456789a"), max: 10}
	_, err = io.ReadAll(br)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("past the bound: %v, want ErrTooLarge", err)
	}
	if br.n != 10 {
		t.Fatalf("counted %d bytes, want 10", br.n)
	}
	if _, err := io.ReadAll(&boundedReader{r: bytes.NewReader(nil), max: 0}); err != nil {
		t.Fatalf("empty: %v", err)
	}
}
