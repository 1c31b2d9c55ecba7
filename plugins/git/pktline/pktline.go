// Package pktline is git's pkt-line framing (git's pkt-line.c): four hex
// digits giving the length of the whole line, the digits included, then
// the payload. "0000" is a flush-pkt; "0001" (delim) and "0002" (response
// end) are protocol v2's special packets. The Git plugin reads request
// lines and writes ERR lines with it; git-remote-alknet frames protocol v2
// requests and responses for git's stateless-connect. Hand-written: it is
// forty lines, and no maintained Go module offers it without a git
// implementation around it.
package pktline

import (
	"errors"
	"fmt"
	"io"
)

const (
	// Max is git's LARGE_PACKET_MAX: the longest pkt-line, length digits
	// included.
	Max = 65520
	// DataMax is the longest payload.
	DataMax = Max - 4
)

// Kind is what Read read.
type Kind int

// Kinds of pkt-line.
const (
	Data Kind = iota
	Flush
	Delim
	ResponseEnd
)

// ErrLength is a length field that is not four hex digits or names an
// impossible length.
var ErrLength = errors.New("bad pkt-line length")

// Read reads one pkt-line into buf (nil: a new slice of the line's size)
// and returns it as it came, length digits included — the payload of a
// Data line is line[4:] — and its kind. io.EOF means the input ended
// before a new pkt-line; io.ErrUnexpectedEOF that it ended inside one.
func Read(r io.Reader, buf []byte) (line []byte, kind Kind, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, err
	}
	n, ok := ParseLength(hdr[:])
	if !ok {
		return nil, 0, fmt.Errorf("%w %q: a pkt-line starts with four hex digits", ErrLength, hdr[:])
	}
	switch n {
	case 0, 1, 2:
		if buf == nil || len(buf) < 4 {
			buf = make([]byte, 4)
		}
		copy(buf, hdr[:])
		return buf[:4], []Kind{Flush, Delim, ResponseEnd}[n], nil
	case 3:
		return nil, 0, fmt.Errorf("%w %q", ErrLength, hdr[:])
	}
	if n > Max {
		return nil, 0, fmt.Errorf("%w: %d bytes is over git's maximum of %d", ErrLength, n, Max)
	}
	if buf == nil {
		buf = make([]byte, n)
	} else if len(buf) < n {
		return nil, 0, fmt.Errorf("%w: %d bytes is more than this reader holds", ErrLength, n)
	}
	line = buf[:n]
	copy(line, hdr[:])
	if _, err := io.ReadFull(r, line[4:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, 0, err
	}
	return line, Data, nil
}

// ParseLength reads a pkt-line length: exactly four hex digits (git
// accepts either case).
func ParseLength(b []byte) (int, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n := 0
	for _, c := range b[:4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int(v)
	}
	return n, true
}

const hexDigits = "0123456789abcdef"

// Append appends payload as one pkt-line; a payload longer than DataMax
// is cut (callers frame short messages).
func Append(dst, payload []byte) []byte {
	if len(payload) > DataMax {
		payload = payload[:DataMax]
	}
	n := len(payload) + 4
	dst = append(dst, hexDigits[n>>12&0xf], hexDigits[n>>8&0xf], hexDigits[n>>4&0xf], hexDigits[n&0xf])
	return append(dst, payload...)
}

// ErrLine is the pkt-line git clients turn into
// "fatal: remote error: <msg>", in every protocol version and service.
func ErrLine(msg string) []byte {
	return Append(nil, []byte("ERR "+msg+"\n"))
}
