// Package call implements the alknet/call protocol (spec/call.md, D4, D5):
// length-prefixed JSON event envelopes over streams, an operation registry
// with ordered gates, one dispatcher shared by the server and the client
// paths, CallClient with default-deny for the remote side, and peer import.
package call

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxFrame is the largest frame body: exactly this is accepted, one more
// byte is rejected (spec/call.md §1).
const MaxFrame = 64 << 20

var (
	// ErrFrameTooLarge is a length above MaxFrame (reading or writing).
	ErrFrameTooLarge = errors.New("call frame: body larger than 64 MiB")
	// ErrEmptyFrame is a zero length.
	ErrEmptyFrame = errors.New("call frame: zero length")
)

// ReadFrame reads exactly one frame: a 4-byte big-endian length and that
// many body bytes; following bytes stay unread. End of stream before or
// inside a frame returns io.EOF (the stream closed, nothing to report).
func ReadFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return nil, ErrEmptyFrame
	case n > MaxFrame:
		return nil, fmt.Errorf("%w (%d bytes)", ErrFrameTooLarge, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	return body, nil
}

// WriteFrame writes body as one frame, refusing an empty or over-size body.
// The header and body go out in one Write so concurrent writers that hold
// the stream's lock never interleave.
func WriteFrame(w io.Writer, body []byte) error {
	if len(body) == 0 {
		return ErrEmptyFrame
	}
	if len(body) > MaxFrame {
		return fmt.Errorf("%w (%d bytes)", ErrFrameTooLarge, len(body))
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	_, err := w.Write(buf)
	return err
}
