package pkarr

import (
	"fmt"
	"strings"
)

// zbase32Alphabet is the z-base-32 alphabet: the character for each 5-bit
// value 0 … 31.
const zbase32Alphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"

// zbase32Values maps a lower-case character to its 5-bit value, and every
// other byte to -1.
var zbase32Values = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(zbase32Alphabet); i++ {
		t[zbase32Alphabet[i]] = int8(i)
	}
	return t
}()

// EncodeZBase32 returns the z-base-32 encoding of b: five bits per
// character, most-significant bit first, the last character padded with
// zero bits, and no padding characters. A 32-byte key gives 52 characters.
func EncodeZBase32(b []byte) string {
	var sb strings.Builder
	sb.Grow((len(b)*8 + 4) / 5)
	var acc uint32 // pending bits, right-aligned
	bits := 0      // number of pending bits in acc
	for _, c := range b {
		acc = acc<<8 | uint32(c)
		bits += 8
		for bits >= 5 {
			bits -= 5
			sb.WriteByte(zbase32Alphabet[(acc>>bits)&31])
		}
	}
	if bits > 0 {
		sb.WriteByte(zbase32Alphabet[(acc<<(5-bits))&31])
	}
	return sb.String()
}

// DecodeZBase32 decodes a z-base-32 string, upper- or lower-case, into the
// bytes it encodes. It accepts only what EncodeZBase32 can produce: it
// refuses characters outside the alphabet, a length that does not encode a
// whole number of bytes, and non-zero padding bits in the last character, so
// every byte string has exactly one accepted name (up to case). A 52-character
// key name decodes to exactly 32 bytes.
func DecodeZBase32(s string) ([]byte, error) {
	n := len(s) * 5 / 8
	out := make([]byte, 0, n)
	var acc uint32
	bits := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		v := zbase32Values[c]
		if v < 0 {
			return nil, fmt.Errorf("z-base-32: invalid character %q at offset %d in %q", s[i:i+1], i, s)
		}
		acc = acc<<5 | uint32(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			out = append(out, byte(acc>>bits))
		}
	}
	if (n*8+4)/5 != len(s) {
		return nil, fmt.Errorf("z-base-32: %q has %d characters, which encode no whole number of bytes",
			s, len(s))
	}
	if acc&(1<<bits-1) != 0 {
		return nil, fmt.Errorf("z-base-32: %q has non-zero padding bits in its last character", s)
	}
	return out, nil
}
