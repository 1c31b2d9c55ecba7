package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

// identity builds the TLS identity of the configured mode. It returns the
// certificate source, the fingerprint to print, and for acme the background
// loop to run.
func (n *Node) identity(cfg *config.Config) (endpoint.CertSource, string, func(context.Context) error, error) {
	switch cfg.TLS.Mode {
	case config.TLSRawKey:
		key, err := n.rawKey(cfg)
		if err != nil {
			return nil, "", nil, err
		}
		cert, err := identity.RawKeyTLSCertificate(key.Signer())
		if err != nil {
			return nil, "", nil, err
		}
		browser, err := identity.BrowserTLSCertificate(key.Signer())
		if err != nil {
			return nil, "", nil, err
		}
		return rawKeyCerts{raw: cert, browser: browser}, identity.KeyFingerprint(key.Public()), nil, nil
	case config.TLSX509:
		cert, err := identity.LoadX509(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			return nil, "", nil, fmt.Errorf("tls.mode = \"x509\": %w", err)
		}
		return staticCert{cert}, identity.CertFingerprint(cert.Certificate[0]), nil, nil
	case config.TLSSelfSigned:
		cert, err := selfSigned()
		if err != nil {
			return nil, "", nil, err
		}
		n.log.Warn("tls.mode = \"self_signed\" is for development: the certificate is new at every start, so peers cannot pin it")
		return staticCert{cert}, identity.CertFingerprint(cert.Certificate[0]), nil, nil
	case config.TLSACME:
		ac := cfg.TLS.ACME
		cache := ac.CacheDir
		if cache == "" {
			cache = filepath.Join(n.opts.Dir.Path, "acme")
		}
		var hc *http.Client
		if ac.CAFile != "" {
			pemBytes, err := os.ReadFile(ac.CAFile)
			if err != nil {
				return nil, "", nil, fmt.Errorf("tls.acme.ca_file: %w", err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(pemBytes) {
				return nil, "", nil, fmt.Errorf("tls.acme.ca_file %s: no PEM certificate found", ac.CAFile)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
			hc = &http.Client{Transport: tr, Timeout: time.Minute}
		}
		m, err := identity.NewACME(identity.ACMEConfig{Domains: ac.Domains, CacheDir: cache, DirectoryURL: ac.Directory, Email: ac.Email, HTTPClient: hc, Logger: n.log.Named("acme")})
		if err != nil {
			return nil, "", nil, fmt.Errorf("tls.mode = \"acme\": %w", err)
		}
		return acmeCerts{m: m, fallback: ac.Domains[0], domains: ac.Domains}, "acme:" + ac.Domains[0], m.Run, nil
	}
	return nil, "", nil, fmt.Errorf("tls.mode %q is not supported", cfg.TLS.Mode)
}

// rawKey is the node key: from tls.key_file (a 32-byte seed, raw or hex,
// mode 0600) or from the vault.
func (n *Node) rawKey(cfg *config.Config) (vault.PrivateKey, error) {
	if cfg.TLS.KeyFile != "" {
		k, err := vault.ReadSeedFile(cfg.TLS.KeyFile)
		if err != nil {
			return vault.PrivateKey{}, fmt.Errorf("tls.key_file: %w", err)
		}
		return k, nil
	}
	if n.opts.Vault == nil {
		return vault.PrivateKey{}, errors.New("no vault and no tls.key_file: the node has no key")
	}
	return n.opts.Vault.NodeKey()
}

type staticCert struct{ c tls.Certificate }

func (s staticCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.c, nil }

// rawKeyCerts serves the raw-key certificate to every client that can
// verify an Ed25519 signature (alknet, curl, OpenSSH's tools, Go, Node) and
// the node's browser certificate — ECDSA P-256, its key derived from the
// node key — to those that cannot: browsers offer no Ed25519 scheme in TLS.
type rawKeyCerts struct{ raw, browser tls.Certificate }

func (r rawKeyCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.SupportsCertificate(&r.raw) == nil {
		return &r.raw, nil
	}
	return &r.browser, nil
}

// acmeCerts serves the ACME certificates; a hello for a name that is not
// configured (a raw-key style dial with SNI "alknet", or an IP) gets the
// first domain's certificate rather than a failed handshake.
type acmeCerts struct {
	m        *identity.ACME
	fallback string
	domains  []string
}

func (c acmeCerts) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !slices.Contains(hello.SupportedProtos, identity.ACMETLSALPN) && !slices.Contains(c.domains, hello.ServerName) {
		h := *hello
		h.ServerName = c.fallback
		hello = &h
	}
	return c.m.GetCertificate(hello)
}

func (c acmeCerts) ChallengePending(hello *tls.ClientHelloInfo) bool {
	return c.m.ChallengePending(hello)
}

func selfSigned() (tls.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "alknet self-signed " + host},
		DNSNames: []string{host, "localhost", identity.RawKeySNI}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}, nil
}

// dialPeer dials another node for a plugin (Host.DialPeer), presenting
// this node's vault identity, and pinned: by the fingerprint in target
// ("FINGERPRINT@host:port"), else by known_peers, else — for a node with
// a CA-issued certificate — by WebPKI; never trust on first use.
func (n *Node) dialPeer(ctx context.Context, target, alpn string) (endpoint.Conn, error) {
	fp, addr, err := dial.ParseTarget(target)
	if err != nil {
		return nil, err
	}
	o := dial.Options{ALPN: alpn, Peer: fp, KnownPeers: dial.OpenKnownPeers(n.opts.Dir.KnownPeersPath())}
	if key, err := n.rawKey(n.cfg.Load()); err == nil {
		if cert, err := identity.RawKeyTLSCertificate(key.Signer()); err == nil {
			o.ClientCert = &cert
		}
	}
	return dial.Dial(ctx, addr, o)
}
