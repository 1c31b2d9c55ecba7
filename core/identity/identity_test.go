package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The node key of the shared vault vectors (m/74'/0'/0'/0' of the
// "abandon … about" mnemonic).
const (
	vectorNodeSeed = "603aa5c626317fda4afd87b902e5c9de76c33f40834005245e1c5a675e92d700"
	vectorNodePub  = "e78c2766a792f09bfccb51493968ac322283e8d021a30063784d806929762ecc"
)

func vectorKey(t testing.TB) ed25519.PrivateKey {
	s, err := hex.DecodeString(vectorNodeSeed)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(s)
}

func TestRawKeyCertificateDeterministic(t *testing.T) {
	k := vectorKey(t)
	a, err := RawKeyCertificate(k)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RawKeyCertificate(vectorKey(t))
	if !bytes.Equal(a, b) {
		t.Fatal("same key gave different DER")
	}
	other := ed25519.NewKeyFromSeed(make([]byte, 32))
	c, _ := RawKeyCertificate(other)
	if bytes.Equal(a, c) {
		t.Fatal("different keys gave the same DER")
	}
	cert, err := x509.ParseCertificate(a)
	if err != nil {
		t.Fatal(err)
	}
	if cert.DNSNames[0] != RawKeySNI || cert.SerialNumber.Sign() <= 0 {
		t.Fatalf("cert fields: %v %v", cert.DNSNames, cert.SerialNumber)
	}
	if got := CertFingerprint(a); got != "ed25519:"+vectorNodePub {
		t.Fatalf("fingerprint %s", got)
	}
	if got := LeafFingerprint(cert); got != KeyFingerprint(k.Public().(ed25519.PublicKey)) {
		t.Fatalf("leaf fingerprint %s", got)
	}
}

func TestRawKeyCertificateWorksInTLS(t *testing.T) {
	srvCert, err := RawKeyTLSCertificate(vectorKey(t))
	if err != nil {
		t.Fatal(err)
	}
	cliCert, _ := RawKeyTLSCertificate(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)))
	var seenClient string
	srvConf := &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				seenClient = LeafFingerprint(cs.PeerCertificates[0])
			}
			return nil
		}}
	var seenServer string
	cliConf := &tls.Config{Certificates: []tls.Certificate{cliCert}, ServerName: RawKeySNI, MinVersion: tls.VersionTLS13,
		InsecureSkipVerify: true, // pinning is done below, as the dialer does
		VerifyConnection: func(cs tls.ConnectionState) error {
			seenServer = LeafFingerprint(cs.PeerCertificates[0])
			return nil
		}}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvConf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), cliConf)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if seenServer != "ed25519:"+vectorNodePub {
		t.Fatalf("client saw %s", seenServer)
	}
	if seenClient != KeyFingerprint(cliCert.PrivateKey.(ed25519.PrivateKey).Public().(ed25519.PublicKey)) {
		t.Fatalf("server saw %s", seenClient)
	}
}

func sha(der []byte) string {
	s := sha256.Sum256(der)
	return "SHA256:" + hex.EncodeToString(s[:])
}

func TestFingerprintOfOtherCertificates(t *testing.T) {
	// Ed25519 leaf signed by a different Ed25519 key (a CA): not raw-key.
	caPub, caKey, _ := ed25519.GenerateKey(rand.Reader)
	leafPub, _, _ := ed25519.GenerateKey(rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "leaf"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caPub, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, tmpl, ca, leafPub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if got := CertFingerprint(leafDER); got != sha(leafDER) {
		t.Errorf("CA-signed ed25519 leaf: %s", got)
	}
	// ECDSA and RSA self-signed.
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	eDER, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ek.PublicKey, ek)
	if got := CertFingerprint(eDER); got != sha(eDER) {
		t.Errorf("ecdsa: %s", got)
	}
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	rDER, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rk.PublicKey, rk)
	if got := CertFingerprint(rDER); got != sha(rDER) {
		t.Errorf("rsa: %s", got)
	}
	// A self-signed Ed25519 certificate whose signature was broken.
	good, _ := RawKeyCertificate(vectorKey(t))
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 1
	if got := CertFingerprint(bad); got != sha(bad) || strings.HasPrefix(got, "ed25519:") {
		t.Errorf("forged signature: %s", got)
	}
	if got := CertFingerprint([]byte("garbage")); got != sha([]byte("garbage")) {
		t.Errorf("garbage: %s", got)
	}
}

func TestParseFingerprint(t *testing.T) {
	up := "ed25519:" + strings.ToUpper(vectorNodePub)
	if got, err := ParseFingerprint(up); err != nil || got != "ed25519:"+vectorNodePub {
		t.Fatalf("%s %v", got, err)
	}
	for _, bad := range []string{"", "ed25519:", "ed25519:abc", "sha256:" + vectorNodePub, "SHA256:" + vectorNodePub + "00", vectorNodePub} {
		if _, err := ParseFingerprint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func writePEM(t *testing.T, dir, name, typ string, der ...[]byte) string {
	t.Helper()
	var buf bytes.Buffer
	for _, d := range der {
		_ = pem.Encode(&buf, &pem.Block{Type: typ, Bytes: d})
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadX509KeyFormats(t *testing.T) {
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)

	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k any) []byte { b, _ := x509.MarshalPKCS8PrivateKey(k); return b }
	sec1, _ := x509.MarshalECPrivateKey(ek)
	cases := []struct {
		name, typ string
		pub, key  any
		keyDER    []byte
	}{
		{"pkcs1", "RSA PRIVATE KEY", &rk.PublicKey, rk, x509.MarshalPKCS1PrivateKey(rk)},
		{"sec1", "EC PRIVATE KEY", &ek.PublicKey, ek, sec1},
		{"pkcs8-rsa", "PRIVATE KEY", &rk.PublicKey, rk, pkcs8(rk)},
		{"pkcs8-ed25519", "PRIVATE KEY", edk.Public(), edk, pkcs8(edk)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "node.test"}, DNSNames: []string{"node.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
			leafDER, err := x509.CreateCertificate(rand.Reader, tmpl, ca, c.pub, caKey)
			if err != nil {
				t.Fatal(err)
			}
			certFile := writePEM(t, dir, c.name+".crt", "CERTIFICATE", leafDER, caDER)
			keyFile := writePEM(t, dir, c.name+".key", c.typ, c.keyDER)
			pair, err := LoadX509(certFile, keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if len(pair.Certificate) != 2 || !bytes.Equal(pair.Certificate[0], leafDER) {
				t.Fatal("chain not kept leaf first")
			}
			if got := CertFingerprint(pair.Certificate[0]); got != sha(leafDER) {
				t.Fatalf("CA-issued leaf fingerprint %s", got)
			}
		})
	}
	// Key that does not belong to the leaf; file with no certificate.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(10), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	leafDER, _ := x509.CreateCertificate(rand.Reader, tmpl, ca, &ek.PublicKey, caKey)
	certFile := writePEM(t, dir, "m.crt", "CERTIFICATE", leafDER)
	wrongKey := writePEM(t, dir, "m.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk))
	if _, err := LoadX509(certFile, wrongKey); err == nil || !strings.Contains(err.Error(), "m.key") {
		t.Fatalf("mismatched key: %v", err)
	}
	if _, err := LoadX509(wrongKey, wrongKey); err == nil || !strings.Contains(err.Error(), "no PEM \"CERTIFICATE\"") {
		t.Fatalf("no certificate: %v", err)
	}
	if _, err := LoadX509(filepath.Join(dir, "missing.crt"), wrongKey); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Fatalf("missing file: %v", err)
	}
}

// FuzzCertFingerprint: any bytes a peer presents map to exactly one
// well-formed fingerprint, and only a real self-signed Ed25519 certificate
// maps into the ed25519: namespace.
func FuzzCertFingerprint(f *testing.F) {
	good, _ := RawKeyCertificate(vectorKey(f))
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, der []byte) {
		fp := CertFingerprint(der)
		if _, err := ParseFingerprint(fp); err != nil {
			t.Fatalf("ill-formed fingerprint %q", fp)
		}
		if strings.HasPrefix(fp, PrefixEd25519) {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal("ed25519 fingerprint for unparsable DER")
			}
			if err := cert.CheckSignature(x509.PureEd25519, cert.RawTBSCertificate, cert.Signature); err != nil {
				t.Fatal("ed25519 fingerprint for a certificate not signed by its key")
			}
		}
	})
}

// TestSPKIPinMatchesTheCertificate: the pin computed from a fingerprint is
// the hash of the SubjectPublicKeyInfo in the node's own certificate.
func TestSPKIPinMatchesTheCertificate(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, err := RawKeyCertificate(priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	pin, err := SPKIPin(KeyFingerprint(priv.Public().(ed25519.PublicKey)))
	if err != nil || pin != "sha256//"+base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("SPKIPin = %q, %v", pin, err)
	}
	if _, err := SPKIPin("SHA256:" + strings.Repeat("ab", 32)); err == nil {
		t.Fatal("a certificate hash gave a pin")
	}
}

// TestBrowserCertificate: the browser certificate's key is derived from
// the node key (the same pin at every start, another for another key), it
// is ECDSA P-256, and BrowserPin is the hash of its SubjectPublicKeyInfo.
func TestBrowserCertificate(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	c1, err := BrowserTLSCertificate(key)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := BrowserTLSCertificate(key)
	if !bytes.Equal(c1.Leaf.RawSubjectPublicKeyInfo, c2.Leaf.RawSubjectPublicKeyInfo) {
		t.Fatal("two browser certificates of one node key carry different keys")
	}
	if _, ok := c1.Leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Fatalf("browser certificate key %T", c1.Leaf.PublicKey)
	}
	sum := sha256.Sum256(c1.Leaf.RawSubjectPublicKeyInfo)
	if pin, err := BrowserPin(key); err != nil || pin != "sha256//"+base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("BrowserPin = %q, %v", pin, err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if p1, _ := BrowserPin(key); func() bool { p2, _ := BrowserPin(other); return p1 == p2 }() {
		t.Fatal("two node keys gave one browser pin")
	}
	if err := c1.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
}
