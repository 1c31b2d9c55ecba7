package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"net"
)

// browserKeyInfo names what the browser key is derived for (HKDF info).
const browserKeyInfo = "alknet browser certificate P-256 v1"

// BrowserKey is the ECDSA P-256 key a raw-key node presents to clients
// that cannot verify Ed25519 certificates — browsers: Chromium and Firefox
// offer no Ed25519 signature scheme in TLS. It is derived from the node key
// (HKDF-SHA256 of its seed), so it, and the pin of the certificate that
// carries it, are the same at every start (docs/spec/identity.md).
func BrowserKey(key ed25519.PrivateKey) (*ecdsa.PrivateKey, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("browser key: invalid ed25519 private key")
	}
	for i := 0; i < 16; i++ { // a scalar ≥ the group order is rare (< 2^-32): try the next
		d, err := hkdf.Key(sha256.New, key.Seed(), nil, fmt.Sprintf("%s %d", browserKeyInfo, i), 32)
		if err != nil {
			return nil, err
		}
		if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d); err == nil {
			return k, nil
		}
	}
	return nil, errors.New("browser key: no valid P-256 scalar derived")
}

// BrowserTLSCertificate is the self-signed certificate carrying
// BrowserKey, for localhost, 127.0.0.1 and ::1 (a browser given the pin
// trusts it under any name). ECDSA signatures are randomised, so the DER
// differs between starts; the key, and so the pin, does not.
func BrowserTLSCertificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	bk, err := BrowserKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	spki, err := x509.MarshalPKIXPublicKey(&bk.PublicKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	sum := sha256.Sum256(spki)
	serial := new(big.Int).SetBytes(sum[:16])
	serial.SetBit(serial, 127, 0)
	if serial.Sign() == 0 {
		serial.SetInt64(1)
	}
	fp := KeyFingerprint(key.Public().(ed25519.PublicKey))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "alknet " + fp[:len(PrefixEd25519)+16] + " (browsers)"},
		NotBefore:             rawKeyNotBefore,
		NotAfter:              rawKeyNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost", RawKeySNI},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		SubjectKeyId:          sum[:20],
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &bk.PublicKey, bk)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create the browser certificate for %s: %w", fp, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: bk, Leaf: leaf}, nil
}

// BrowserPin is the pin of the browser certificate of the node whose key
// is key: "sha256//" and the base64 SHA-256 of its SubjectPublicKeyInfo
// (Chromium's --ignore-certificate-errors-spki-list takes the part after
// "sha256//").
func BrowserPin(key ed25519.PrivateKey) (string, error) {
	bk, err := BrowserKey(key)
	if err != nil {
		return "", err
	}
	spki, err := x509.MarshalPKIXPublicKey(&bk.PublicKey)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(spki)
	return "sha256//" + base64.StdEncoding.EncodeToString(sum[:]), nil
}
