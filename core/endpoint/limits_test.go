package endpoint_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/endpoint"
)

func limits(mod func(*config.Limits)) func(*endpoint.Options) {
	l := config.Limits{MaxConnections: 10000, MaxConnectionsPerIP: 100, IPv6PrefixLen: 64, MaxAuthAttempts: 5,
		HandshakeTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second, MaxStreamsPerConnection: 100}
	if mod != nil {
		mod(&l)
	}
	return func(o *endpoint.Options) { o.Limits = func() config.Limits { return l } }
}

// A TCP+TLS client that offers no ALPN fails the handshake with
// no_application_protocol, as it would over QUIC, and never reaches a
// handler.
func TestTCPWithoutALPNRefused(t *testing.T) {
	n := echoNode(t, nil)
	c, err := tls.Dial("tcp", n.ep.TCPAddr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		c.Close()
		t.Fatal("a handshake without ALPN succeeded")
	}
	if !strings.Contains(err.Error(), "no application protocol") {
		t.Fatalf("handshake error %q: want the no_application_protocol alert", err)
	}
	waitLog(t, n, "reason=no_application_protocol alpn_count=0")
	// An offer that names a served ALPN still works.
	c2, err := tls.Dial("tcp", n.ep.TCPAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{endpoint.EchoALPN}})
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
}

// A server name longer than a DNS name is refused; a client's ALPN list is
// logged by its count and a short sample, however long it is.
func TestLongSNIAndALPNListsBounded(t *testing.T) {
	n := echoNode(t, nil)
	long := strings.Repeat("a.", 150) + "example"
	if c, err := tls.Dial("tcp", n.ep.TCPAddr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: long, NextProtos: []string{endpoint.EchoALPN}}); err == nil {
		c.Close()
		t.Fatal("a 307-byte server name was accepted")
	}
	waitLog(t, n, "server name of 307 bytes (at most 253)")
	var protos []string
	for i := range 500 {
		protos = append(protos, strings.Repeat("x", 100)+string(rune('a'+i%26)))
	}
	if c, err := tls.Dial("tcp", n.ep.TCPAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: protos}); err == nil {
		c.Close()
		t.Fatal("an unknown ALPN list was accepted")
	}
	waitLog(t, n, "alpn_count=500")
	for _, line := range strings.Split(n.logs.String(), "\n") {
		if strings.Contains(line, "alpn_count=500") && len(line) > 400 {
			t.Fatalf("the rejection line is %d bytes long: %.200s…", len(line), line)
		}
	}
}

func waitLog(t *testing.T, n *node, sub string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(n.logs.String(), sub) {
		if time.Now().After(deadline) {
			t.Fatalf("logs lack %q:\n%s", sub, n.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// limits.max_connections bounds the whole node; the table of sources
// holds only sources with connections.
func TestNodeWideConnectionCapAndSourcesPruned(t *testing.T) {
	n := echoNode(t, limits(func(l *config.Limits) { l.MaxConnections = 2 }))
	var conns []endpoint.Conn
	for range 2 {
		c, err := n.dial(t, endpoint.EchoALPN, false)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c, []byte("ok"))
		conns = append(conns, c)
	}
	if c, err := n.dial(t, endpoint.EchoALPN, true); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if s, err := c.OpenStream(ctx); err == nil {
			_, _ = s.Write([]byte("x"))
			_ = s.CloseWrite()
			if b, _ := readAll(s); string(b) == "x" {
				t.Fatal("a third connection was served with max_connections = 2")
			}
		}
	}
	waitLog(t, n, "the node has 2 connections (limits.max_connections)")
	if total, sources := n.ep.Counts(); total != 2 || sources != 1 {
		t.Fatalf("counts with two connections: %d connections from %d sources", total, sources)
	}
	for _, c := range conns {
		_ = c.CloseWithError(0, "")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if total, sources := n.ep.Counts(); total == 0 && sources == 0 {
			break
		}
		if time.Now().After(deadline) {
			total, sources := n.ep.Counts()
			t.Fatalf("after every connection closed: %d connections from %d sources remain counted", total, sources)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A TCP+TLS connection where nothing moves is closed after the idle
// timeout, as QUIC closes a silent connection; one whose handler marks
// work in progress is not.
func TestTCPIdleTimeout(t *testing.T) {
	busy := make(chan struct{})
	n := startNode(t, limits(func(l *config.Limits) { l.IdleTimeout = 300 * time.Millisecond }), func(ep *endpoint.Endpoint) {
		_ = ep.Register("test/idle", "test", endpoint.HandlerFunc(func(ctx context.Context, c endpoint.Conn, _ auth.AuthContext) error {
			<-c.Context().Done()
			return nil
		}))
		_ = ep.Register("test/busy", "test", endpoint.HandlerFunc(func(ctx context.Context, c endpoint.Conn, _ auth.AuthContext) error {
			done := c.(interface{ Busy() func() }).Busy()
			defer done()
			select {
			case <-busy:
			case <-c.Context().Done():
			}
			return nil
		}))
	})
	// The busy one first: were it not exempt, its timeout would come
	// first too.
	held, err := n.dial(t, "test/busy", true)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := n.dial(t, "test/idle", true)
	if err != nil {
		t.Fatal(err)
	}
	// The client reads and sends nothing; the node closes the connection.
	st, err := idle.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Read(make([]byte, 1)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("an idle TCP+TLS connection is still open after 10 s with a 300 ms idle timeout: %v", err)
	}
	waitLog(t, n, "connection closed by the idle timeout")
	if strings.Count(n.logs.String(), "connection closed by the idle timeout") != 1 {
		t.Fatalf("the busy connection was closed too:\n%s", n.logs.String())
	}
	close(busy)
	_ = held.CloseWithError(0, "")
}

func TestSourcesGroupIPv6ByPrefix(t *testing.T) {
	a := auth.Source(&netTCPAddr{"[2001:db8:1:2::5]:4433"}, 64)
	b := auth.Source(&netTCPAddr{"[2001:db8:1:2:ffff::1]:1"}, 64)
	c := auth.Source(&netTCPAddr{"[2001:db8:1:3::5]:4433"}, 64)
	v4 := auth.Source(&netTCPAddr{"[::ffff:192.0.2.7]:1"}, 64)
	if a != b || a == c || a.Bits() != 64 {
		t.Fatalf("/64 grouping: %v %v %v", a, b, c)
	}
	if v4.String() != "192.0.2.7/32" {
		t.Fatalf("an IPv4-mapped address counts as IPv4: %v", v4)
	}
}

type netTCPAddr struct{ s string }

func (a *netTCPAddr) Network() string { return "tcp" }
func (a *netTCPAddr) String() string  { return a.s }

func readAll(s endpoint.Stream) ([]byte, error) {
	_ = s.SetReadDeadline(time.Now().Add(2 * time.Second))
	var out []byte
	buf := make([]byte, 1024)
	for {
		n, err := s.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			return out, err
		}
	}
}
