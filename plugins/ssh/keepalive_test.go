package ssh_test

import (
	"net"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// An idle SSH connection gets keepalive requests (OpenSSH's
// ClientAliveInterval): bytes keep moving under the node's idle timeout.
// A client that leaves them unanswered is dropped.
func TestClientAliveKeepalives(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) {
		s["client_alive_interval"] = "50ms"
		s["client_alive_count_max"] = 2
	})
	st := f.stream()
	cfg := &gossh.ClientConfig{User: "anyone", Auth: []gossh.AuthMethod{gossh.PublicKeys(f.alice)},
		HostKeyCallback: func(string, net.Addr, gossh.PublicKey) error { return nil }}
	c, chans, reqs, err := gossh.NewClientConn(streamConn{st}, "node:4433", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		for ch := range chans {
			_ = ch.Reject(gossh.Prohibited, "no")
		}
	}()
	// Answer three keepalives, then stop answering.
	for i := range 3 {
		select {
		case r := <-reqs:
			if r.Type != "keepalive@openssh.com" || !r.WantReply {
				t.Fatalf("request %d: %s (want reply %v)", i, r.Type, r.WantReply)
			}
			_ = r.Reply(false, nil) // what OpenSSH answers
		case <-time.After(10 * time.Second):
			t.Fatalf("no keepalive %d from the server within 10 s", i)
		}
	}
	// Unanswered: the server ends the connection.
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection is still open after its keepalives went unanswered")
	}
	waitFor(t, "the keepalive log line", func() bool {
		return len(f.logs.lines("ssh connection closed: the client stopped answering keepalives")) == 1
	})
}
