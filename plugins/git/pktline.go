package git

import (
	"errors"
	"fmt"
	"io"
)

// pkt-line framing, as git's pkt-line.c: four hex digits giving the
// length of the whole line (the four digits included), then the payload.
// "0000" is a flush-pkt; "0001" (delim) and "0002" (response end) are
// protocol v2's special packets. Only what the request line and the ERR
// answer need is here: the rest of the conversation is git's own.
const (
	// pktMax is git's LARGE_PACKET_MAX: the longest pkt-line, length
	// digits included.
	pktMax = 65520
	// pktDataMax is the longest payload.
	pktDataMax = pktMax - 4
)

// pktKind is what readPkt read.
type pktKind int

const (
	pktData pktKind = iota
	pktFlush
	pktDelim
	pktResponseEnd
)

// errPktLength is a length field that is not four hex digits or names an
// impossible length.
var errPktLength = errors.New("bad pkt-line length")

// readPkt reads one pkt-line into buf (nil: a new slice of the line's
// size) and returns its payload, a slice of buf.
func readPkt(r io.Reader, buf []byte) ([]byte, pktKind, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, err
	}
	n, ok := parseHex4(hdr)
	if !ok {
		return nil, 0, fmt.Errorf("%w %q: a pkt-line starts with four hex digits", errPktLength, hdr[:])
	}
	switch n {
	case 0:
		return nil, pktFlush, nil
	case 1:
		return nil, pktDelim, nil
	case 2:
		return nil, pktResponseEnd, nil
	case 3:
		return nil, 0, fmt.Errorf("%w %q", errPktLength, hdr[:])
	}
	if n > pktMax {
		return nil, 0, fmt.Errorf("%w: %d bytes is over git's maximum of %d", errPktLength, n, pktMax)
	}
	if buf == nil {
		buf = make([]byte, n-4)
	} else if len(buf) < n-4 {
		return nil, 0, fmt.Errorf("%w: %d bytes is more than this reader holds", errPktLength, n)
	}
	p := buf[:n-4]
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, 0, err
	}
	return p, pktData, nil
}

// parseHex4 reads a pkt-line length: exactly four hex digits (git
// accepts either case).
func parseHex4(b [4]byte) (int, bool) {
	n := 0
	for _, c := range b {
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

// appendPkt appends payload as one pkt-line; payloads longer than
// pktDataMax are cut (callers write short messages only).
func appendPkt(dst, payload []byte) []byte {
	if len(payload) > pktDataMax {
		payload = payload[:pktDataMax]
	}
	n := len(payload) + 4
	dst = append(dst, hexDigits[n>>12&0xf], hexDigits[n>>8&0xf], hexDigits[n>>4&0xf], hexDigits[n&0xf])
	return append(dst, payload...)
}

// writePkt writes payload as one pkt-line.
func writePkt(w io.Writer, payload []byte) error {
	_, err := w.Write(appendPkt(nil, payload))
	return err
}

// writeFlush writes a flush-pkt.
func writeFlush(w io.Writer) error {
	_, err := io.WriteString(w, "0000")
	return err
}

// errLine is the pkt-line git clients turn into
// "fatal: remote error: <msg>", in every protocol version and service.
func errLine(msg string) []byte {
	return appendPkt(nil, []byte("ERR "+msg+"\n"))
}
