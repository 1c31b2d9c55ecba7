package endpoint_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/identity/acmetest"
)

// lateACME is the endpoint's CertSource and ChallengeSource. The endpoint
// must be listening before pebble starts (pebble's VA needs the TCP port),
// and the ACME identity needs pebble's directory, so the identity is set
// after the endpoint has started; until then no certificate is served and
// no challenge is pending.
type lateACME struct {
	p atomic.Pointer[identity.ACME]
}

var (
	_ endpoint.CertSource      = (*lateACME)(nil)
	_ endpoint.ChallengeSource = (*lateACME)(nil)
)

func (l *lateACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	a := l.p.Load()
	if a == nil {
		return nil, errors.New("acme identity not set up yet")
	}
	return a.GetCertificate(hello)
}

func (l *lateACME) ChallengePending(hello *tls.ClientHelloInfo) bool {
	a := l.p.Load()
	return a != nil && a.ChallengePending(hello)
}

// TestACMEIdentityOnOwnPort runs a node whose TLS identity is the acme mode:
// the certificate is obtained from a real ACME CA (pebble, in process) whose
// VA validates TLS-ALPN-01 on the node's own TCP+TLS port, through the
// endpoint's acme-tls/1 handling. Clients then reach the echo protocol over
// QUIC and over TCP+TLS, verifying the node by WebPKI against pebble's root.
func TestACMEIdentityOnOwnPort(t *testing.T) {
	const domain = "node.alknet.test"
	start := time.Now()

	// Registered first so it runs last, after every other cleanup.
	t.Cleanup(func() { checkNoTestGoroutines(t) })

	certs := &lateACME{}
	logs := &acmetest.LogBuffer{} // printed if the test fails
	ep := endpoint.New(endpoint.Options{
		Listen: "127.0.0.1:0",
		Certs:  certs,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "endpoint", Output: logs, Level: hclog.Debug}),
	})
	if err := ep.Register(endpoint.EchoALPN, "test", endpoint.Echo()); err != nil {
		t.Fatalf("register echo: %v", err)
	}
	if err := ep.Start(); err != nil {
		t.Fatalf("start endpoint: %v", err)
	}
	shutdown := func() {
		done := make(chan struct{})
		go func() { ep.Shutdown(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("endpoint Shutdown did not return within 15s")
		}
	}
	t.Cleanup(shutdown) // in case the test stops early; Shutdown is idempotent
	tcpPort := ep.TCPAddr().(*net.TCPAddr).Port

	ca := acmetest.Start(t, domain, tcpPort)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("endpoint log:\n%s", logs.String())
		}
	})

	acmeID, err := identity.NewACME(identity.ACMEConfig{
		Domains:      []string{domain},
		CacheDir:     filepath.Join(t.TempDir(), "acme"),
		DirectoryURL: ca.DirectoryURL,
		Email:        "ops@alknet.test",
		HTTPClient:   ca.HTTPClient,
		Logger:       hclog.New(&hclog.LoggerOptions{Name: "acme", Output: ca.Logs, Level: hclog.Debug}),
		RetryMin:     200 * time.Millisecond,
		RetryMax:     time.Second,
	})
	if err != nil {
		t.Fatalf("NewACME: %v", err)
	}
	certs.p.Store(acmeID)

	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- acmeID.Run(ctx) }()
	stopRun := func() {
		cancel()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("Run returned %v after cancellation; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancellation")
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stopRun()
		}
	}()

	deadline := time.Now().Add(60 * time.Second)
	for !acmeID.Ready(domain) {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate for %s within 60s", domain)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("certificate obtained after %s", time.Since(start).Round(time.Millisecond))

	for _, tc := range []struct {
		name string
		addr string
		tcp  bool
	}{
		{"quic", ep.UDPAddr().String(), false},
		{"tcp+tls", ep.TCPAddr().String(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			opts := dial.Options{
				ALPN:       endpoint.EchoALPN,
				TCP:        tc.tcp,
				RootCAs:    ca.Roots,
				ServerName: domain,
			}
			conn, err := dial.Dial(ctx, tc.addr, opts)
			if err != nil {
				t.Fatalf("dial %s (%s) as %s, verifying against pebble's root: %v", tc.addr, tc.name, domain, err)
			}
			defer conn.CloseWithError(endpoint.CodeNormal, "")
			if got := conn.ALPN(); got != endpoint.EchoALPN {
				t.Fatalf("negotiated ALPN %q; want %q", got, endpoint.EchoALPN)
			}

			// The served chain: the leaf names exactly domain and verifies,
			// through the intermediate the node sent, to pebble's root.
			raw := conn.PeerCertificates()
			if len(raw) == 0 {
				t.Fatal("no peer certificates")
			}
			chainCerts := make([]*x509.Certificate, len(raw))
			for i, der := range raw {
				if chainCerts[i], err = x509.ParseCertificate(der); err != nil {
					t.Fatalf("parse peer certificate %d: %v", i, err)
				}
			}
			leaf := chainCerts[0]
			if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != domain {
				t.Fatalf("leaf names %v; want [%s]", leaf.DNSNames, domain)
			}
			inter := x509.NewCertPool()
			for _, c := range chainCerts[1:] {
				inter.AddCert(c)
			}
			chains, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Roots, Intermediates: inter, DNSName: domain})
			if err != nil {
				t.Fatalf("leaf does not verify to pebble's root for %s: %v", domain, err)
			}
			if last := chains[0][len(chains[0])-1]; !last.Equal(ca.Root) {
				t.Fatalf("chain ends at %q; want pebble root %q", last.Subject, ca.Root.Subject)
			}

			// Echo round trip, then half-close and read to EOF.
			s, err := conn.OpenStream(ctx)
			if err != nil {
				t.Fatalf("open stream: %v", err)
			}
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			msg := []byte("hello over an acme-issued certificate via " + tc.name)
			if _, err := s.Write(msg); err != nil {
				t.Fatalf("echo write: %v", err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(s, got); err != nil {
				t.Fatalf("echo read: %v", err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo = %q; want %q", got, msg)
			}
			if err := s.CloseWrite(); err != nil {
				t.Fatalf("close write: %v", err)
			}
			if rest, err := io.ReadAll(s); err != nil || len(rest) != 0 {
				t.Fatalf("after close-write: %q, %v; want clean EOF", rest, err)
			}

			// An ALPN the node does not serve fails the handshake.
			opts.ALPN = "alknet/not-served"
			bad, err := dial.Dial(ctx, tc.addr, opts)
			if err == nil {
				_ = bad.CloseWithError(endpoint.CodeNormal, "")
				t.Fatalf("dial with ALPN %q succeeded; want no_application_protocol", opts.ALPN)
			}
			if !dial.IsNoALPN(err) {
				t.Fatalf("dial with ALPN %q: %v; want a no_application_protocol failure", opts.ALPN, err)
			}
		})
	}

	stopRun()
	shutdown()
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

// checkNoTestGoroutines fails the test if goroutines of the endpoint, the
// ACME identity, quic-go, the test DNS server or the ACME directory's HTTP
// server are still running once everything has been shut down. Pebble's
// VA task goroutine, which pebble cannot stop, is not counted.
func checkNoTestGoroutines(t *testing.T) {
	t.Helper()
	suspects := []string{
		"alknet.dev/alknet/core/endpoint.",
		"alknet.dev/alknet/core/identity.",
		"alknet.dev/alknet/core/dial.",
		"github.com/quic-go/quic-go",
		"github.com/miekg/dns",
		"net/http/httptest",
		"net/http.(*persistConn)",
		"golang.org/x/crypto/acme",
	}
	var left []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = left[:0]
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "checkNoTestGoroutines") {
				continue
			}
			for _, s := range suspects {
				if strings.Contains(g, s) {
					left = append(left, g)
					break
				}
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("%d goroutines left running after the test:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
