package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// sshPlain runs the stock ssh client against the node's plain-TCP port
// with opts before the destination, and returns its output and exit
// status.
func (e *sshEnv) sshPlain(opts []string, command ...string) (string, string, int) {
	e.t.Helper()
	h, p, _ := net.SplitHostPort(e.plainAddr)
	args := append(append(append(e.sshArgs(false), opts...), "-p", p, "ops@"+h), command...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	e.t.Fatal(err)
	return "", "", -1
}

// goClient connects golang.org/x/crypto/ssh to the plain-TCP port as ops,
// checking the node's host key.
func (e *sshEnv) goClient() *gossh.Client {
	e.t.Helper()
	pem, err := os.ReadFile(e.keyFile)
	if err != nil {
		e.t.Fatal(err)
	}
	signer, err := gossh.ParsePrivateKey(pem)
	if err != nil {
		e.t.Fatal(err)
	}
	known, err := os.ReadFile(e.knownHosts)
	if err != nil {
		e.t.Fatal(err)
	}
	_, _, hostKey, _, _, err := gossh.ParseKnownHosts(known)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := gossh.Dial("tcp", e.plainAddr, &gossh.ClientConfig{User: "ops", Auth: []gossh.AuthMethod{gossh.PublicKeys(signer)},
		HostKeyCallback: gossh.FixedHostKey(hostKey), Timeout: 10 * time.Second})
	if err != nil {
		e.t.Fatalf("ssh connection with x/crypto/ssh: %v", err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stock OpenSSH asking for SHA-1 key exchange or SHA-1 MACs only is
// refused in the key exchange; SHA-2 works as before, and the refusals
// cost the address nothing.
func TestSSHSHA1AlgorithmsRefused(t *testing.T) {
	e := startSSH(t, "")
	_, errs, code := e.sshPlain([]string{"-o", "KexAlgorithms=diffie-hellman-group14-sha1"}, "echo", "hi")
	if code != 255 || !strings.Contains(errs, "no matching key exchange method found") {
		t.Fatalf("ssh -o KexAlgorithms=diffie-hellman-group14-sha1: exit %d\n%s", code, errs)
	}
	_, errs, code = e.sshPlain([]string{"-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha1,hmac-sha1-etm@openssh.com"}, "echo", "hi")
	if code != 255 || !strings.Contains(errs, "no matching MAC found") {
		t.Fatalf("ssh -o MACs=hmac-sha1: exit %d\n%s", code, errs)
	}
	e.srv.waitLog("ssh handshake failed", "no common algorithm for key exchange", "no common algorithm for client to server MAC")
	for _, opts := range [][]string{
		nil,
		{"-o", "KexAlgorithms=curve25519-sha256"},
		{"-o", "KexAlgorithms=diffie-hellman-group14-sha256"},
		{"-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha2-256-etm@openssh.com"},
	} {
		if out, errs, code := e.sshPlain(opts, "echo", "ok"); code != 0 || out != "ok\n" {
			t.Fatalf("ssh %v: exit %d %q\n%s", opts, code, out, errs)
		}
	}
}

// 1,000 session channels opened at once on one SSH connection: the
// default max_sessions (10) are opened, the rest refused as a resource
// shortage; the connection goes on working, and so do other people's
// connections meanwhile.
func TestSSHSessionChannelFlood(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl not installed (.ci/run installs it): %v", err)
	}
	e := startSSH(t, "")
	// Someone else's connection: an ssh -L through the node.
	h, p, _ := net.SplitHostPort(e.plainAddr)
	lport := freePort(t)
	fwd := exec.Command("ssh", append(e.sshArgs(false), "-N", "-o", "ExitOnForwardFailure=yes", "-p", p,
		"-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, strings.TrimPrefix(e.web.URL, "http://")), "ops@"+h)...)
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fwd.Process.Kill(); _ = fwd.Wait() }()
	throughForward := fmt.Sprintf("http://127.0.0.1:%d/", lport)
	if body := curlRetry(t, throughForward); body != "hello from the web server\n" {
		t.Fatalf("curl through the parallel ssh -L: %q", body)
	}

	c := e.goClient()
	const total, workers = 1000, 32
	var (
		mu       sync.Mutex
		opened   []gossh.Channel
		refused  int
		failures []error
		wg       sync.WaitGroup
		next     = make(chan struct{}, total)
	)
	for range total {
		next <- struct{}{}
	}
	close(next)
	for range workers {
		wg.Add(1)
		go func() { // owned by the test, which waits for all of them
			defer wg.Done()
			for range next {
				ch, reqs, err := c.OpenChannel("session", nil)
				var oce *gossh.OpenChannelError
				mu.Lock()
				switch {
				case err == nil:
					opened = append(opened, ch)
					go gossh.DiscardRequests(reqs) // ends when the channel closes
				case errors.As(err, &oce) && oce.Reason == gossh.ResourceShortage && strings.Contains(oce.Message, "max_sessions = 10"):
					refused++
				default:
					failures = append(failures, err)
				}
				mu.Unlock()
			}
		}()
	}
	// Meanwhile, another person's command.
	if out, errs, code := e.sshPlain(nil, "echo", "parallel"); code != 0 || out != "parallel\n" {
		t.Errorf("ssh during the flood: exit %d %q\n%s", code, out, errs)
	}
	wg.Wait()
	if len(failures) > 0 || len(opened) != 10 || refused != total-10 {
		t.Fatalf("%d sessions opened, %d refused as resource shortage, other errors %v; want 10 and %d", len(opened), refused, failures, total-10)
	}

	// The flooding connection still works: an open session runs a
	// command, and once sessions close new ones open.
	if ok, err := opened[0].SendRequest("exec", true, gossh.Marshal(struct{ Command string }{"echo still here"})); !ok || err != nil {
		t.Fatalf("exec on an open session: %v %v", ok, err)
	}
	if out, _ := io.ReadAll(opened[0]); string(out) != "still here\n" {
		t.Fatalf("exec on an open session after the flood: %q", out)
	}
	for _, ch := range opened[1:] {
		_ = ch.Close()
	}
	var out []byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := c.NewSession()
		if err == nil {
			out, err = s.Output("echo after")
			_ = s.Close()
			if err != nil {
				t.Fatalf("a session after the flood: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session could be opened once the others closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(out) != "after\n" {
		t.Fatalf("a session after the flood: %q", out)
	}
	if body := curlRetry(t, throughForward); body != "hello from the web server\n" {
		t.Fatalf("curl through the parallel ssh -L after the flood: %q", body)
	}
	// Logged once, counted when the connection closes.
	_ = c.Close()
	e.srv.waitLog("ssh connection closed", fmt.Sprintf("refused_max_sessions=%d", total-10))
	if n := strings.Count(e.srv.logs.String(), "channel refused"); n != 1 {
		t.Fatalf("%d \"channel refused\" log lines for one flooding connection; want 1", n)
	}
}

// A source that fails to authenticate is refused before the handshake
// while its penalty lasts, with a log line fail2ban can read; afterwards
// it connects again.
func TestSSHPenaltyRefusesSource(t *testing.T) {
	e := startSSH(t, "penalty_authfail = \"3s\"\npenalty_min = \"0s\"")
	stranger, _ := writeKey(t, t.TempDir(), "stranger")
	args := e.sshArgs(false)
	for i, a := range args {
		if a == e.keyFile {
			args[i] = stranger
		}
	}
	h, p, _ := net.SplitHostPort(e.plainAddr)
	if out, err := exec.Command("ssh", append(args, "-p", p, "ops@"+h, "echo", "hi")...).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Fatalf("an unknown key: %v %s", err, out)
	}
	e.srv.waitLog("source penalised", "remote_addr=127.0.0.1:", "reason=authfail")
	if out, errs, code := e.sshPlain(nil, "echo", "hi"); code != 255 || out != "" || !strings.Contains(errs, "kex_exchange_identification") {
		t.Fatalf("the right key from a penalised address: exit %d %q\n%s", code, out, errs)
	}
	e.srv.waitLog("connection refused", "reason=penalty")
	if line := logLine(e.srv.logs.String(), "connection refused"); !strings.Contains(line, "remote_addr=127.0.0.1:") || !strings.Contains(line, "source=127.0.0.1/32") {
		t.Fatalf("the refusal does not name the address for fail2ban: %q", line)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _, code := e.sshPlain(nil, "echo", "back")
		if code == 0 && out == "back\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused long after the 3s penalty:\n%s", e.srv.logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logLine is the first line of logs containing msg.
func logLine(logs, msg string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, msg) {
			return l
		}
	}
	return ""
}
