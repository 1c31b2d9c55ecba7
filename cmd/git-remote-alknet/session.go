package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/endpoint"
)

// connect serves git's `connect <service>`: it opens the stream, sends
// the request line, tells git the connection is up (an empty line) and
// copies both ways. It returns when the node has ended its side — never
// waiting for git to close its own — so that a push that sends no pack (a
// delete) ends as soon as the node has answered. git's protocol version
// is its protocol.version, for git-upload-pack only: git pushes and
// archives with version 0 or 1, never 2, as it does over SSH.
func (h *helper) connect(ctx context.Context, s *settings, t target, service string) int {
	switch service {
	case serviceUploadPack, serviceReceivePack, serviceUploadArchive:
	default:
		return h.fatal("git asked to connect to %q; the node serves git-upload-pack, git-receive-pack and git-upload-archive", clip(service))
	}
	version := s.protocol
	if version == 2 && service != serviceUploadPack {
		version = 0
	}
	st, done, err := h.openStream(ctx, s, t)
	if err != nil {
		return h.fatal("%s %s on %s: %v", service, t.path, t.addr, err)
	}
	defer done()
	if _, err := st.Write(requestLine(service, t, version)); err != nil {
		return h.fatal("%s %s on %s: send the request: %v", service, t.path, t.addr, describe(err))
	}
	if _, err := io.WriteString(h.out, "\n"); err != nil {
		return exitFatal // git is gone
	}
	go func() {
		// git → node. Owned by the helper process: it ends when git
		// closes its side or the stream fails, or with the process, which
		// exits once the node has ended its side (below) without waiting
		// for git's.
		buf := make([]byte, 64<<10)
		if _, err := io.CopyBuffer(st, h.in, buf); err != nil {
			st.CancelWrite(0)
			return
		}
		_ = st.CloseWrite()
	}()
	switch err := copyToGit(h.out, st); {
	case err == nil:
		return 0
	case errors.Is(err, errWrite):
		st.CancelRead(0)
		return exitFatal // git stopped reading: it says why
	default:
		return h.fatal("%s %s on %s: the stream ended early: %v", service, t.path, t.addr, describe(err))
	}
}

// copyToGit copies the node's side of the stream to git until the node
// ends it (nil) or it fails; a failed write to git is errWrite.
func copyToGit(out io.Writer, st io.Reader) error {
	buf := make([]byte, 64<<10)
	for {
		n, rerr := st.Read(buf)
		if n > 0 {
			if _, err := out.Write(buf[:n]); err != nil {
				return fmt.Errorf("%w: %v", errWrite, err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// statelessConnect serves git's `stateless-connect git-upload-pack`, the
// form git speaks protocol v2 in over HTTP (git's remote-curl.c): the
// helper opens one stream asking for version 2, answers git with an empty
// line and the node's capability advertisement, then forwards each of
// git's requests up to its flush-pkt and the node's response up to its
// flush-pkt, adding the response-end pkt (0002) git waits for. All the
// requests of the session go over that one stream, to the one
// upload-pack the node runs for it.
func (h *helper) statelessConnect(ctx context.Context, s *settings, t target, service string) int {
	if service != serviceUploadPack {
		return h.fatal("git asked for stateless-connect %q; git-remote-alknet offers it for git-upload-pack only", clip(service))
	}
	st, done, err := h.openStream(ctx, s, t)
	if err != nil {
		return h.fatal("%s %s on %s: %v", service, t.path, t.addr, err)
	}
	defer done()
	if _, err := st.Write(requestLine(service, t, 2)); err != nil {
		return h.fatal("%s %s on %s: send the request: %v", service, t.path, t.addr, describe(err))
	}
	node := &pktReader{r: bufio.NewReaderSize(onlyReader{st}, 64<<10)}
	gitIn := &pktReader{r: h.in}
	toGit := bufio.NewWriterSize(h.out, 64<<10)
	toNode := bufio.NewWriterSize(st, 64<<10)

	// The capability advertisement: "version 2", capabilities, flush.
	first, kind, err := node.next()
	if err != nil {
		return h.fatal("%s %s on %s: no answer from the node: %v", service, t.path, t.addr, describe(err))
	}
	if msg, ok := errPayload(first, kind); ok {
		return h.fatal("remote error: %s", msg)
	}
	if kind != pktData || !bytes.Equal(first[4:], []byte("version 2\n")) {
		return h.fatal("%s %s on %s: the node did not answer with protocol version 2 (it sent %q); fetch with connect instead: git config alknet.statelessConnect false",
			service, t.path, t.addr, clip(string(first)))
	}
	if _, err := io.WriteString(h.out, "\n"); err != nil {
		return exitFatal
	}
	if _, err := toGit.Write(first); err != nil {
		return exitFatal
	}
	if code, ok := h.forwardResponse(node, toGit, service, t, false); !ok {
		return code
	}
	if err := toGit.Flush(); err != nil {
		return exitFatal
	}

	for {
		// One request: git's pkt-lines up to its flush-pkt.
		p, kind, err := gitIn.next()
		if errors.Is(err, io.EOF) {
			// git is done: the node's upload-pack ends with our side, and
			// the connection closes once it has (closing it at once could
			// cut our end of the stream short).
			_ = toNode.Flush()
			_ = st.CloseWrite()
			_ = st.SetReadDeadline(time.Now().Add(endWait))
			_, _ = io.Copy(io.Discard, onlyReader{node.r})
			return 0
		}
		if err != nil {
			return h.fatal("%s %s: read git's request: %v", service, t.path, err)
		}
		if kind == pktFlush {
			// A request of a flush-pkt alone asks nothing; upload-pack
			// would take it as the end of the session. Its response is
			// empty, as over HTTP.
			if _, err := toGit.Write(responseEndPkt); err != nil || toGit.Flush() != nil {
				return exitFatal
			}
			continue
		}
		for {
			if _, err := toNode.Write(p); err != nil {
				return h.fatal("%s %s on %s: send git's request: %v", service, t.path, t.addr, describe(err))
			}
			if kind == pktFlush {
				break
			}
			if p, kind, err = gitIn.next(); err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return h.fatal("%s %s: read git's request: %v", service, t.path, err)
			}
		}
		if err := toNode.Flush(); err != nil {
			return h.fatal("%s %s on %s: send git's request: %v", service, t.path, t.addr, describe(err))
		}
		// Its response: the node's pkt-lines up to its flush-pkt, then
		// the response end.
		if code, ok := h.forwardResponse(node, toGit, service, t, true); !ok {
			return code
		}
	}
}

// forwardResponse copies one response of the node to git, up to and
// including its flush-pkt, followed by a response-end pkt when end is
// set, and flushes it to git. When the node ends the stream first (git's
// upload-pack died: after an ERR line, say) what came is passed on and
// the session ends: git reports the ERR itself.
func (h *helper) forwardResponse(node *pktReader, toGit *bufio.Writer, service string, t target, end bool) (int, bool) {
	sawErr := false
	for {
		p, kind, err := node.next()
		if err != nil {
			_ = toGit.Flush()
			if sawErr {
				return exitFatal, false
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return h.fatal("%s %s on %s: the node ended the stream inside a response: %v", service, t.path, t.addr, describe(err)), false
		}
		if _, ok := errPayload(p, kind); ok {
			sawErr = true
		}
		if _, err := toGit.Write(p); err != nil {
			return exitFatal, false
		}
		if kind == pktFlush {
			break
		}
	}
	if end {
		if _, err := toGit.Write(responseEndPkt); err != nil {
			return exitFatal, false
		}
	}
	if err := toGit.Flush(); err != nil {
		return exitFatal, false
	}
	return 0, true
}

// closeCodes say what the node's codes for closing a connection or
// resetting a stream mean (core/endpoint).
var closeCodes = map[endpoint.CloseCode]string{
	endpoint.CodeNormal:      "closed",
	endpoint.CodeNoHandler:   "the node serves no alknet/git (install and enable the git plugin there)",
	endpoint.CodeUnavailable: "the git handler went away (the node restarts it; try again)",
	endpoint.CodeForbidden:   "refused by the node's policy or limits",
	endpoint.CodeInternal:    "the git handler failed (the node's log says why)",
}

// endWait bounds the wait for the node to end a stream once git is done.
const endWait = 5 * time.Second

// errPayload is the message of an "ERR <message>" pkt-line.
func errPayload(p []byte, kind pktKind) (string, bool) {
	if kind != pktData {
		return "", false
	}
	msg, ok := bytes.CutPrefix(p[4:], []byte("ERR "))
	if !ok {
		return "", false
	}
	return string(bytes.TrimSuffix(msg, []byte("\n"))), true
}

// errWrite marks a failed write to git in copyToGit.
var errWrite = errors.New("write to git")

// onlyReader hides a stream's other methods from io.Copy (it must use the
// buffer, and tell reading and writing errors apart).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// describe explains a stream error in a user's terms.
func describe(err error) error {
	if reason := closeReason(err); reason != "" {
		return errors.New(reason)
	}
	return err
}

// closeReason is what the node said when it ended a stream or the
// connection ("" if err is neither).
func closeReason(err error) string {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote {
		what, known := closeCodes[endpoint.CloseCode(ae.ErrorCode)]
		switch {
		case ae.ErrorMessage != "" && known && ae.ErrorCode != 0:
			what += ": " + ae.ErrorMessage
		case ae.ErrorMessage != "":
			what = ae.ErrorMessage
		}
		return fmt.Sprintf("connection closed by the node: %s (code %d)", what, ae.ErrorCode)
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		if what, ok := closeCodes[endpoint.CloseCode(se.ErrorCode)]; ok && se.ErrorCode != 0 {
			return fmt.Sprintf("the node reset the stream: %s (code %d)", what, se.ErrorCode)
		}
		return fmt.Sprintf("the node reset the stream (code %d)", se.ErrorCode)
	}
	var ie *quic.IdleTimeoutError
	if errors.As(err, &ie) {
		return "the node stopped answering (idle timeout)"
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return "the node reset the connection"
	}
	return ""
}
