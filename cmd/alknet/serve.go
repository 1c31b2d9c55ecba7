package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/diag"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/pluginhost"
	"alknet.dev/alknet/core/vault"
)

// pidFileName is where a serving node records its pid, so that `alknet
// peers` / `alknet apikey` can ask it to reload.
const pidFileName = "alknet.pid"

func (a *app) serveCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the node: QUIC on UDP and TLS on TCP, same port, protocols by ALPN",
		Long: `Serve the node. With no configuration at all it creates its data directory
and vault on first run (embedded default, D11), prints its dial string, and
serves every registered ALPN on UDP and TCP port 4433.

Signals: SIGHUP reloads the dynamic configuration (auth peers and API keys,
limits) from the config file and <data-dir>/auth.json — a bad file is rejected
whole and the old configuration stays; SIGINT/SIGTERM drain connections for up
to drain_timeout, then close the rest with "shutdown" and exit 0.`,
		Example: "  alknet serve\n  alknet serve --listen 127.0.0.1:0 --data-dir /tmp/node\n  alknet serve --config /etc/alknet/alknet.toml",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return a.serve(cmd.Context()) },
	}
	f := c.Flags()
	f.String("listen", "", "UDP+TCP listen address (default 0.0.0.0:4433; port 0 picks one)")
	f.Bool("enable-diag", false, "serve the diag/* test operations on alknet/call (tests, benchmarks)")
	f.Duration("drain-timeout", 0, "how long connections may finish on shutdown (default 2s)")
	f.String("tls-mode", "", "TLS identity: raw_key (default), x509, acme, self_signed")
	f.String("tls-cert-file", "", "x509 mode: PEM certificate chain")
	f.String("tls-key-file", "", "x509 mode: PEM key; raw_key mode: 32-byte seed file (mode 0600)")
	f.StringSlice("acme-domain", nil, "acme mode: domain to obtain a certificate for (repeatable)")
	f.String("acme-directory", "", "acme mode: ACME directory URL")
	f.String("acme-email", "", "acme mode: contact email")
	f.String("acme-ca-file", "", "acme mode: extra PEM root trusted for the directory's HTTPS")
	f.Duration("call-deadline", 0, "default deadline of queries and mutations this node serves (default 30s)")
	f.Int("max-connections-per-ip", 0, "concurrent connections per remote IP (0 = unlimited; default 100)")
	for flag, key := range map[string]string{
		"listen": "listen", "enable-diag": "enable_diag", "drain-timeout": "drain_timeout",
		"tls-mode": "tls.mode", "tls-cert-file": "tls.cert_file", "tls-key-file": "tls.key_file",
		"acme-domain": "tls.acme.domains", "acme-directory": "tls.acme.directory", "acme-email": "tls.acme.email",
		"acme-ca-file": "tls.acme.ca_file", "max-connections-per-ip": "limits.max_connections_per_ip",
		"call-deadline": "call.deadline",
	} {
		_ = a.v.BindPFlag(key, f.Lookup(flag))
	}
	return c
}

// node is one running core process.
type node struct {
	a       *app
	log     hclog.Logger
	dir     datadir.Dir
	cfg     atomic.Pointer[config.Config]
	auth    *auth.Provider
	ep      *endpoint.Endpoint
	plugins *pluginhost.Host
	vault   *vault.Vault
	fp      string
	reload  sync.Mutex
}

func (a *app) serve(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	// Take the signals first: a SIGHUP that arrives while the node starts
	// must not kill it (its default action), it reloads once we serve.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	d, err := a.dataDir()
	if err != nil {
		return err
	}
	if err := d.Ensure(); err != nil {
		return err
	}
	cfg, err := a.config(d)
	if err != nil {
		return err
	}
	n := &node{a: a, log: a.log, dir: d}
	n.cfg.Store(cfg)
	pol, err := cfg.Policy()
	if err != nil {
		return err
	}
	n.auth = auth.NewProvider(pol)
	if err := n.ensureVault(); err != nil {
		return err
	}

	certs, fp, runACME, err := n.identity(cfg)
	if err != nil {
		return err
	}
	n.fp = fp
	n.ep = endpoint.New(endpoint.Options{
		Listen:       cfg.Listen,
		Plain:        cfg.Listeners.Plain,
		Certs:        certs,
		Auth:         n.auth,
		Limits:       func() config.Limits { return n.cfg.Load().Limits },
		DrainTimeout: cfg.DrainTimeout,
		Logger:       a.log.Named("endpoint"),
	})
	reg := call.NewRegistry(a.log.Named("call"))
	reg.SetDeadline(cfg.Call.Deadline)
	if err := reg.Register(n.nodeInfo(reg)); err != nil {
		return err
	}
	if cfg.EnableDiag {
		if _, err := diag.Register(reg); err != nil {
			return err
		}
	}
	if err := n.ep.Register(call.ALPN, "core", &call.Adapter{Registry: reg, Policy: n.auth.Policy, CallTimeout: cfg.Call.Deadline, Logger: a.log.Named("call")}); err != nil {
		return err
	}
	if err := n.ep.Start(); err != nil {
		return err
	}
	if err := n.startPlugins(ctx, reg); err != nil {
		n.ep.Shutdown()
		return err
	}
	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if runACME != nil {
		wg.Add(1)
		go func() { defer wg.Done(); _ = runACME(bg) }()
	}
	pidPath := filepath.Join(d.Path, pidFileName)
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		a.log.Warn("cannot write pid file; `alknet peers`/`apikey` will not reload this node by themselves", "path", pidPath, "error", err)
	}
	defer os.Remove(pidPath)

	_, port, _ := net.SplitHostPort(n.ep.UDPAddr().String())
	host, _, _ := net.SplitHostPort(cfg.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	fmt.Fprintf(a.out, "alknet node %s@%s\n", fp, net.JoinHostPort(host, port))
	a.log.Info("node ready", "fingerprint", fp, "data_dir", d.Path, "alpns", fmt.Sprint(n.ep.ALPNs()))

	for {
		select {
		case <-ctx.Done():
			n.shutdown(stopBG, &wg)
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				n.doReload()
				continue
			}
			a.log.Info("shutting down", "signal", s.String(), "drain_timeout", cfg.DrainTimeout.String())
			n.shutdown(stopBG, &wg)
			a.log.Info("stopped")
			return nil
		}
	}
}

func (n *node) shutdown(stopBG context.CancelFunc, wg *sync.WaitGroup) {
	n.ep.Shutdown()
	n.plugins.Shutdown() // plugins stop after their connections
	stopBG()
	wg.Wait()
	if n.vault != nil {
		n.vault.Lock()
	}
}

// doReload re-reads the config file and auth.json; on any error the old
// configuration stays and the error names the key.
func (n *node) doReload() {
	n.reload.Lock()
	defer n.reload.Unlock()
	if f := n.a.v.ConfigFileUsed(); f != "" {
		if err := n.a.v.ReadInConfig(); err != nil {
			n.log.Error("reload rejected; keeping the running configuration", "error", err)
			return
		}
	}
	cfg, err := n.a.config(n.dir)
	if err != nil {
		n.log.Error("reload rejected; keeping the running configuration", "error", err)
		return
	}
	old := n.cfg.Load()
	if changed := config.StaticChanges(old, cfg); len(changed) > 0 {
		n.log.Warn("static settings changed; they apply after a restart", "keys", fmt.Sprint(changed))
		// Keep the running static values; swap only the dynamic part.
		keep := *old
		keep.Limits, keep.Auth = cfg.Limits, cfg.Auth
		cfg = &keep
	}
	pol, err := cfg.Policy()
	if err != nil {
		n.log.Error("reload rejected; keeping the running configuration", "error", err)
		return
	}
	n.cfg.Store(cfg)
	n.auth.Swap(pol)
	n.plugins.Reload()
	n.log.Info("configuration reloaded", "peers", len(cfg.Auth.Peers), "api_keys", len(cfg.Auth.APIKeys))
}

// version is the node's version, set at build time with
// -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// nodeInfo is the built-in node/info operation.
func (n *node) nodeInfo(*call.Registry) call.Registration {
	return call.Registration{
		Spec: call.Spec{Name: "node/info", OpType: call.Query, RemoteSafe: true, Description: "node id, version, ALPNs and plugins"},
		Call: func(context.Context, json.RawMessage) (any, error) {
			return map[string]any{"id": n.fp, "version": version, "alpns": n.ep.ALPNs(), "plugins": n.plugins.Statuses()}, nil
		},
	}
}

// identity builds the TLS identity of the configured mode. It returns the
// certificate source, the fingerprint to print, and for acme the background
// loop to run.
func (n *node) identity(cfg *config.Config) (endpoint.CertSource, string, func(context.Context) error, error) {
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
		return staticCert{cert}, identity.KeyFingerprint(key.Public()), nil, nil
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
			cache = filepath.Join(n.dir.Path, "acme")
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
func (n *node) rawKey(cfg *config.Config) (vault.PrivateKey, error) {
	if cfg.TLS.KeyFile != "" {
		k, err := vault.ReadSeedFile(cfg.TLS.KeyFile)
		if err != nil {
			return vault.PrivateKey{}, fmt.Errorf("tls.key_file: %w", err)
		}
		return k, nil
	}
	return n.vault.NodeKey()
}

// ensureVault opens the node's vault, creating it on first run (D11). It
// stays unlocked while the node runs: capabilities are resolved from it at
// every connection and call (plugins.md §5).
func (n *node) ensureVault() error {
	created := false
	if !n.dir.HasVault() {
		m, err := vault.NewMnemonic()
		if err != nil {
			return err
		}
		defer m.Wipe()
		if _, err := n.a.writeVault(n.dir, m, "", false, false); err != nil {
			return err
		}
		n.log.Warn("created a new vault for this node; its recovery words were not shown. To have recovery words, stop now, remove the vault and run `alknet init`", "path", n.dir.VaultPath())
		created = true
	}
	v, info, err := n.a.openVault(n.dir)
	if err != nil {
		return err
	}
	n.vault = v
	if info.Mode == vault.ModePlain && !created {
		n.a.warnPlain(n.dir)
	}
	return nil
}

type staticCert struct{ c tls.Certificate }

func (s staticCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &s.c, nil }

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

// runningNode returns the pid of the node serving data dir d, if any.
func runningNode(d datadir.Dir) (*os.Process, bool) {
	b, err := os.ReadFile(filepath.Join(d.Path, pidFileName))
	if err != nil {
		return nil, false
	}
	pid, err := strconv.Atoi(string(trimNL(b)))
	if err != nil || pid <= 0 {
		return nil, false
	}
	p, err := os.FindProcess(pid)
	if err != nil || p.Signal(syscall.Signal(0)) != nil {
		return nil, false
	}
	return p, true
}

// signalNode asks a running node (pid file in d) to reload. It reports
// whether a node was signalled.
func signalNode(d datadir.Dir) (int, bool) {
	p, ok := runningNode(d)
	if !ok || p.Signal(syscall.SIGHUP) != nil {
		return 0, false
	}
	return p.Pid, true
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
