package pluginhost

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"alknet.dev/alknet/core/identity"
)

// Signature is a publisher's Ed25519 signature over a plugin binary's
// SHA-256 digest (the 32 raw bytes), as written by `alknet plugin sign`.
type Signature struct {
	Publisher string `json:"publisher"` // ed25519:<hex public key>
	SHA256    string `json:"sha256"`
	Signature string `json:"signature"` // base64
}

// Sign signs digest (hex) with key.
func Sign(key ed25519.PrivateKey, digestHex string) (Signature, error) {
	d, err := hex.DecodeString(digestHex)
	if err != nil || len(d) != 32 {
		return Signature{}, fmt.Errorf("sign: %q is not a SHA-256 digest", digestHex)
	}
	pub := key.Public().(ed25519.PublicKey)
	return Signature{Publisher: identity.KeyFingerprint(pub), SHA256: digestHex, Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, d))}, nil
}

// ReadSignature parses a signature file.
func ReadSignature(path string) (Signature, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Signature{}, err
	}
	var s Signature
	if err := json.Unmarshal(b, &s); err != nil {
		return Signature{}, fmt.Errorf("signature %s: %w", path, err)
	}
	return s, nil
}

// Verify checks the signature against a binary digest and, when trusted is
// not empty, that the publisher is one of them. It returns the publisher.
func (s Signature) Verify(digestHex string, trusted []string) (string, error) {
	if !strings.EqualFold(s.SHA256, digestHex) {
		return "", fmt.Errorf("signature is for sha256 %s, the binary is %s", s.SHA256, digestHex)
	}
	hexKey, ok := strings.CutPrefix(s.Publisher, identity.PrefixEd25519)
	pub, err := hex.DecodeString(hexKey)
	if !ok || err != nil || len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("signature publisher %q is not ed25519:<hex>", s.Publisher)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	d, _ := hex.DecodeString(digestHex)
	if err != nil || !ed25519.Verify(pub, d, sig) {
		return "", fmt.Errorf("signature by %s does not verify", s.Publisher)
	}
	if len(trusted) > 0 && !slices.Contains(trusted, s.Publisher) {
		return "", fmt.Errorf("signed by %s, which is not in plugins.trusted_publishers", s.Publisher)
	}
	return s.Publisher, nil
}
