package identity

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// LoadX509 loads a PEM certificate chain (leaf first) and its private key
// (PKCS#8, PKCS#1 or SEC1 PEM) and checks that the key matches the leaf.
// Errors name the file and say what was expected.
func LoadX509(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read key file: %w", err)
	}
	defer clear(keyPEM)
	return ParseX509(certPEM, keyPEM, certFile, keyFile)
}

// ParseX509 is LoadX509 on bytes; the names are only used in messages.
func ParseX509(certPEM, keyPEM []byte, certName, keyName string) (tls.Certificate, error) {
	var chain [][]byte
	rest := certPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return tls.Certificate{}, fmt.Errorf("%s: certificate %d does not parse: %w", certName, len(chain)+1, err)
		}
		chain = append(chain, block.Bytes)
	}
	if len(chain) == 0 {
		return tls.Certificate{}, fmt.Errorf("%s: no PEM \"CERTIFICATE\" block found; expected the leaf certificate first, then intermediates", certName)
	}
	// tls.X509KeyPair knows PKCS#8, PKCS#1 and SEC1 and checks that the key
	// matches the leaf; we only add the file names to its errors.
	var joined []byte
	for _, der := range chain {
		joined = append(joined, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	pair, err := tls.X509KeyPair(joined, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key %s with certificate %s: %w (the key must be PEM PKCS#8, PKCS#1 or SEC1 and belong to the first certificate)", keyName, certName, err)
	}
	return pair, nil
}
