package pkarr

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

func TestZBase32Vectors(t *testing.T) {
	f, err := os.Open("testdata/zbase32.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		h, enc, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		raw := mustHex(t, h)
		if got := EncodeZBase32(raw); got != enc {
			t.Errorf("EncodeZBase32(%s) = %q, want %q", h, got, enc)
		}
		for _, s := range []string{enc, strings.ToUpper(enc)} {
			got, err := DecodeZBase32(s)
			if err != nil {
				t.Errorf("DecodeZBase32(%q): %v", s, err)
			} else if !bytes.Equal(got, raw) {
				t.Errorf("DecodeZBase32(%q) = %x, want %s", s, got, h)
			}
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Fatalf("read only %d vectors", n)
	}
}

func TestZBase32RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 70; n++ {
		for range 20 {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.UintN(256))
			}
			s := EncodeZBase32(b)
			if want := (n*8 + 4) / 5; len(s) != want {
				t.Fatalf("len(EncodeZBase32(%d bytes)) = %d, want %d", n, len(s), want)
			}
			got, err := DecodeZBase32(s)
			if err != nil {
				t.Fatalf("DecodeZBase32(%q): %v", s, err)
			}
			if !bytes.Equal(got, b) {
				t.Fatalf("round trip of %x gave %x", b, got)
			}
		}
	}
	if got, err := DecodeZBase32(""); err != nil || len(got) != 0 {
		t.Errorf("DecodeZBase32(\"\") = %x, %v", got, err)
	}
}

func TestZBase32KeyLength(t *testing.T) {
	key := "yg4gxe7z1r7mr6orids9fh95y7gxhdsxjqi6nngsxxtakqaxr5no"
	b, err := DecodeZBase32(key)
	if err != nil || len(b) != 32 {
		t.Fatalf("DecodeZBase32(key) = %d bytes, %v; want 32 bytes", len(b), err)
	}
	// The last character of a key carries one data bit and four zero bits;
	// 'b' (00001) sets a padding bit.
	if _, err := DecodeZBase32(key[:51] + "b"); err == nil || !strings.Contains(err.Error(), "non-zero padding bits") {
		t.Errorf("non-canonical key: error = %v", err)
	}
	// 'y' (00000) clears the data bit: another key, still 32 bytes.
	if b, err := DecodeZBase32(key[:51] + "y"); err != nil || len(b) != 32 {
		t.Errorf("key ending in y: %d bytes, %v", len(b), err)
	}
}

func TestZBase32Invalid(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ybndr0", "invalid character \"0\" at offset 5"},
		{"ybndrl", "invalid character \"l\""},
		{"ybndrv", "invalid character \"v\""},
		{"ybndr2", "invalid character \"2\""},
		{"yb-dr", "invalid character \"-\" at offset 2"},
		{"yb dr", "invalid character \" \""},
		{"ybnd=", "invalid character \"=\""},
		{"yb\u00fcd", "invalid character \"\\xc3\" at offset 2"},
		{"y", "has 1 characters, which encode no whole number of bytes"},
		{"yyy", "has 3 characters"},
		{"yyyyyy", "has 6 characters"},
		{"yb", "non-zero padding bits"},
		{"yn", "non-zero padding bits"},
	}
	for _, tt := range tests {
		got, err := DecodeZBase32(tt.in)
		if err == nil {
			t.Errorf("DecodeZBase32(%q) = %x, want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("DecodeZBase32(%q) error %q does not contain %q", tt.in, err, tt.want)
		}
	}
}

// TestZBase32Canonical checks that every accepted string of up to three
// characters is the encoding of what it decodes to, up to case.
func TestZBase32Canonical(t *testing.T) {
	alphabet := zbase32Alphabet + strings.ToUpper(zbase32Alphabet)
	var walk func(prefix string)
	walk = func(prefix string) {
		if b, err := DecodeZBase32(prefix); err == nil {
			if enc := EncodeZBase32(b); enc != strings.ToLower(prefix) {
				t.Fatalf("DecodeZBase32(%q) = %s, which encodes as %q", prefix, hex.EncodeToString(b), enc)
			}
		}
		if len(prefix) == 3 {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			walk(prefix + alphabet[i:i+1])
		}
	}
	walk("")
}
