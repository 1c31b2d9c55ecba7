package integration

import (
	"bufio"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
)

var closedLine = regexp.MustCompile(`connection closed: remote_addr=(\S+) alpn=(\S+) duration_secs=([0-9.]+)`)

// closedDurations are the durations the node logged for closed
// connections of alpn, in log order.
func closedDurations(s *server, alpn string) []float64 {
	var out []float64
	for _, m := range closedLine.FindAllStringSubmatch(s.logs.String(), -1) {
		if m[2] == alpn {
			d, _ := strconv.ParseFloat(m[3], 64)
			out = append(out, d)
		}
	}
	return out
}

// waitClosed waits until the node has logged n closed connections of alpn.
func waitClosed(t *testing.T, s *server, alpn string, n int) []float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := closedDurations(s, alpn)
		if len(d) >= n {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node logged %d closed %s connections, want %d:\n%s", len(d), alpn, n, s.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Each `ssh` through the ProxyCommand ends its QUIC connection when it
// exits: with three connections allowed per address, 25 logins in a row
// all succeed, and none holds its connection for the idle timeout.
func TestSSHQUICConnectionEndsWithSSH(t *testing.T) {
	// startSSH inserts the settings in [plugins.ssh]; a table header after
	// them starts [limits].
	e := startSSH(t, "\n[limits]\nmax_connections_per_ip = 3\n")
	const n = 25
	for i := range n {
		out, errs, code := e.ssh(true, "uptime")
		if code != 0 || !strings.Contains(out, "load average") {
			t.Fatalf("ssh uptime %d of %d: exit %d\nstdout: %s\nstderr: %s\nnode logs:\n%s", i+1, n, code, out, errs, e.srv.logs)
		}
	}
	for i, d := range waitClosed(t, e.srv, "alknet/ssh", n) {
		if d >= 2 {
			t.Errorf("connection %d was held %.3f s after ssh exited; want < 2 s", i+1, d)
		}
	}
}

// sshStream is a QUIC stream as the net.Conn gossh wants.
type sshStream struct{ endpoint.Stream }

func (sshStream) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (sshStream) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// A client that keeps its QUIC connection open after its SSH connection
// ended is closed by the node, not left for the idle timeout.
func TestSSHNodeClosesConnectionAfterSSHEnds(t *testing.T) {
	e := startSSH(t, "")
	key, err := readSigner(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial.Dial(tctx(t, 10*time.Second), e.srv.Addr, dial.Options{ALPN: "alknet/ssh", Peer: e.srv.FP})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(endpoint.CodeNormal, "")
	st, err := c.OpenStream(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &gossh.ClientConfig{User: "ops", Auth: []gossh.AuthMethod{gossh.PublicKeys(key)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
	sc, chans, reqs, err := gossh.NewClientConn(sshStream{st}, "node", cfg)
	if err != nil {
		t.Fatal(err)
	}
	client := gossh.NewClient(sc, chans, reqs)
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sess.Output("echo one"); err != nil || string(out) != "one\n" {
		t.Fatalf("ssh echo: %v %q", err, out)
	}
	_ = client.Close() // ends the stream; the QUIC connection stays open on this side
	select {
	case <-c.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the node kept the connection open after its SSH connection ended\n%s", e.srv.logs)
	}
	for _, d := range waitClosed(t, e.srv, "alknet/ssh", 1) {
		if d >= 5 {
			t.Errorf("connection held %.3f s after its SSH connection ended", d)
		}
	}
}

func readSigner(path string) (gossh.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return gossh.ParsePrivateKey(b)
}

// `alknet pipe` ended by a signal (OpenSSH sends SIGHUP to its
// ProxyCommand when it exits) closes its QUIC connection before it exits:
// the node logs the close at once.
func TestPipeClosesConnectionOnSignal(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	client := newCLI(t, nil)
	for i, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT} {
		cmd := pipeCmd(t, client, "--alpn", "alknet/echo", "--peer", srv.FP, srv.Addr)
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }() // owned by this iteration, which reads exited
		if _, err := io.WriteString(stdin, "ping\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "ping\n" {
			t.Fatalf("echo through pipe: %q %v", line, err)
		}
		_ = cmd.Process.Signal(sig)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("alknet pipe did not exit on %v", sig)
		}
		_ = stdin.Close()
		d := waitClosed(t, srv, "alknet/echo", i+1)
		if d[i] >= 2 {
			t.Errorf("after %v the node held the connection %.3f s", sig, d[i])
		}
	}
}
