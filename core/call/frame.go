// Package call implements the alknet/call protocol (docs/spec/call.md, docs/architecture.md D4, D5):
// length-prefixed JSON event envelopes over streams, an operation registry
// with ordered gates, one dispatcher shared by the server and the client
// paths, CallClient with default-deny for the remote side, and peer import.
package call

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// MaxFrame is the protocol's largest frame body: exactly this is
// accepted, one more byte is rejected (docs/spec/call.md §1). A node reads
// with a lower limit of its own (limits.max_frame_bytes).
const MaxFrame = 64 << 20

var (
	// ErrFrameTooLarge is a length above the reader's limit (MaxFrame
	// unless lower), or a body above MaxFrame when writing.
	ErrFrameTooLarge = errors.New("call frame: body larger than the limit")
	// ErrEmptyFrame is a zero length.
	ErrEmptyFrame = errors.New("call frame: zero length")
	// ErrOverBudget is a frame whose bytes the stream's budget cannot hold.
	ErrOverBudget = errors.New("call frame: over the budget of request bytes in flight")
)

// ReadFrame reads exactly one frame of at most MaxFrame bytes: a 4-byte
// big-endian length and that many body bytes; following bytes stay
// unread. End of stream before or inside a frame returns io.EOF (the
// stream closed, nothing to report).
func ReadFrame(r io.Reader) ([]byte, error) {
	return readFrame(r, MaxFrame, nil)
}

// readChunk is the most of a large body read at a time.
const readChunk = 16 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// readFrame reads one frame of at most limit bytes. The body grows with
// the bytes that actually arrive, never with the length the header
// announces: a peer that announces a large frame and sends little makes
// the node hold little (docs/spec/call.md §1). reserve (optional) is told
// of every piece as it arrives; its error ends the read.
func readFrame(r io.Reader, limit int, reserve func(int) error) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, io.EOF
		}
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	switch {
	case n == 0:
		return nil, ErrEmptyFrame
	case n > limit:
		return nil, fmt.Errorf("%w (%d bytes; the limit is %d)", ErrFrameTooLarge, n, limit)
	}
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	chunk := *bp
	body := make([]byte, 0, min(n, 4<<10))
	for len(body) < n {
		m, err := r.Read(chunk[:min(n-len(body), len(chunk))])
		if m > 0 {
			if reserve != nil {
				if rerr := reserve(m); rerr != nil {
					return nil, rerr
				}
			}
			body = append(body, chunk[:m]...)
		}
		if err != nil && len(body) < n {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, io.EOF
			}
			return nil, err
		}
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

// Buffers reused across frames. A stream's frames are read through a
// bufio.Reader so that one Read fetches a whole small frame (and, on QUIC,
// lets the stream notice a FIN that arrived with it, see atEOF); encoded
// frames are built in one reusable buffer, header included, and written
// with one Write.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	bufPool    = sync.Pool{New: func() any { b := make([]byte, 0, 1<<10); return &b }}
)

// maxPooled is the largest buffer put back in bufPool: a rare huge frame
// must not stay pinned in the pool.
const maxPooled = 64 << 10

// nextFrame reads one frame of at most limit bytes from br like
// readFrame. A frame that fits in br's buffer is returned in place, without
// a copy: the body is valid only until the caller discards it with
// br.Discard(skip), which must happen before the next read from br (skip is
// 0 for a copied body). reserve is asked for a small frame's bytes at once,
// for a large one's chunk by chunk.
func nextFrame(br *bufio.Reader, limit int, reserve func(int) error) (body []byte, skip int, err error) {
	hdr, err := br.Peek(4)
	if err != nil {
		if len(hdr) > 0 || errors.Is(err, io.EOF) {
			return nil, 0, io.EOF
		}
		return nil, 0, err
	}
	n := int(binary.BigEndian.Uint32(hdr))
	if n == 0 || n > limit || 4+n > br.Size() {
		body, err := readFrame(br, limit, reserve) // reports the bad length, or reads a large body
		return body, 0, err
	}
	if reserve != nil {
		if err := reserve(n); err != nil {
			return nil, 0, err
		}
	}
	b, err := br.Peek(4 + n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, 0, io.EOF
		}
		return nil, 0, err
	}
	return b[4:], 4 + n, nil
}

func getReader(r io.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}

// encodeFrame encodes one envelope as a frame (header included) into the
// pooled buffer *bp.
func encodeFrame(bp *[]byte, typ, id string, payload any) ([]byte, error) {
	b, err := appendEnvelope(append((*bp)[:0], 0, 0, 0, 0), typ, id, payload)
	return finishFrame(bp, b, err)
}

// encodeAnswer is encodeFrame for a call.responded carrying out, and
// encodeRequest for a call.requested: typed, so that the hot path boxes
// no payload into an interface.
func encodeAnswer(bp *[]byte, id string, out json.RawMessage) ([]byte, error) {
	b := appendEnvelopeStart(append((*bp)[:0], 0, 0, 0, 0), EventResponded, id)
	b = append(b, `{"output":`...)
	b, err := appendRaw(b, out)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", EventResponded, err)
	}
	return finishFrame(bp, append(b, '}', '}'), nil)
}

func encodeRequest(bp *[]byte, id string, p requestPayload) ([]byte, error) {
	b := appendEnvelopeStart(append((*bp)[:0], 0, 0, 0, 0), EventRequested, id)
	b, err := appendRequest(b, p)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", EventRequested, err)
	}
	return finishFrame(bp, append(b, '}'), nil)
}

// finishFrame keeps the grown buffer in *bp, checks the size and writes
// the length header.
func finishFrame(bp *[]byte, b []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	*bp = b
	if n := len(b) - 4; n > MaxFrame {
		return nil, fmt.Errorf("%w (%d bytes)", ErrFrameTooLarge, n)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	return b, nil
}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(bp *[]byte) {
	if cap(*bp) <= maxPooled {
		bufPool.Put(bp)
	}
}

// atEOF reports, without blocking, whether the stream behind br has
// nothing more to deliver: its end already arrived and every byte before
// it was read. A false answer is only "not known yet".
//
// It peeks with a deadline in the past. quic-go reports io.EOF before it
// looks at the deadline once the FIN has been received and the data before
// it read (the bufio.Reader asks for more than a small frame, so that read
// has reached the end of the received data).
func atEOF(br *bufio.Reader, st interface{ SetReadDeadline(time.Time) error }) bool {
	if br.Buffered() > 0 || st.SetReadDeadline(time.Now()) != nil {
		return false
	}
	_, err := br.Peek(1)
	_ = st.SetReadDeadline(time.Time{})
	return errors.Is(err, io.EOF)
}
