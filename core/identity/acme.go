package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/idna"
)

// ACMETLSALPN is the ALPN protocol a CA's validator offers, alone, when it
// checks a TLS-ALPN-01 challenge (RFC 8737 §6.2). A listener that serves
// the acme identity mode must negotiate it for such handshakes.
const ACMETLSALPN = "acme-tls/1"

// Retry delays for Run: the first retry waits acmeRetryMin, each further
// one doubles up to acmeRetryMax. They are kept well apart because a public
// CA limits failed validations per name and account (Let's Encrypt: 5 per
// hour). ACMEConfig.RetryMin and RetryMax override them (tests use that to
// retry quickly against a local CA).
const (
	acmeRetryMin = 30 * time.Second
	acmeRetryMax = time.Hour
)

// ACMEConfig configures the acme TLS identity mode.
type ACMEConfig struct {
	// Domains are the names to obtain certificates for (required, at least
	// one). Each must be a plain DNS name with at least two labels: no
	// wildcards, no IP addresses (TLS-ALPN-01 validates neither here).
	Domains []string
	// CacheDir is where the ACME account key and the certificates are
	// cached (required). It is created with mode 0700 if missing; it holds
	// private keys, so keep it private.
	CacheDir string
	// DirectoryURL is the ACME directory to use; empty means Let's Encrypt
	// production (acme.LetsEncryptURL). It must be an https URL.
	DirectoryURL string
	// Email is an optional contact address registered with the account.
	Email string
	// HTTPClient is an optional client for talking to the ACME directory,
	// e.g. one that trusts a private CA's root. Nil means http.DefaultClient.
	HTTPClient *http.Client
	// Logger receives progress and failure messages; nil discards them.
	Logger hclog.Logger
	// RetryMin is how long Run waits before retrying a failed attempt to
	// obtain a certificate; each further retry doubles the wait (plus up to
	// 25% jitter) up to RetryMax. Zero means the defaults, 30 s and 1 h,
	// which keep well under a public CA's limit on failed validations (Let's
	// Encrypt: 5 per name and account per hour); shorten them only for a
	// private or test CA. A RetryMax below RetryMin is raised to RetryMin.
	RetryMin, RetryMax time.Duration
}

// ACME is the acme TLS identity mode: it obtains certificates for the
// configured domains from an ACME CA, answering TLS-ALPN-01 challenges on
// the node's own TLS port, and renews them before they expire. It is a thin
// wrapper around golang.org/x/crypto/acme/autocert.Manager, which does the
// protocol, the caching and the renewals.
//
// Wire it into a listener with GetCertificate and ChallengePending: when
// ChallengePending reports true for a ClientHello, the handshake must
// negotiate ACMETLSALPN and be closed afterwards; otherwise it is an
// ordinary connection.
type ACME struct {
	m       *autocert.Manager
	domains []string // normalised (A-label, lower case, no trailing dot)
	log     hclog.Logger

	// Retry delays used by Run (ACMEConfig.RetryMin/RetryMax, defaulting to
	// acmeRetryMin/acmeRetryMax).
	retryMin, retryMax time.Duration

	mu    sync.Mutex
	ready map[string]bool
}

// NewACME validates cfg and returns the identity mode ready to Run. It does
// no network I/O; it only creates cfg.CacheDir if it does not exist.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if len(cfg.Domains) == 0 {
		return nil, errors.New("acme identity: no domains configured: set at least one domain name to obtain a certificate for")
	}
	domains := make([]string, 0, len(cfg.Domains))
	for _, d := range cfg.Domains {
		n, err := normaliseACMEDomain(d)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(domains, n) {
			domains = append(domains, n)
		}
	}

	if strings.TrimSpace(cfg.CacheDir) == "" {
		return nil, errors.New("acme identity: no cache directory configured: set a directory to keep the ACME account key and certificates in (without one every restart would request new certificates and hit the CA's rate limits)")
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("acme identity: create cache directory %q: %w (check the path and its permissions)", cfg.CacheDir, err)
	}
	fi, err := os.Stat(cfg.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("acme identity: inspect cache directory %q: %w", cfg.CacheDir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("acme identity: cache path %q is not a directory: point the cache at a directory", cfg.CacheDir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("acme cache directory is accessible by other users; it holds private keys, consider chmod 700",
			"dir", cfg.CacheDir, "mode", fi.Mode().Perm().String())
	}

	dirURL := cfg.DirectoryURL
	if dirURL == "" {
		dirURL = acme.LetsEncryptURL
	}
	u, err := url.Parse(dirURL)
	if err != nil {
		return nil, fmt.Errorf("acme identity: parse directory URL %q: %w", dirURL, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("acme identity: directory URL %q is not an https URL: ACME requires https (e.g. %s)", dirURL, acme.LetsEncryptURL)
	}

	if cfg.RetryMin < 0 || cfg.RetryMax < 0 {
		return nil, fmt.Errorf("acme identity: negative retry delay (min %s, max %s): give positive durations, or zero for the defaults", cfg.RetryMin, cfg.RetryMax)
	}
	retryMin, retryMax := cfg.RetryMin, cfg.RetryMax
	if retryMin == 0 {
		retryMin = acmeRetryMin
	}
	if retryMax == 0 {
		retryMax = max(acmeRetryMax, retryMin)
	}
	retryMax = max(retryMax, retryMin)

	email := strings.TrimPrefix(strings.TrimSpace(cfg.Email), "mailto:")
	if email != "" && !strings.Contains(email, "@") {
		return nil, fmt.Errorf("acme identity: contact email %q is not an email address: give user@example.com or leave it empty", cfg.Email)
	}

	a := &ACME{
		domains:  domains,
		log:      log,
		retryMin: retryMin,
		retryMax: retryMax,
		ready:    make(map[string]bool),
	}
	a.m = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(domains...),
		Cache:      autocert.DirCache(cfg.CacheDir),
		Email:      email,
		Client:     &acme.Client{DirectoryURL: dirURL, HTTPClient: cfg.HTTPClient},
	}
	return a, nil
}

// normaliseACMEDomain turns a configured name into the form autocert uses
// (A-label, lower case, no trailing dot) and rejects names it cannot serve.
func normaliseACMEDomain(d string) (string, error) {
	n := strings.TrimSuffix(strings.TrimSpace(d), ".")
	if n == "" {
		return "", errors.New("acme identity: empty domain name in the domain list: remove it or give a DNS name")
	}
	if strings.Contains(n, "*") {
		return "", fmt.Errorf("acme identity: wildcard domain %q cannot be validated with TLS-ALPN-01: list each name explicitly", d)
	}
	if net.ParseIP(n) != nil {
		return "", fmt.Errorf("acme identity: %q is an IP address: give a DNS name that resolves to this node", d)
	}
	a, err := idna.Lookup.ToASCII(n)
	if err != nil {
		return "", fmt.Errorf("acme identity: invalid domain name %q: %w", d, err)
	}
	if !strings.Contains(a, ".") {
		return "", fmt.Errorf("acme identity: domain %q has a single label: give a fully qualified name such as node.example.com", d)
	}
	return a, nil
}

// GetCertificate is meant for tls.Config.GetCertificate: it serves the
// certificates of the configured domains (obtaining one on demand if Run has
// not yet done so) and, to a TLS-ALPN-01 validator, the pending challenge
// certificate.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := a.m.GetCertificate(ecdsaHintForTLS13(hello))
	if err != nil {
		return nil, err
	}
	if !isTokenHello(hello) {
		if n, nerr := idna.Lookup.ToASCII(strings.TrimSuffix(hello.ServerName, ".")); nerr == nil {
			a.markReady(n)
		}
	}
	return cert, nil
}

// ChallengePending reports whether hello comes from a TLS-ALPN-01 validator
// for a challenge that is pending right now: hello offers ACMETLSALPN as its
// only protocol (as RFC 8737 §3 requires of validators) and a challenge
// certificate exists for hello.ServerName. A listener that sees true must
// negotiate ACMETLSALPN and serve GetCertificate's certificate.
func (a *ACME) ChallengePending(hello *tls.ClientHelloInfo) bool {
	if hello == nil || !isTokenHello(hello) {
		return false
	}
	// For a token hello autocert only looks up the pending challenge
	// certificate (memory, then cache) and errors when there is none.
	_, err := a.m.GetCertificate(hello)
	return err == nil
}

// isTokenHello is autocert's test for a TLS-ALPN-01 validation hello.
func isTokenHello(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ACMETLSALPN
}

// ecdsaHintForTLS13 works around autocert deciding between ECDSA and RSA
// certificates by TLS 1.2 cipher suites only: a client that speaks only
// TLS 1.3 (every QUIC client) lists none, and autocert would obtain and
// serve a second, RSA, certificate for it. In TLS 1.3 the cipher suite does
// not constrain the certificate type, so for such a hello an ECDSA suite is
// added to a copy; autocert still checks the signature schemes and curves.
func ecdsaHintForTLS13(hello *tls.ClientHelloInfo) *tls.ClientHelloInfo {
	if !slices.Contains(hello.SupportedVersions, tls.VersionTLS13) {
		return hello
	}
	for _, s := range hello.CipherSuites {
		if s == tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {
			return hello
		}
	}
	h := *hello
	h.CipherSuites = append(slices.Clip(hello.CipherSuites), tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
	return &h
}

// Run obtains a certificate for every configured domain right away, so the
// first real client does not wait for issuance, then blocks until ctx is
// done. A failed attempt is logged with its domain and retried with
// exponential backoff; the manager renews certificates by itself later, on
// the handshakes that use them. Run returns nil when ctx is cancelled; an
// issuance then in flight is abandoned (autocert bounds it to 5 minutes).
func (a *ACME) Run(ctx context.Context) error {
	for _, d := range a.domains {
		go a.obtain(ctx, d)
	}
	<-ctx.Done()
	return nil
}

// obtain gets the certificate for domain, retrying until it succeeds or ctx
// is done.
func (a *ACME) obtain(ctx context.Context, domain string) {
	delay := a.retryMin
	for attempt := 1; ; attempt++ {
		start := time.Now()
		_, err := a.m.GetCertificate(syntheticHello(domain))
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			a.markReady(domain)
			a.log.Info("acme certificate ready", "domain", domain, "attempt", attempt, "took", time.Since(start).Round(time.Millisecond))
			return
		}
		// Up to +25% jitter so several nodes or domains do not retry in step.
		wait := delay + rand.N(delay/4+1)
		a.log.Error("acme: obtaining certificate failed; check that the name resolves to this node and its TLS port is reachable from the CA",
			"domain", domain, "attempt", attempt, "retry_in", wait.Round(time.Second), "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, a.retryMax)
	}
}

// syntheticHello is the ClientHello Run uses to make the manager obtain a
// domain's certificate: a modern client that supports ECDSA P-256, so the
// certificate obtained is the one real clients are served.
func syntheticHello(domain string) *tls.ClientHelloInfo {
	return &tls.ClientHelloInfo{
		ServerName:        domain,
		CipherSuites:      []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256, tls.PSSWithSHA256},
		SupportedCurves:   []tls.CurveID{tls.X25519, tls.CurveP256},
		SupportedVersions: []uint16{tls.VersionTLS13},
	}
}

func (a *ACME) markReady(domain string) {
	a.mu.Lock()
	a.ready[domain] = true
	a.mu.Unlock()
}

// Ready reports whether a certificate for domain has been obtained (by Run
// or by a handshake) since this ACME was created.
func (a *ACME) Ready(domain string) bool {
	n, err := idna.Lookup.ToASCII(strings.TrimSuffix(strings.TrimSpace(domain), "."))
	if err != nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ready[n]
}
