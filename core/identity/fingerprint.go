package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// Fingerprint prefixes (docs/spec/identity.md §3).
const (
	PrefixEd25519 = "ed25519:"
	PrefixSHA256  = "SHA256:"
)

// KeyFingerprint is the fingerprint of a raw Ed25519 public key:
// "ed25519:" + 64 lowercase hex digits.
func KeyFingerprint(pub ed25519.PublicKey) string {
	return PrefixEd25519 + hex.EncodeToString(pub)
}

// CertFingerprint returns the peer identity string of a DER leaf
// certificate. A leaf whose key is Ed25519 and whose signature verifies under
// that same key is the raw-key emulation and yields KeyFingerprint of the
// key; anything else — including bytes that do not parse — yields
// "SHA256:" + hex(sha256(der)). It never fails, so untrusted input always
// maps to some string that can only equal a configured fingerprint if the
// peer really holds it.
func CertFingerprint(der []byte) string {
	if cert, err := x509.ParseCertificate(der); err == nil {
		if fp, ok := selfSignedEd25519(cert); ok {
			return fp
		}
	}
	sum := sha256.Sum256(der)
	return PrefixSHA256 + hex.EncodeToString(sum[:])
}

// LeafFingerprint is CertFingerprint for an already parsed certificate.
func LeafFingerprint(cert *x509.Certificate) string {
	if fp, ok := selfSignedEd25519(cert); ok {
		return fp
	}
	sum := sha256.Sum256(cert.Raw)
	return PrefixSHA256 + hex.EncodeToString(sum[:])
}

func selfSignedEd25519(cert *x509.Certificate) (string, bool) {
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok || cert.SignatureAlgorithm != x509.PureEd25519 {
		return "", false
	}
	// CheckSignatureFrom would insist on the CA flag; the raw-key emulation
	// only needs proof that the certificate was signed by its own key.
	if err := cert.CheckSignature(x509.PureEd25519, cert.RawTBSCertificate, cert.Signature); err != nil {
		return "", false
	}
	return KeyFingerprint(pub), true
}

// ParseFingerprint validates a fingerprint string as given by a user (flag,
// config, known_peers) and returns it in canonical form (lowercase hex).
func ParseFingerprint(s string) (string, error) {
	var prefix, hexpart string
	switch {
	case strings.HasPrefix(s, PrefixEd25519):
		prefix, hexpart = PrefixEd25519, s[len(PrefixEd25519):]
	case strings.HasPrefix(s, PrefixSHA256):
		prefix, hexpart = PrefixSHA256, s[len(PrefixSHA256):]
	default:
		return "", fmt.Errorf("fingerprint %q: want ed25519:<64 hex> or SHA256:<64 hex> (see `alknet id`)", s)
	}
	b, err := hex.DecodeString(hexpart)
	if err != nil || len(b) != 32 {
		return "", fmt.Errorf("fingerprint %q: want 64 hexadecimal digits after %q", s, prefix)
	}
	return prefix + hex.EncodeToString(b), nil
}

// ed25519SPKIPrefix starts the DER SubjectPublicKeyInfo of every Ed25519
// key; the 32-byte key follows it (RFC 8410).
var ed25519SPKIPrefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}

// SPKIPin is the pin of an ed25519: fingerprint as HTTP tools take it:
// "sha256//" and the base64 SHA-256 of the key's SubjectPublicKeyInfo
// (curl --pinnedpubkey; Chromium's --ignore-certificate-errors-spki-list
// takes the part after "sha256//").
func SPKIPin(fp string) (string, error) {
	fp, err := ParseFingerprint(fp)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(fp, PrefixEd25519) {
		return "", fmt.Errorf("fingerprint %q: a pin needs the key itself (ed25519:…), not a certificate hash", fp)
	}
	key, _ := hex.DecodeString(fp[len(PrefixEd25519):])
	sum := sha256.Sum256(append(append([]byte(nil), ed25519SPKIPrefix...), key...))
	return "sha256//" + base64.StdEncoding.EncodeToString(sum[:]), nil
}
