// Package identity turns keys into TLS identities and TLS identities into
// peer identity strings (docs/spec/identity.md §2–§3, docs/architecture.md D2).
//
// Go's TLS stack has no RFC 7250 raw public keys, so a node presents a
// deterministic self-signed X.509 certificate that carries its Ed25519 key,
// and peers pin the key rather than the certificate: the fingerprint of such
// a leaf is "ed25519:<hex of the public key>". Any other leaf (CA-issued,
// ACME, RSA/ECDSA self-signed) is identified by "SHA256:<hex of the DER>".
package identity
