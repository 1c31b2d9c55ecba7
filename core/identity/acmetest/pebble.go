// Package acmetest is a test harness that runs a real ACME CA, pebble
// (github.com/letsencrypt/pebble), in process on loopback, together with a
// tiny DNS server that resolves the test's domain to 127.0.0.1. Pebble's
// validation authority really connects to the node under test and checks
// its TLS-ALPN-01 answer, so a test that obtains a certificate through it
// exercises the whole acme identity mode without any outside network.
//
// It is meant for tests only: it takes a testing.TB, sets pebble's
// environment knobs with t.Setenv (so it cannot be used from parallel
// tests) and stops everything it started with t.Cleanup. It must not import
// package identity, so that identity's own tests can use it.
package acmetest

import (
	"bytes"
	"crypto/x509"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	pebbleca "github.com/letsencrypt/pebble/v2/ca"
	pebbledb "github.com/letsencrypt/pebble/v2/db"
	pebbleva "github.com/letsencrypt/pebble/v2/va"
	pebblewfe "github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// CA is a running pebble instance.
type CA struct {
	// DirectoryURL is the ACME directory (https, on loopback).
	DirectoryURL string
	// HTTPClient trusts the directory's TLS certificate; give it to the
	// ACME client.
	HTTPClient *http.Client
	// DirectoryCert is the directory's own TLS certificate (self-signed by
	// httptest): a separate process trusts it through a CA file.
	DirectoryCert *x509.Certificate
	// Roots holds Root only: verify issued chains against it.
	Roots *x509.CertPool
	// Root is the root certificate pebble issues under (through an
	// intermediate that servers send along with the leaf).
	Root *x509.Certificate
	// Logs collects pebble's log and anything else the test writes to it
	// (an ACME client's or a node's logger, say). It is printed with
	// t.Logf when the test fails.
	Logs *LogBuffer
}

// LogBuffer is a goroutine-safe in-memory log: an io.Writer and a
// fmt.Stringer.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start runs pebble whose validation authority checks TLS-ALPN-01
// challenges against 127.0.0.1:tlsPort (the node's TLS port, which must
// already be known) and resolves domain to 127.0.0.1 with a tiny DNS
// server; other names resolve to nothing. Validation is real (no
// always-valid shortcut), immediate (no random sleep), without injected bad
// nonces and without authorization reuse: pebble's PEBBLE_* environment
// variables are set accordingly with t.Setenv.
//
// Everything is stopped by t.Cleanup, except the validation authority's
// task goroutine, which pebble provides no way to stop. When the test
// fails, the collected logs are printed.
func Start(t testing.TB, domain string, tlsPort int) *CA {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "0")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")

	logs := &LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble and other collected logs:\n%s", logs.String())
		}
	})

	dnsAddr := startDNS(t, domain)

	// Pebble wired as cmd/pebble does, with its WFE behind an httptest TLS
	// server whose certificate HTTPClient trusts.
	plog := log.New(logs, "pebble ", log.Lmicroseconds)
	db := pebbledb.NewMemoryStore()
	ca := pebbleca.New(plog, db, "", "ecdsa", 0, 1, map[string]pebbleca.Profile{
		"default": {Description: "The default profile"},
	})
	va := pebbleva.New(plog, 0, tlsPort, false, dnsAddr, db)
	wfe := pebblewfe.New(plog, db, va, ca, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewTLSServer(wfe.Handler())
	t.Cleanup(srv.Close)

	root := ca.GetRootCert(0)
	if root == nil || root.Cert == nil {
		t.Fatal("acmetest: pebble has no root certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)

	return &CA{
		DirectoryURL:  srv.URL + pebblewfe.DirectoryPath,
		HTTPClient:    srv.Client(),
		DirectoryCert: srv.Certificate(),
		Roots:         roots,
		Root:          root.Cert,
		Logs:          logs,
	}
}

// startDNS serves, over TCP on loopback (pebble's VA queries its custom
// resolver over TCP), A 127.0.0.1 for name and an empty answer for anything
// else. It returns the server's address.
func startDNS(t testing.TB, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("acmetest: listen for test DNS: %v", err)
	}
	fqdn := dns.Fqdn(name)
	started := make(chan struct{})
	srv := &dns.Server{
		Listener:          ln,
		NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			for _, q := range r.Question {
				if strings.EqualFold(q.Name, fqdn) && q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
						A:   net.IPv4(127, 0, 0, 1),
					})
				}
			}
			_ = w.WriteMsg(m)
		}),
	}
	done := make(chan struct{})
	var serveErr error
	go func() {
		defer close(done)
		serveErr = srv.ActivateAndServe()
	}()
	select {
	case <-started:
	case <-done:
		t.Fatalf("acmetest: test DNS server did not start: %v", serveErr)
	}
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return ln.Addr().String()
}
