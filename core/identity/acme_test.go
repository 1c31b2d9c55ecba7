package identity

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/identity/acmetest"
)

func TestACMEConfigValidation(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		cfg  ACMEConfig
		want string
	}{
		{"no domains", ACMEConfig{CacheDir: dir}, "no domains configured"},
		{"empty domain", ACMEConfig{Domains: []string{" "}, CacheDir: dir}, "empty domain name"},
		{"wildcard", ACMEConfig{Domains: []string{"*.example.com"}, CacheDir: dir}, "wildcard"},
		{"ip", ACMEConfig{Domains: []string{"192.0.2.1"}, CacheDir: dir}, "IP address"},
		{"single label", ACMEConfig{Domains: []string{"localhost"}, CacheDir: dir}, "single label"},
		{"no cache dir", ACMEConfig{Domains: []string{"node.example.com"}}, "no cache directory configured"},
		{"http directory", ACMEConfig{Domains: []string{"node.example.com"}, CacheDir: dir, DirectoryURL: "http://ca.example/dir"}, "not an https URL"},
		{"bad email", ACMEConfig{Domains: []string{"node.example.com"}, CacheDir: dir, Email: "nobody"}, "not an email address"},
		{"negative retry", ACMEConfig{Domains: []string{"node.example.com"}, CacheDir: dir, RetryMin: -time.Second}, "negative retry delay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := NewACME(c.cfg)
			if err == nil {
				t.Fatalf("NewACME(%+v) = %v, nil; want error containing %q", c.cfg, a, c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("NewACME error = %q; want it to contain %q", err, c.want)
			}
		})
	}

	// A valid config creates the cache directory 0700 and does no I/O.
	cache := filepath.Join(t.TempDir(), "acme", "cache")
	a, err := NewACME(ACMEConfig{Domains: []string{"Node.Example.com."}, CacheDir: cache})
	if err != nil {
		t.Fatalf("NewACME(valid): %v", err)
	}
	fi, err := os.Stat(cache)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v, %v; want a 0700 directory", fi, err)
	}
	if a.Ready("node.example.com") {
		t.Fatal("Ready before any certificate was obtained")
	}
	if a.retryMin != acmeRetryMin || a.retryMax != acmeRetryMax {
		t.Fatalf("retry delays %s..%s; want the defaults %s..%s", a.retryMin, a.retryMax, acmeRetryMin, acmeRetryMax)
	}

	// Configured retry delays are used; a maximum below the minimum is
	// raised to it.
	a, err = NewACME(ACMEConfig{Domains: []string{"node.example.com"}, CacheDir: cache, RetryMin: 2 * time.Second, RetryMax: time.Second})
	if err != nil {
		t.Fatalf("NewACME(retry delays): %v", err)
	}
	if a.retryMin != 2*time.Second || a.retryMax != 2*time.Second {
		t.Fatalf("retry delays %s..%s; want 2s..2s", a.retryMin, a.retryMax)
	}
}

// TestACMETLSALPN01WithPebble obtains a certificate from a real ACME CA
// (pebble, in process, on loopback) whose VA validates TLS-ALPN-01 against
// the test's own TLS listener, then checks that the listener serves a chain
// that verifies to pebble's root for a normal ALPN protocol.
func TestACMETLSALPN01WithPebble(t *testing.T) {
	const (
		domain   = "node.alknet.test"
		echoALPN = "alknet/echo"
	)
	start := time.Now()

	// The node's TLS port. acmeID is set before the accept loop starts, so
	// GetConfigForClient never sees it nil.
	var acmeID *ACME
	var challengeHandshakes atomic.Int32
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if acmeID.ChallengePending(hello) {
				return &tls.Config{NextProtos: []string{ACMETLSALPN}, GetCertificate: acmeID.GetCertificate}, nil
			}
			return &tls.Config{NextProtos: []string{echoALPN}, GetCertificate: acmeID.GetCertificate, MinVersion: tls.VersionTLS13}, nil
		},
	})
	if err != nil {
		t.Fatalf("listen TLS: %v", err)
	}
	tlsPort := ln.Addr().(*net.TCPAddr).Port

	// Pebble (real validation, at full speed, with no injected bad
	// nonces) whose VA checks TLS-ALPN-01 on tlsPort.
	ca := acmetest.Start(t, domain, tlsPort)

	cacheDir := filepath.Join(t.TempDir(), "acme")
	acmeID, err = NewACME(ACMEConfig{
		Domains:      []string{domain},
		CacheDir:     cacheDir,
		DirectoryURL: ca.DirectoryURL,
		Email:        "ops@alknet.test",
		HTTPClient:   ca.HTTPClient,
		Logger:       hclog.New(&hclog.LoggerOptions{Name: "acme", Output: ca.Logs, Level: hclog.Debug}),
		RetryMin:     500 * time.Millisecond,
		RetryMax:     2 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewACME: %v", err)
	}
	if acmeID.retryMin != 500*time.Millisecond || acmeID.retryMax != 2*time.Second {
		t.Fatalf("retry delays %s..%s; want the configured 500ms..2s", acmeID.retryMin, acmeID.retryMax)
	}

	// Before any order exists, a validator-style hello finds no challenge.
	validatorHello := &tls.ClientHelloInfo{ServerName: domain, SupportedProtos: []string{ACMETLSALPN}}
	if acmeID.ChallengePending(validatorHello) {
		t.Fatal("ChallengePending = true before any challenge was started")
	}
	if acmeID.ChallengePending(&tls.ClientHelloInfo{ServerName: domain, SupportedProtos: []string{echoALPN}}) {
		t.Fatal("ChallengePending = true for a hello that does not offer acme-tls/1")
	}

	// Accept loop: every connection is handshaken; acme-tls/1 ones are
	// closed right after (RFC 8737), alknet/echo ones echo until EOF.
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connsMu.Lock()
			conns[c] = struct{}{}
			connsMu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					connsMu.Lock()
					delete(conns, c)
					connsMu.Unlock()
					_ = c.Close()
				}()
				tc := c.(*tls.Conn)
				_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				switch tc.ConnectionState().NegotiatedProtocol {
				case ACMETLSALPN:
					challengeHandshakes.Add(1)
				case echoALPN:
					_, _ = io.Copy(tc, tc)
				}
			}()
		}
	}()
	defer func() {
		_ = ln.Close()
		connsMu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	}()

	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- acmeID.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("Run returned %v after cancellation; want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of cancellation")
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

	if n := challengeHandshakes.Load(); n == 0 {
		t.Fatal("certificate issued without any acme-tls/1 handshake on the listener; TLS-ALPN-01 was not answered here")
	} else {
		t.Logf("answered %d TLS-ALPN-01 validation handshakes", n)
	}
	if acmeID.ChallengePending(validatorHello) {
		t.Fatal("ChallengePending = true after the challenge completed")
	}

	// A normal client: TLS 1.3 only (as QUIC is), default verification
	// against pebble's root.
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{
		ServerName: domain,
		NextProtos: []string{echoALPN},
		RootCAs:    ca.Roots,
		MinVersion: tls.VersionTLS13,
	})
	if err != nil {
		t.Fatalf("dial %s verifying against pebble's root: %v", domain, err)
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	if cs.NegotiatedProtocol != echoALPN {
		t.Fatalf("negotiated ALPN %q; want %q", cs.NegotiatedProtocol, echoALPN)
	}
	if len(cs.VerifiedChains) == 0 {
		t.Fatal("no verified chains")
	}
	chain := cs.VerifiedChains[0]
	if !chain[len(chain)-1].Equal(ca.Root) {
		t.Fatalf("chain ends at %q; want pebble root %q", chain[len(chain)-1].Subject, ca.Root.Subject)
	}
	leaf := cs.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != domain {
		t.Fatalf("leaf names %v; want [%s]", leaf.DNSNames, domain)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("leaf key %T; want ECDSA (the certificate Run obtained, not an extra RSA one)", leaf.PublicKey)
	}

	msg := []byte("hello over acme-issued tls")
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(msg); err != nil {
		t.Fatalf("echo write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("echo read: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q; want %q", got, msg)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatalf("close write: %v", err)
	}
	if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
		t.Fatalf("after close-write: %q, %v; want clean EOF", rest, err)
	}

	// A restarted node finds the certificate in the cache: same leaf, no
	// new order (a new order would carry a new serial).
	again, err := NewACME(ACMEConfig{
		Domains:      []string{domain},
		CacheDir:     cacheDir,
		DirectoryURL: ca.DirectoryURL,
		HTTPClient:   ca.HTTPClient,
	})
	if err != nil {
		t.Fatalf("NewACME on the same cache: %v", err)
	}
	cached, err := again.GetCertificate(syntheticHello(domain))
	if err != nil {
		t.Fatalf("certificate from cache: %v", err)
	}
	cachedLeaf, err := x509.ParseCertificate(cached.Certificate[0])
	if err != nil {
		t.Fatalf("parse cached leaf: %v", err)
	}
	if cachedLeaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("cached leaf serial %s; served serial %s", cachedLeaf.SerialNumber, leaf.SerialNumber)
	}
	if !again.Ready(domain) {
		t.Fatal("Ready = false after a handshake served the cached certificate")
	}

	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
