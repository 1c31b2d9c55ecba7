package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/node"
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
and vault on first run (embedded default, docs/architecture.md D11), prints its dial string, and
serves every registered ALPN on UDP and TCP port 4433.

Signals: SIGHUP reloads the dynamic configuration from the config file and
<data-dir>/auth.json — auth peers and API keys, limits, plugin settings,
capability grants, signature rules, the plugin set (` + "`alknet config docs`" + `
marks each key) — a bad file is rejected whole and the old configuration
stays; SIGINT/SIGTERM drain connections for up to drain_timeout, then close
the rest with "shutdown" and exit 0.`,
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
	v, err := a.ensureVault(d)
	if err != nil {
		return err
	}
	defer v.Lock()
	bundled := ""
	if exe, err := os.Executable(); err == nil {
		if exe, err = filepath.EvalSymlinks(exe); err == nil {
			bundled = filepath.Dir(exe)
		}
	}
	n, err := node.New(node.Options{Config: cfg, Dir: d, Vault: v, Version: version, BundledDir: bundled, Logger: a.log})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	pidPath := filepath.Join(d.Path, pidFileName)
	if err := os.WriteFile(pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		a.log.Warn("cannot write pid file; `alknet peers`/`apikey` will not reload this node by themselves", "path", pidPath, "error", err)
	}
	defer os.Remove(pidPath)

	_, port, _ := net.SplitHostPort(n.UDPAddr().String())
	host, _, _ := net.SplitHostPort(cfg.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	fmt.Fprintf(a.out, "alknet node %s@%s\n", n.Fingerprint(), net.JoinHostPort(host, port))

	for {
		select {
		case <-ctx.Done():
			n.Shutdown()
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				a.reload(n, d)
				continue
			}
			a.log.Info("shutting down", "signal", s.String(), "drain_timeout", cfg.DrainTimeout.String())
			n.Shutdown()
			a.log.Info("stopped")
			return nil
		}
	}
}

// reload re-reads the config file and auth.json and applies their dynamic
// settings; on any error the running configuration stays and the error
// names the key.
func (a *app) reload(n *node.Node, d datadir.Dir) {
	if f := a.v.ConfigFileUsed(); f != "" {
		if err := a.v.ReadInConfig(); err != nil {
			a.log.Error("reload rejected; keeping the running configuration", "error", err)
			return
		}
	}
	cfg, err := a.config(d)
	if err != nil {
		a.log.Error("reload rejected; keeping the running configuration", "error", err)
		return
	}
	static, err := n.Reload(cfg)
	if err != nil {
		a.log.Error("reload rejected; keeping the running configuration", "error", err)
		return
	}
	if len(static) > 0 {
		a.log.Warn("static settings changed; they apply after a restart", "keys", fmt.Sprint(static))
	}
	applied := n.Config()
	a.log.Info("configuration reloaded", "peers", len(applied.Auth.Peers), "api_keys", len(applied.Auth.APIKeys))
}

// version is the node's version, set at build time with
// -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// ensureVault opens the node's vault, creating it on first run (docs/architecture.md D11). It
// stays unlocked while the node runs: capabilities are resolved from it at
// every connection and call (docs/spec/plugins.md §5).
func (a *app) ensureVault(d datadir.Dir) (*vault.Vault, error) {
	created := false
	if !d.HasVault() {
		m, err := vault.NewMnemonic()
		if err != nil {
			return nil, err
		}
		defer m.Wipe()
		if _, err := a.writeVault(d, m, "", false, false); err != nil {
			return nil, err
		}
		a.log.Warn("created a new vault for this node; its recovery words were not shown. To have recovery words, stop now, remove the vault and run `alknet init`", "path", d.VaultPath())
		created = true
	}
	v, info, err := a.openVault(d)
	if err != nil {
		return nil, err
	}
	if info.Mode == vault.ModePlain && !created {
		a.warnPlain(d)
	}
	return v, nil
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
