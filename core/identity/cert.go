package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// RawKeySNI is the server name clients send when dialing a raw-key node.
const RawKeySNI = "alknet"

// Fixed validity of raw-key certificates: no clock is read, so the DER is
// the same on every run. Peers pin the key, never the dates.
var (
	rawKeyNotBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	rawKeyNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// zeroReader satisfies x509.CreateCertificate's rand argument. Ed25519
// signing is deterministic and every randomised field is set explicitly,
// so nothing is read from it; if a future Go version did read from it, the
// output would still be deterministic rather than silently random.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// RawKeyCertificate builds the deterministic self-signed certificate that
// carries key (docs/architecture.md D2): serial, subject, validity and key identifiers are all
// functions of the public key, so the same key gives byte-identical DER.
func RawKeyCertificate(key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("raw-key certificate: invalid ed25519 private key")
	}
	pub := key.Public().(ed25519.PublicKey)
	sum := sha256.Sum256(pub)
	serial := new(big.Int).SetBytes(sum[:16]) // 128 bits, positive
	serial.SetBit(serial, 127, 0)
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	fp := KeyFingerprint(pub)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "alknet " + fp[:len(PrefixEd25519)+16]},
		NotBefore:             rawKeyNotBefore,
		NotAfter:              rawKeyNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{RawKeySNI},
		SubjectKeyId:          sum[:20],
		AuthorityKeyId:        sum[:20],
	}
	der, err := x509.CreateCertificate(zeroReader{}, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("create raw-key certificate for %s: %w", fp, err)
	}
	return der, nil
}

// RawKeyTLSCertificate wraps RawKeyCertificate as a tls.Certificate.
func RawKeyTLSCertificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	der, err := RawKeyCertificate(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse raw-key certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
