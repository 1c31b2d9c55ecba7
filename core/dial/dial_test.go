package dial_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

type staticCert struct{ c tls.Certificate }

func (s staticCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.c, nil }

func serve(t *testing.T, cert tls.Certificate) *endpoint.Endpoint {
	t.Helper()
	ep := endpoint.New(endpoint.Options{Listen: "127.0.0.1:0", Certs: staticCert{cert}, DrainTimeout: 200 * time.Millisecond})
	if err := ep.Register(endpoint.EchoALPN, "test", endpoint.Echo()); err != nil {
		t.Fatal(err)
	}
	if err := ep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.Shutdown)
	return ep
}

func rawKeyNode(t *testing.T) (*endpoint.Endpoint, string) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := identity.RawKeyTLSCertificate(k)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, cert), identity.KeyFingerprint(k.Public().(ed25519.PublicKey))
}

func try(t *testing.T, addr string, o dial.Options) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o.ALPN = endpoint.EchoALPN
	c, err := dial.Dial(ctx, addr, o)
	if err != nil {
		return err
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStream(ctx)
	if err != nil {
		return err
	}
	_, _ = s.Write([]byte("ping"))
	_ = s.CloseWrite()
	b, err := io.ReadAll(s)
	if err != nil {
		return err
	}
	if string(b) != "ping" {
		t.Fatalf("echo %q", b)
	}
	return nil
}

func TestPinnedFingerprint(t *testing.T) {
	ep, fp := rawKeyNode(t)
	addr := ep.UDPAddr().String()
	for _, tcp := range []bool{false, true} {
		a := addr
		if tcp {
			a = ep.TCPAddr().String()
		}
		if err := try(t, a, dial.Options{Peer: fp, TCP: tcp}); err != nil {
			t.Fatalf("tcp=%v correct pin: %v", tcp, err)
		}
		wrong := "ed25519:" + strings.Repeat("0", 64)
		err := try(t, a, dial.Options{Peer: wrong, TCP: tcp})
		var me *dial.MismatchError
		if !errors.As(err, &me) || !strings.Contains(err.Error(), fp) || !strings.Contains(err.Error(), wrong) {
			t.Fatalf("tcp=%v wrong pin: %v", tcp, err)
		}
	}
}

func TestNoPinRawKeyFailsClosed(t *testing.T) {
	ep, fp := rawKeyNode(t)
	err := try(t, ep.UDPAddr().String(), dial.Options{})
	var ue *dial.UntrustedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), fp) || !strings.Contains(err.Error(), "--peer "+fp) || !strings.Contains(err.Error(), "--trust-on-first-use") {
		t.Fatalf("no pin: %v", err)
	}
}

func TestTrustOnFirstUseThenChangeRefused(t *testing.T) {
	kp := dial.OpenKnownPeers(filepath.Join(t.TempDir(), "known_peers"))
	ep, fp := rawKeyNode(t)
	addr := ep.UDPAddr().String()
	var recorded string
	if err := try(t, addr, dial.Options{KnownPeers: kp, TrustOnFirstUse: true, OnRecord: func(a, f string) { recorded = a + " " + f }}); err != nil {
		t.Fatal(err)
	}
	if recorded != addr+" "+fp {
		t.Fatalf("recorded %q", recorded)
	}
	b, _ := os.ReadFile(kp.Path())
	if string(b) != addr+" "+fp+"\n" {
		t.Fatalf("known_peers: %q", b)
	}
	// Known now: no TOFU flag needed.
	if err := try(t, addr, dial.Options{KnownPeers: kp}); err != nil {
		t.Fatalf("known peer: %v", err)
	}
	// Another node takes over the address: refused, naming both.
	ep.Shutdown()
	_, k2, _ := ed25519.GenerateKey(rand.Reader)
	cert2, _ := identity.RawKeyTLSCertificate(k2)
	fp2 := identity.KeyFingerprint(k2.Public().(ed25519.PublicKey))
	ep2 := endpoint.New(endpoint.Options{Listen: addr, Certs: staticCert{cert2}})
	_ = ep2.Register(endpoint.EchoALPN, "test", endpoint.Echo())
	if err := ep2.Start(); err != nil {
		t.Skipf("could not rebind %s: %v", addr, err)
	}
	defer ep2.Shutdown()
	err := try(t, addr, dial.Options{KnownPeers: kp, TrustOnFirstUse: true})
	var me *dial.MismatchError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), fp) || !strings.Contains(err.Error(), fp2) || !strings.Contains(err.Error(), "known_peers") {
		t.Fatalf("changed identity: %v", err)
	}
	if b2, _ := os.ReadFile(kp.Path()); string(b2) != string(b) {
		t.Fatal("known_peers changed after a refused identity change")
	}
}

// TestX509FileModeWithGeneratedCA: a node with a CA-issued certificate
// loaded from PEM files is verified by WebPKI rules with no pin, and
// refused by a client that does not trust the CA.
func TestX509FileModeWithGeneratedCA(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Root"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, _ := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	keyDER, _ := x509.MarshalECPrivateKey(leafKey)
	certFile, keyFile := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, err := identity.LoadX509(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ep := serve(t, cert)
	port := ep.UDPAddr().String()[strings.LastIndex(ep.UDPAddr().String(), ":"):]
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if err := try(t, "localhost"+port, dial.Options{RootCAs: roots}); err != nil {
		t.Fatalf("CA-verified dial: %v", err)
	}
	err = try(t, "localhost"+port, dial.Options{RootCAs: x509.NewCertPool()})
	var ue *dial.UntrustedError
	sum := identity.CertFingerprint(leafDER)
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), sum) {
		t.Fatalf("untrusted CA: %v", err)
	}
	// Pinning the SHA256 fingerprint also works without the CA.
	if err := try(t, ep.UDPAddr().String(), dial.Options{Peer: sum, RootCAs: x509.NewCertPool()}); err != nil {
		t.Fatalf("pinned x509: %v", err)
	}
}

func TestParseKnownPeers(t *testing.T) {
	fp := "ed25519:" + strings.Repeat("ab", 32)
	m, err := dial.ParseKnownPeers([]byte("# comment\n\nhost.example:4433 " + fp + "\n[::1]:4433 " + strings.ToUpper(fp[8:10]) + "\n"))
	if err == nil {
		t.Fatalf("bad fingerprint accepted: %v", m)
	}
	m, err = dial.ParseKnownPeers([]byte("# c\nhost.example:4433 " + fp + "\n[::1]:4433 " + fp + "\n"))
	if err != nil || m["host.example:4433"] != fp || m["[::1]:4433"] != fp {
		t.Fatalf("%v %v", m, err)
	}
	if _, err := dial.ParseKnownPeers([]byte("noport " + fp)); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("no port: %v", err)
	}
}

func FuzzParseKnownPeers(f *testing.F) {
	fp := "ed25519:" + strings.Repeat("ab", 32)
	f.Add([]byte("h:1 " + fp + "\n"))
	f.Add([]byte("# x\n[::1]:4433 SHA256:" + strings.Repeat("0", 64)))
	f.Add([]byte("a b c\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dial.ParseKnownPeers(b)
		if err != nil {
			return
		}
		for addr, fp := range m {
			if _, err := identity.ParseFingerprint(fp); err != nil || strings.ContainsAny(addr, " \t\n") {
				t.Fatalf("accepted %q %q", addr, fp)
			}
		}
	})
}

func TestParseTarget(t *testing.T) {
	fp, addr, err := dial.ParseTarget("ed25519:ab12@node.example")
	if err != nil || fp != "ed25519:ab12" || addr != "node.example:4433" {
		t.Fatalf("fp %q addr %q err %v", fp, addr, err)
	}
	if fp, addr, err := dial.ParseTarget("10.0.0.1:5000"); err != nil || fp != "" || addr != "10.0.0.1:5000" {
		t.Fatalf("no fingerprint: %q %q %v", fp, addr, err)
	}
	for _, bad := range []string{"@host", "nofp@host", "ed25519:ab@"} {
		if _, _, err := dial.ParseTarget(bad); err == nil {
			t.Errorf("dial.ParseTarget(%q) accepted", bad)
		}
	}
}
