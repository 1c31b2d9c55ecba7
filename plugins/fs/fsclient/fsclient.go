// Package fsclient is a client of the alknet/fs transfer protocol
// (plugins/fs/wire): it puts blobs and directory trees on a node, and gets
// blobs from one or several nodes at once, verifying every 16 KiB group as
// it arrives and resuming an interrupted download where it stopped.
//
// The package knows nothing of how a stream reaches a node: the caller
// hands it an Opener per node, which opens one stream of the alknet/fs ALPN
// (`alknet fs` dials the node; the tests serve in-process fakes).
package fsclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
)

// Stream is one bidirectional stream of the alknet/fs ALPN, as
// core/endpoint.Stream provides it: a QUIC stream, or the single stream of
// a TCP connection.
type Stream interface {
	io.Reader
	io.Writer
	// CloseWrite half-closes: the node reads EOF; reading continues.
	CloseWrite() error
	// Close closes both directions.
	Close() error
	// CancelRead and CancelWrite abort a direction with an error code.
	CancelRead(code uint64)
	CancelWrite(code uint64)
}

// Opener opens a new stream to one node; each request uses a stream of
// its own. It may be called from several goroutines at once.
type Opener func(ctx context.Context) (Stream, error)

// Source is a node a blob is fetched from.
type Source struct {
	// Name is how reports and errors name the source (e.g. its address).
	Name string
	Open Opener
}

// ResetCode returns the code a node reset a stream with, if err is such
// a reset (QUIC RESET_STREAM or STOP_SENDING from the peer). Over TCP a
// reset is the connection closing, and carries no code.
func ResetCode(err error) (uint64, bool) {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return uint64(se.ErrorCode), true
	}
	return 0, false
}

// NodeError is a refusal in a response header (wire.Error), with the
// request it answers.
type NodeError struct {
	Op   string // "get" or "put"
	Code string // NOT_FOUND, FORBIDDEN, INVALID_INPUT, CORRUPT, TOO_LARGE, INTERNAL
	Msg  string
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("the node refused the %s: %s: %s", e.Op, e.Code, e.Msg)
}

// request writes the request header; the returned reader reads the
// response from the stream.
func request(s Stream, req *wire.Request) (*bufio.Reader, error) {
	if err := wire.WriteHeader(s, req); err != nil {
		return nil, fmt.Errorf("send the %s request: %w", req.Op, describeStreamError(err))
	}
	return bufio.NewReaderSize(s, 64<<10), nil
}

// readResponse reads the response header of a request op.
func readResponse(br *bufio.Reader, op string) (*wire.Response, error) {
	var resp wire.Response
	if err := wire.ReadHeader(br, &resp); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read the response to the %s: the node closed the stream without an answer", op)
		}
		return nil, fmt.Errorf("read the response to the %s: %w", op, describeStreamError(err))
	}
	if resp.Error != nil {
		return nil, &NodeError{Op: op, Code: resp.Error.Code, Msg: resp.Error.Message}
	}
	if resp.Size < 0 {
		return nil, fmt.Errorf("the node answered the %s with a negative size %d", op, resp.Size)
	}
	return &resp, nil
}

// describeStreamError names the reset codes of the protocol.
func describeStreamError(err error) error {
	code, ok := ResetCode(err)
	if !ok {
		return err
	}
	switch code {
	case wire.CodeRefused:
		return fmt.Errorf("the node refused the request (stream reset with code %d): %w", code, err)
	case wire.CodeCorrupt:
		return fmt.Errorf("the node found its stored copy corrupt (stream reset with code %d): %w", code, err)
	}
	return fmt.Errorf("the node reset the stream (code %d): %w", code, err)
}

// Put sends size bytes read from src to a node and returns the hash it
// stored them under. If tag is not empty the node tags the blob with it.
// The bytes are hashed while they are sent, and the node's answer must
// name that hash. src must hold at least size bytes; only size are read.
func Put(ctx context.Context, open Opener, src io.Reader, size int64, tag string) (bao.Hash, error) {
	if size < 0 {
		return bao.Hash{}, fmt.Errorf("put: size %d is negative", size)
	}
	if tag != "" {
		if err := wire.ValidTag(tag); err != nil {
			return bao.Hash{}, err
		}
	}
	s, err := open(ctx)
	if err != nil {
		return bao.Hash{}, fmt.Errorf("put: open a stream: %w", err)
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() {
		s.CancelWrite(0)
		s.CancelRead(0)
	})
	defer stop()
	hashErr := func(err error) (bao.Hash, error) {
		if ctx.Err() != nil {
			return bao.Hash{}, fmt.Errorf("put: %w", context.Cause(ctx))
		}
		return bao.Hash{}, err
	}
	br, err := request(s, &wire.Request{Op: wire.OpPut, Size: size, Tag: tag})
	if err != nil {
		return hashErr(err)
	}
	ob := bao.NewOutboardWriter()
	in := &readErrReader{r: io.TeeReader(io.LimitReader(src, size), ob)}
	n, err := io.CopyBuffer(s, in, make([]byte, 256<<10))
	short := err == nil && n < size
	if short {
		err = fmt.Errorf("the input ended after %d of %d bytes (did the file shrink while being read?)", n, size)
	}
	if in.err != nil || short {
		// Our side failed: the node, waiting for the rest, is told by
		// the reset and stores nothing.
		s.CancelWrite(0)
		return hashErr(fmt.Errorf("put: after %d of %d bytes: %w", n, size, err))
	}
	if err != nil {
		// The node may have refused the put and said why before
		// resetting: prefer its answer.
		if _, rerr := readResponse(br, "put"); rerr != nil {
			var ne *NodeError
			if errors.As(rerr, &ne) {
				return hashErr(rerr)
			}
		}
		s.CancelWrite(0)
		return hashErr(fmt.Errorf("put: after %d of %d bytes: %w", n, size, describeStreamError(err)))
	}
	if err := s.CloseWrite(); err != nil {
		return hashErr(fmt.Errorf("put: finish sending: %w", err))
	}
	resp, err := readResponse(br, "put")
	if err != nil {
		return hashErr(err)
	}
	want, _ := ob.Sum()
	switch {
	case resp.Hash == nil:
		return bao.Hash{}, fmt.Errorf("put: the node answered without a hash (stored %d bytes)", resp.Size)
	case *resp.Hash != want:
		return bao.Hash{}, fmt.Errorf("put: the node says it stored %v, but the bytes sent hash to %v", *resp.Hash, want)
	case resp.Size != size:
		return bao.Hash{}, fmt.Errorf("put: the node says it stored %d bytes, %d were sent", resp.Size, size)
	}
	return want, nil
}

// readErrReader keeps the error of its reader, to tell a failure of the
// input from one of the stream.
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
