package provider

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge matches (errors.Is) the error of an event or a response
// beyond the client's bounds (Client.MaxEventBytes, Client.MaxResponseBytes).
var ErrTooLarge = errors.New("larger than the client accepts")

type tooLargeError struct {
	what  string
	limit int64
}

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("%s larger than %d bytes", e.what, e.limit)
}
func (e *tooLargeError) Is(target error) bool { return target == ErrTooLarge }

// sseReader reads the data of server-sent events from a stream, following
// the event-stream format of the HTML standard as far as a chat-completions
// client needs it: lines end with CRLF, LF or CR; a line starting with ':'
// is a comment; "data" fields (with or without one space after the colon)
// accumulate, joined with '\n'; a blank line dispatches the event; every
// other field (event, id, retry, anything else) is ignored.
//
// Memory is bounded: one line, and the data of one event, may not exceed
// maxEvent bytes (plus a few bytes of field name on a line).
type sseReader struct {
	sc       *bufio.Scanner
	maxEvent int
	data     []byte // data of the event being read, each line followed by '\n'
	first    bool   // no line read yet (a leading byte-order mark is dropped)
}

// lineSlack is what a line may hold beyond maxEvent bytes of data: the
// field name, the colon and the optional space.
const lineSlack = 64

func newSSEReader(r io.Reader, maxEvent int) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, min(4096, maxEvent+lineSlack)), maxEvent+lineSlack)
	sc.Split(scanSSELines)
	return &sseReader{sc: sc, maxEvent: maxEvent, first: true}
}

// next returns the data of the next event. The slice is valid until the
// following call. It returns io.EOF when the stream ends; an event whose
// blank line never came (the stream ended right after it) is still
// returned, so that a server that closes after "data: [DONE]\n" works.
func (s *sseReader) next() ([]byte, error) {
	s.data = s.data[:0]
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if s.first {
			s.first = false
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf"))
		}
		if len(line) == 0 {
			if len(s.data) == 0 {
				continue // no data field since the last event: nothing to dispatch
			}
			return s.data[:len(s.data)-1], nil
		}
		if line[0] == ':' {
			continue // comment (servers send these as keep-alives)
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			name, value = line, nil
		} else if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		if string(name) != "data" {
			continue
		}
		if len(s.data)+len(value) > s.maxEvent {
			return nil, &tooLargeError{"server-sent event", int64(s.maxEvent)}
		}
		s.data = append(s.data, value...)
		s.data = append(s.data, '\n')
	}
	if err := s.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			// The line alone is longer than an event may be.
			return nil, &tooLargeError{"server-sent event", int64(s.maxEvent)}
		}
		return nil, err
	}
	if len(s.data) > 0 {
		d := s.data[:len(s.data)-1]
		s.data = s.data[:0]
		return d, nil
	}
	return nil, io.EOF
}

// scanSSELines is a bufio.SplitFunc for lines ending in CRLF, LF or CR.
func scanSSELines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // a CR at the end of what was read: an LF may follow
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// boundedReader fails with ErrTooLarge once more than max bytes were read,
// and counts what was read (a request whose response body produced no byte
// may be retried).
type boundedReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.n >= b.max {
		var one [1]byte
		k, err := b.r.Read(one[:])
		if k > 0 {
			return 0, &tooLargeError{"response", b.max}
		}
		return 0, err
	}
	if int64(len(p)) > b.max-b.n {
		p = p[:b.max-b.n]
	}
	k, err := b.r.Read(p)
	b.n += int64(k)
	return k, err
}
