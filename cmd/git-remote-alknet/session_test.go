package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// pipeStream is the helper's side of a stream to a fake node.
type pipeStream struct {
	r *io.PipeReader // node → helper
	w *io.PipeWriter // helper → node
}

func (p *pipeStream) Read(b []byte) (int, error)      { return p.r.Read(b) }
func (p *pipeStream) Write(b []byte) (int, error)     { return p.w.Write(b) }
func (p *pipeStream) CloseWrite() error               { return p.w.Close() }
func (p *pipeStream) CancelRead(uint64)               { p.r.CloseWithError(errors.New("read cancelled")) }
func (p *pipeStream) CancelWrite(uint64)              { p.w.CloseWithError(errors.New("write cancelled")) }
func (p *pipeStream) SetReadDeadline(time.Time) error { return nil }

// nodeSide is the fake node's side of the stream.
type nodeSide struct {
	in  *bufio.Reader  // what the helper sent
	out *io.PipeWriter // to the helper; Close ends the stream
}

// fakeOpener opens streams whose node side is served by serve, in a
// goroutine the test waits for through the returned channel.
func fakeOpener(t *testing.T, serve func(n *nodeSide)) (opener, <-chan struct{}) {
	served := make(chan struct{})
	return func(context.Context, target) (stream, func(), error) {
		toNodeR, toNodeW := io.Pipe()
		toHelperR, toHelperW := io.Pipe()
		go func() {
			// Owned by the test, which waits for served.
			defer close(served)
			defer toHelperW.Close()
			serve(&nodeSide{in: bufio.NewReader(toNodeR), out: toHelperW})
		}()
		return &pipeStream{r: toHelperR, w: toNodeW}, func() { toNodeR.Close() }, nil
	}, served
}

// readRequest reads the helper's request line.
func (n *nodeSide) readRequest(t *testing.T) string {
	t.Helper()
	p, kind, err := (&pktReader{r: n.in}).next()
	if err != nil || kind != pktData {
		t.Errorf("request line: %q %v %v", p, kind, err)
		return ""
	}
	return string(p[4:])
}

func pkt(s string) string { return string(appendPkt(nil, []byte(s))) }

func testTarget() target {
	return target{addr: "node.example:4433", host: "node.example", path: "/proj"}
}

// runHelper runs the helper on the given input until it exits and returns
// its exit status, stdout and stderr.
func runHelper(t *testing.T, open opener, s *settings, in io.Reader) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	h := newHelper(in, &out, &errb)
	h.open, h.settings = open, s
	code := h.run([]string{"origin", "alknet://node.example/proj"})
	return code, out.String(), errb.String()
}

func TestCapabilities(t *testing.T) {
	code, out, errs := runHelper(t, nil, &settings{protocol: 2}, strings.NewReader("capabilities\n\n"))
	if code != 0 || out != "connect\nstateless-connect\n\n" {
		t.Fatalf("capabilities: exit %d, %q, %s", code, out, errs)
	}
	code, out, _ = runHelper(t, nil, &settings{protocol: 2, statelessOnly: true}, strings.NewReader("capabilities\n\n"))
	if code != 0 || out != "stateless-connect\n\n" {
		t.Fatalf("capabilities with alknet.statelessConnect: exit %d, %q", code, out)
	}
	code, _, errs = runHelper(t, nil, &settings{protocol: 2}, strings.NewReader("capabilities\nlist\n"))
	if code != exitFatal || !strings.HasPrefix(errs, "fatal: git sent the remote-helper command \"list\"") {
		t.Fatalf("an unknown command: exit %d, %s", code, errs)
	}
	code, _, errs = runHelper(t, nil, &settings{protocol: 2, statelessOnly: true}, strings.NewReader("capabilities\nlist for-push\n"))
	if code != exitFatal || !strings.Contains(errs, "which needs connect: git config alknet.statelessConnect true") {
		t.Fatalf("a push with alknet.statelessConnect: exit %d, %s", code, errs)
	}
	var out2, errb bytes.Buffer
	if code := newHelper(strings.NewReader(""), &out2, &errb).run([]string{"origin", "alknet://node.example"}); code != exitFatal ||
		!strings.Contains(errb.String(), "names no repository") {
		t.Fatalf("a URL without a repository: exit %d, %s", code, errb.String())
	}
}

// The stateless-connect framing: the advertisement is passed on, each
// request reaches the node up to its flush-pkt, each response reaches git
// up to its flush-pkt followed by 0002, and one stream carries them all.
func TestStatelessConnectFraming(t *testing.T) {
	adv := pkt("version 2\n") + pkt("agent=git/2.39\n") + pkt("ls-refs=unborn\n") + pkt("fetch=shallow\n") + "0000"
	req1 := pkt("command=ls-refs\n") + "0001" + pkt("peel\n") + pkt("ref-prefix HEAD\n") + "0000"
	resp1 := pkt("0123456789012345678901234567890123456789 HEAD\n") + "0000"
	req2 := pkt("command=fetch\n") + "0001" + pkt("want 0123456789012345678901234567890123456789\n") + pkt("done\n") + "0000"
	resp2 := pkt("packfile\n") + pkt("\x01PACK...") + pkt("\x02progress\n") + "0001" + pkt("\x01more") + "0000"
	open, served := fakeOpener(t, func(n *nodeSide) {
		if got := n.readRequest(t); got != "git-upload-pack /proj\x00host=node.example\x00\x00version=2\x00" {
			t.Errorf("request line %q", got)
		}
		_, _ = io.WriteString(n.out, adv)
		for i, c := range []struct{ req, resp string }{{req1, resp1}, {req2, resp2}} {
			got := make([]byte, len(c.req))
			if _, err := io.ReadFull(n.in, got); err != nil || string(got) != c.req {
				t.Errorf("request %d: %q %v, want %q", i, got, err, c.req)
				return
			}
			_, _ = io.WriteString(n.out, c.resp)
		}
		// git's EOF reaches the node as the end of the stream.
		if rest, err := io.ReadAll(n.in); err != nil || len(rest) != 0 {
			t.Errorf("after the last request: %q %v", rest, err)
		}
	})
	// git also sends a request of a flush-pkt alone, answered with 0002.
	in := "stateless-connect git-upload-pack\n" + req1 + "0000" + req2
	code, out, errs := runHelper(t, open, &settings{protocol: 2}, strings.NewReader(in))
	<-served
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if want := "\n" + adv + resp1 + "0002" + "0002" + resp2 + "0002"; out != want {
		t.Fatalf("to git:\n%q\nwant\n%q", out, want)
	}
}

// A node that refuses (ERR) before the advertisement: git sees the
// reason as a fatal remote error.
func TestStatelessConnectRefused(t *testing.T) {
	open, served := fakeOpener(t, func(n *nodeSide) {
		n.readRequest(t)
		_, _ = io.WriteString(n.out, pkt("ERR permission denied: git:read required to fetch proj\n"))
	})
	code, out, errs := runHelper(t, open, &settings{protocol: 2}, strings.NewReader("stateless-connect git-upload-pack\n"))
	<-served
	if code != exitFatal || out != "" || errs != "fatal: remote error: permission denied: git:read required to fetch proj\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// A node that ends the stream inside a response: what came is passed on
// and the helper says what happened.
func TestStatelessConnectCutResponse(t *testing.T) {
	open, served := fakeOpener(t, func(n *nodeSide) {
		n.readRequest(t)
		_, _ = io.WriteString(n.out, pkt("version 2\n")+"0000")
		_, _, _ = (&pktReader{r: n.in}).next()
		_, _ = io.WriteString(n.out, pkt("packfile\n"))
	})
	code, out, errs := runHelper(t, open, &settings{protocol: 2}, strings.NewReader("stateless-connect git-upload-pack\n"+pkt("command=fetch\n")+"0000"))
	<-served
	if code != exitFatal || !strings.HasSuffix(out, pkt("packfile\n")) || !strings.Contains(errs, "the node ended the stream inside a response") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// connect: the helper exits once the node has ended its side, while git
// still holds its own open (a push that deletes only sends no pack and
// waits for the report).
func TestConnectEndsWithTheNode(t *testing.T) {
	report := pkt("unpack ok\n") + pkt("ok refs/heads/gone\n") + "0000"
	open, served := fakeOpener(t, func(n *nodeSide) {
		if got := n.readRequest(t); got != "git-receive-pack /proj\x00host=node.example\x00" {
			t.Errorf("request line %q (a push never asks for version 2)", got)
		}
		cmd := make([]byte, 4)
		_, _ = io.ReadFull(n.in, cmd)
		_, _ = io.WriteString(n.out, report)
	})
	gitIn, gitW := io.Pipe()
	defer gitW.Close()
	go func() {
		// Owned by the test: ends when the helper has read it all, or
		// with the pipe's close.
		_, _ = io.WriteString(gitW, "connect git-receive-pack\n0000")
	}()
	done := make(chan struct{})
	var code int
	var out, errs string
	go func() {
		// Owned by the test, which waits for done.
		defer close(done)
		code, out, errs = runHelper(t, open, &settings{protocol: 2}, gitIn)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the helper did not exit after the node ended its side")
	}
	<-served
	if code != 0 || out != "\n"+report {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errs)
	}
}

// connect asks for protocol v2 for git-upload-pack when git's
// protocol.version is 2 (its default), and for what git asks otherwise.
func TestConnectVersion(t *testing.T) {
	for _, c := range []struct {
		protocol int
		service  string
		want     string
	}{
		{2, serviceUploadPack, "\x00version=2\x00"},
		{1, serviceUploadPack, "\x00version=1\x00"},
		{0, serviceUploadPack, ""},
		{2, serviceUploadArchive, ""},
		{1, serviceReceivePack, "\x00version=1\x00"},
	} {
		var got string
		open, served := fakeOpener(t, func(n *nodeSide) { got = n.readRequest(t) })
		code, _, errs := runHelper(t, open, &settings{protocol: c.protocol}, strings.NewReader("connect "+c.service+"\n"))
		<-served
		if want := c.service + " /proj\x00host=node.example\x00" + c.want; code != 0 || got != want {
			t.Errorf("protocol.version %d, %s: request %q, want %q (exit %d, %s)", c.protocol, c.service, got, want, code, errs)
		}
	}
	code, _, errs := runHelper(t, nil, &settings{protocol: 2}, strings.NewReader("connect git-frobnicate\n"))
	if code != exitFatal || !strings.Contains(errs, `git asked to connect to "git-frobnicate"`) {
		t.Errorf("an unknown service: exit %d, %s", code, errs)
	}
}

// The node's close and reset codes read as what they mean.
func TestCloseReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&quic.ApplicationError{Remote: true, ErrorCode: 2, ErrorMessage: "plugin git exited"},
			"connection closed by the node: the git handler went away (the node restarts it; try again): plugin git exited (code 2)"},
		{&quic.ApplicationError{Remote: true, ErrorCode: 0, ErrorMessage: "shutdown"}, "connection closed by the node: shutdown (code 0)"},
		{&quic.StreamError{Remote: true, ErrorCode: 2}, "the node reset the stream: the git handler went away (the node restarts it; try again) (code 2)"},
		{&quic.StreamError{Remote: true, ErrorCode: 77}, "the node reset the stream (code 77)"},
		{io.ErrUnexpectedEOF, ""},
	} {
		if got := closeReason(c.err); got != c.want {
			t.Errorf("closeReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
