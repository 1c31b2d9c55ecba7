package endpoint_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

type staticCert struct{ c tls.Certificate }

func (s staticCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.c, nil }

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type node struct {
	ep   *endpoint.Endpoint
	fp   string
	logs *syncBuf
}

func newKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// startNode runs an endpoint on loopback with a raw-key identity; setup may
// register handlers and adjust options before Start.
func startNode(t *testing.T, mod func(*endpoint.Options), setup func(*endpoint.Endpoint)) *node {
	t.Helper()
	k := newKey(t)
	cert, err := identity.RawKeyTLSCertificate(k)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	o := endpoint.Options{
		Listen:       "127.0.0.1:0",
		Certs:        staticCert{cert},
		DrainTimeout: time.Second,
		Logger:       hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info}),
	}
	if mod != nil {
		mod(&o)
	}
	ep := endpoint.New(o)
	if setup != nil {
		setup(ep)
	}
	if err := ep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.Shutdown)
	return &node{ep: ep, fp: identity.KeyFingerprint(k.Public().(ed25519.PublicKey)), logs: logs}
}

func (n *node) dial(t *testing.T, alpn string, tcp bool) (endpoint.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr := n.ep.UDPAddr().String()
	if tcp {
		addr = n.ep.TCPAddr().String()
	}
	return dial.Dial(ctx, addr, dial.Options{ALPN: alpn, Peer: n.fp, TCP: tcp})
}

func echoOnce(t *testing.T, c endpoint.Conn, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, _ = s.Write(payload)
		_ = s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo returned %d bytes, want %d", len(got), len(payload))
	}
}

func echoNode(t *testing.T, mod func(*endpoint.Options)) *node {
	return startNode(t, mod, func(ep *endpoint.Endpoint) {
		if err := ep.Register(endpoint.EchoALPN, "test", endpoint.Echo()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEchoOverQUICAndTCP(t *testing.T) {
	n := echoNode(t, nil)
	payload := make([]byte, 1<<20)
	_, _ = rand.Read(payload)
	for _, tcp := range []bool{false, true} {
		c, err := n.dial(t, endpoint.EchoALPN, tcp)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c, payload)
		_ = c.CloseWithError(0, "")
	}
	logs := n.logs.String()
	for _, want := range []string{"connection opened: remote_addr=127.0.0.1:", "transport=quic alpn=alknet/echo", "transport=tcp-tls alpn=alknet/echo", "connection closed: remote_addr=", "duration_secs="} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func TestUnknownALPNFailsHandshake(t *testing.T) {
	n := echoNode(t, nil)
	good, err := n.dial(t, endpoint.EchoALPN, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, tcp := range []bool{false, true} {
		_, err := n.dial(t, "alknet/nope", tcp)
		if err == nil || !dial.IsNoALPN(err) {
			t.Fatalf("tcp=%v: unknown ALPN: %v", tcp, err)
		}
		var te *quic.TransportError
		if !tcp && (!errors.As(err, &te) || te.ErrorCode != 0x100+120) {
			t.Fatalf("QUIC error is not no_application_protocol (0x178): %v", err)
		}
	}
	if !strings.Contains(n.logs.String(), "connection rejected: remote_addr=127.0.0.1:") || !strings.Contains(n.logs.String(), "reason=no_application_protocol") {
		t.Fatalf("no rejection logged:\n%s", n.logs.String())
	}
	echoOnce(t, good, []byte("still fine")) // the other connection is unaffected
}

func TestALPNSetFollowsRegistrations(t *testing.T) {
	n := echoNode(t, nil)
	if _, err := n.dial(t, "alknet/late", false); !dial.IsNoALPN(err) {
		t.Fatalf("before registration: %v", err)
	}
	if err := n.ep.Register("alknet/late", "test", endpoint.Echo()); err != nil {
		t.Fatal(err)
	}
	c, err := n.dial(t, "alknet/late", false)
	if err != nil {
		t.Fatalf("after registration: %v", err)
	}
	echoOnce(t, c, []byte("late"))
	n.ep.Unregister("alknet/late", "test")
	if _, err := n.dial(t, "alknet/late", false); !dial.IsNoALPN(err) {
		t.Fatalf("after unregistration: %v", err)
	}
	if got := n.ep.ALPNs(); len(got) != 1 || got[0] != endpoint.EchoALPN {
		t.Fatalf("ALPNs %v", got)
	}
}

func TestDuplicateALPNRegistration(t *testing.T) {
	ep := endpoint.New(endpoint.Options{})
	if err := ep.Register("alknet/x", "plugin-a", endpoint.Echo()); err != nil {
		t.Fatal(err)
	}
	err := ep.Register("alknet/x", "plugin-b", endpoint.Echo())
	if err == nil || !strings.Contains(err.Error(), "alknet/x") || !strings.Contains(err.Error(), "plugin-a") || !strings.Contains(err.Error(), "plugin-b") {
		t.Fatalf("duplicate: %v", err)
	}
}

func TestPanicClosesOnlyThatConnection(t *testing.T) {
	n := startNode(t, nil, func(ep *endpoint.Endpoint) {
		_ = ep.Register(endpoint.EchoALPN, "test", endpoint.Echo())
		_ = ep.Register("alknet/panic", "test", endpoint.HandlerFunc(func(ctx context.Context, c endpoint.Conn, _ auth.AuthContext) error {
			s, err := c.AcceptStream(ctx)
			if err == nil {
				buf := make([]byte, 1)
				_, _ = s.Read(buf)
			}
			panic("handler bug")
		}))
	})
	good, err := n.dial(t, endpoint.EchoALPN, false)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := n.dial(t, "alknet/panic", false)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := bad.OpenStream(context.Background())
	_, _ = s.Write([]byte("x"))
	select {
	case <-bad.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("panicking handler's connection not closed")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(bad.Context()); !errors.As(err, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(endpoint.CodeInternal) {
		t.Fatalf("close cause %v, want application error 4", err)
	}
	echoOnce(t, good, []byte("unaffected"))
	if !strings.Contains(n.logs.String(), "handler panic: alpn=alknet/panic") {
		t.Fatalf("panic not logged with ALPN:\n%s", n.logs.String())
	}
}

func TestMaxConnectionsPerIP(t *testing.T) {
	lim := config.Limits{MaxConnectionsPerIP: 2, MaxAuthAttempts: 5, HandshakeTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second, MaxStreamsPerConnection: 100}
	n := echoNode(t, func(o *endpoint.Options) { o.Limits = func() config.Limits { return lim } })
	var conns []endpoint.Conn
	for range 2 {
		c, err := n.dial(t, endpoint.EchoALPN, false)
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c, []byte("ok"))
		conns = append(conns, c)
	}
	third, err := n.dial(t, endpoint.EchoALPN, false)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		select {
		case <-third.Context().Done():
		case <-ctx.Done():
			t.Fatal("third connection was not refused")
		}
		var ae *quic.ApplicationError
		if cause := context.Cause(third.Context()); !errors.As(cause, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(endpoint.CodeForbidden) {
			t.Fatalf("third connection closed with %v", cause)
		}
	}
	if _, err := n.dial(t, endpoint.EchoALPN, true); err == nil {
		// TCP: the server closes before the handshake completes.
		t.Log("tcp dial returned; the connection must be unusable")
	}
	if !strings.Contains(n.logs.String(), "connection rejected: remote_addr=127.0.0.1:") || !strings.Contains(n.logs.String(), "max_connections_per_ip = 2") {
		t.Fatalf("refusal not logged:\n%s", n.logs.String())
	}
	// Closing one frees a slot.
	_ = conns[0].CloseWithError(0, "")
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := n.dial(t, endpoint.EchoALPN, false)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s, err2 := c.OpenStream(ctx)
			cancel()
			if err2 == nil {
				_, _ = s.Write([]byte("y"))
				_ = s.CloseWrite()
				if b, err3 := io.ReadAll(s); err3 == nil && string(b) == "y" {
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("slot not freed after a connection closed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestShutdownDrainsThenCloses(t *testing.T) {
	n := echoNode(t, nil)
	// A stream in progress finishes during the drain.
	active, err := n.dial(t, endpoint.EchoALPN, false)
	if err != nil {
		t.Fatal(err)
	}
	s, err := active.OpenStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Write([]byte("first half "))
	buf := make([]byte, 11)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	// A stream that never finishes.
	stuck, err := n.dial(t, endpoint.EchoALPN, false)
	if err != nil {
		t.Fatal(err)
	}
	ss, _ := stuck.OpenStream(context.Background())
	_, _ = ss.Write([]byte("z"))
	_, _ = io.ReadFull(ss, make([]byte, 1))

	start := time.Now()
	done := make(chan struct{})
	go func() { n.ep.Shutdown(); close(done) }()
	waitLog(t, n, "draining: listeners closed")
	// New connections are refused while draining.
	if _, err := n.dial(t, endpoint.EchoALPN, true); err == nil {
		t.Error("new TCP connection accepted during drain")
	}
	_, _ = s.Write([]byte("second half"))
	_ = s.CloseWrite()
	rest, err := io.ReadAll(s)
	if err != nil || string(rest) != "second half" {
		t.Fatalf("active stream during drain: %q %v", rest, err)
	}
	select {
	case <-stuck.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stuck connection not closed after the drain timeout")
	}
	var ae *quic.ApplicationError
	if cause := context.Cause(stuck.Context()); !errors.As(cause, &ae) || ae.ErrorCode != 0 || ae.ErrorMessage != "shutdown" {
		t.Fatalf("stuck connection closed with %v, want code 0 \"shutdown\"", cause)
	}
	<-done
	if d := time.Since(start); d < 900*time.Millisecond || d > 4*time.Second {
		t.Fatalf("shutdown took %v with a 1s drain timeout", d)
	}
}

func TestShutdownReturnsEarlyWhenIdle(t *testing.T) {
	n := echoNode(t, func(o *endpoint.Options) { o.DrainTimeout = 10 * time.Second })
	c, err := n.dial(t, endpoint.EchoALPN, false)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, []byte("done"))
	start := time.Now()
	n.ep.Shutdown()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle shutdown waited %v", d)
	}
}

func TestPlainTCPListenerMapsToALPN(t *testing.T) {
	n := startNode(t, func(o *endpoint.Options) {
		o.Plain = []config.PlainListener{{Addr: "127.0.0.1:0", ALPN: endpoint.EchoALPN}}
	}, func(ep *endpoint.Endpoint) { _ = ep.Register(endpoint.EchoALPN, "test", endpoint.Echo()) })
	nc, err := net.Dial("tcp", n.ep.PlainAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _ = nc.Write([]byte("plain bytes"))
	_ = nc.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(nc)
	if err != nil || string(got) != "plain bytes" {
		t.Fatalf("plain echo %q %v", got, err)
	}
	if !strings.Contains(n.logs.String(), "transport=tcp alpn=alknet/echo") {
		t.Fatalf("logs:\n%s", n.logs.String())
	}
}

func TestClientCertificateResolvesIdentity(t *testing.T) {
	clientKey := newKey(t)
	clientCert, _ := identity.RawKeyTLSCertificate(clientKey)
	clientFP := identity.KeyFingerprint(clientKey.Public().(ed25519.PublicKey))
	pol, err := auth.NewPolicy([]auth.Peer{{PeerID: "laptop", Fingerprints: []string{clientFP}, Scopes: []string{"admin"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan auth.AuthContext, 2)
	n := startNode(t, func(o *endpoint.Options) { o.Auth = auth.NewProvider(pol) }, func(ep *endpoint.Endpoint) {
		_ = ep.Register("alknet/who", "test", endpoint.HandlerFunc(func(ctx context.Context, c endpoint.Conn, a auth.AuthContext) error {
			seen <- a
			return nil
		}))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dial.Dial(ctx, n.ep.UDPAddr().String(), dial.Options{ALPN: "alknet/who", Peer: n.fp, ClientCert: &clientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	a := <-seen
	if a.Identity == nil || a.Identity.ID != "laptop" || a.Fingerprint != clientFP || a.ALPN != "alknet/who" || a.Transport != "quic" {
		t.Fatalf("auth context %+v", a)
	}
	// Anonymous client: no identity, no fingerprint.
	c2, err := n.dial(t, "alknet/who", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.CloseWithError(0, "")
	if a := <-seen; a.Identity != nil || a.Fingerprint != "" || a.Transport != "tcp-tls" {
		t.Fatalf("anonymous auth context %+v", a)
	}
	if !strings.Contains(n.logs.String(), "auth attempt: remote_addr=127.0.0.1:") || !strings.Contains(n.logs.String(), "method=tls id=laptop result=accept") {
		t.Fatalf("auth attempt not logged:\n%s", n.logs.String())
	}
}
