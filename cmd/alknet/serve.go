package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/atomicfile"
	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/node"
	"alknet.dev/alknet/core/vault"
)

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
the rest with "shutdown" and exit 0.

One node per data directory: the node locks <data-dir>/alknet.lock, with its
pid inside, for as long as it runs, and a second 'alknet serve' on the same
directory is refused naming that pid. Leftovers of writes that were
interrupted (a killed command) are removed at start.`,
		Example: "  alknet serve\n  alknet serve --listen 127.0.0.1:0 --data-dir /tmp/node\n  alknet serve --config /etc/alknet/alknet.toml",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return a.serve(cmd.Context()) },
	}
	f := c.Flags()
	f.BoolVar(&a.nextSteps, "next-steps", false, "after the dial string, print commands that try this node (make run)")
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
	for flag, key := range serveFlagKeys {
		_ = a.v.BindPFlag(key, f.Lookup(flag))
	}
	return c
}

// serveFlagKeys maps the flags of `alknet serve` to the settings they set.
var serveFlagKeys = map[string]string{
	"listen": "listen", "enable-diag": "enable_diag", "drain-timeout": "drain_timeout",
	"tls-mode": "tls.mode", "tls-cert-file": "tls.cert_file", "tls-key-file": "tls.key_file",
	"acme-domain": "tls.acme.domains", "acme-directory": "tls.acme.directory", "acme-email": "tls.acme.email",
	"acme-ca-file": "tls.acme.ca_file", "max-connections-per-ip": "limits.max_connections_per_ip",
	"call-deadline": "call.deadline",
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
	// One node per data directory, held until this process exits however it
	// exits; the CLI finds this node through the same lock
	// (tellRunningNode).
	held, err := d.LockNode()
	if err != nil {
		return err
	}
	defer held.Release()
	// Leftovers of interrupted writes were removed in setup (every command
	// does it); the ones a live process still held were rightly kept.
	cfg, err := a.config(d)
	if err != nil {
		return err
	}
	v, err := a.ensureVault(d)
	if err != nil {
		return err
	}
	defer v.Lock()
	n, err := node.New(node.Options{Config: cfg, Dir: d, Vault: v, Version: version, BundledDir: bundledDir(), Logger: a.log})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}

	_, port, _ := net.SplitHostPort(n.UDPAddr().String())
	host, _, _ := net.SplitHostPort(cfg.Listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	fmt.Fprintf(a.out, "alknet node %s@%s\n", n.Fingerprint(), net.JoinHostPort(host, port))
	// Where the CLI beside the node reaches it (`alknet status`): the
	// loopback address when the node listens on every address.
	local, _, _ := net.SplitHostPort(cfg.Listen)
	if local == "" || local == "0.0.0.0" {
		local = "127.0.0.1"
	} else if local == "::" {
		local = "::1"
	}
	addrFile := filepath.Join(d.Path, nodeAddrFile)
	if err := atomicfile.WriteFile(addrFile, []byte(n.Fingerprint()+"@"+net.JoinHostPort(local, port)+"\n")); err != nil {
		a.log.Warn("cannot record the node's address; `alknet status` will need it given", "path", addrFile, "error", err)
	}
	defer os.Remove(addrFile)
	if a.nextSteps {
		a.printNextSteps(n.Fingerprint(), net.JoinHostPort(local, port))
	}

	for {
		select {
		case <-ctx.Done():
			n.Shutdown()
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				a.reload(ctx, n, d)
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
// The outcome is recorded in <data>/node.reload for the command that sent
// the signal (tellRunningNode).
func (a *app) reload(ctx context.Context, n *node.Node, d datadir.Dir) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, pluginReloadWait)
	defer cancel()
	result := a.applyReload(ctx, n, d)
	if err := d.RecordReload(started, result); err != nil {
		a.log.Warn("cannot record the reload's outcome; commands that asked for it will not see it", "path", d.ReloadPath(), "error", err)
	}
}

// applyReload is reload's work; it returns "ok" or what was not applied.
func (a *app) applyReload(ctx context.Context, n *node.Node, d datadir.Dir) string {
	rejected := func(err error) string {
		a.log.Error("reload rejected; keeping the running configuration", "error", err)
		return "rejected, the running configuration stays: " + err.Error()
	}
	file, err := a.rereadConfig()
	if err != nil {
		return rejected(err)
	}
	cfg, err := a.config(d)
	if err != nil {
		return rejected(err)
	}
	r, err := n.Reload(ctx, cfg)
	if err != nil {
		return rejected(err)
	}
	applied := n.Config()
	if file == "" {
		file = "none (defaults, flags and environment)"
	}
	a.log.Info("configuration reloaded", "file", file, "peers", len(applied.Auth.Peers), "api_keys", len(applied.Auth.APIKeys))
	var except []string
	if len(r.Static) > 0 {
		a.log.Warn("static settings changed; they apply after a restart", "keys", fmt.Sprint(r.Static))
		except = append(except, "static settings that need a restart: "+strings.Join(r.Static, ", "))
	}
	if r.Plugins != nil {
		// Each supervisor has logged its own problem.
		except = append(except, strings.ReplaceAll(r.Plugins.Error(), "\n", "; "))
	}
	if len(except) > 0 {
		return "applied, except " + strings.Join(except, "; ")
	}
	return "ok"
}

// printNextSteps prints, for `make run`, commands that try the node at
// addr from another terminal, naming this alknet by a path that works from
// the current directory (./bin/alknet) when it lies below it.
func (a *app) printNextSteps(fp, addr string) {
	exe := "alknet"
	if p, err := os.Executable(); err == nil {
		exe = p
		if wd, err := os.Getwd(); err == nil {
			if rel, err := filepath.Rel(wd, p); err == nil && filepath.IsLocal(rel) {
				exe = "./" + rel
			}
		}
	}
	pin, err := identity.SPKIPin(fp)
	if err != nil {
		pin = "sha256//…" // an x509 or acme node: curl verifies it by name
	}
	fmt.Fprintf(a.out, `
Try it from another terminal:
  %[1]s call --peer %[2]s %[3]s /echo/say '"hi"'
  %[1]s services --peer %[2]s %[3]s
  %[1]s ssh-config --peer %[2]s --name alknet-dev %[3]s >> ~/.ssh/config
  curl -k --pinnedpubkey '%[4]s' https://%[3]s/call -d '{"operation":"/echo/say","input":"hi"}'
Stop with Ctrl-C.
`, exe, fp, addr, pin)
}

// nodeAddrFile in the data directory holds the running node's dial
// string for the CLI beside it (valid only while the node holds the
// data directory's lock).
const nodeAddrFile = "node.addr"

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

// reloadWait bounds how long a command waits for the node it signalled to
// apply the change; a node still starting its plugins takes the signal
// once it serves.
const reloadWait = 15 * time.Second

// pluginReloadWait bounds how long a reload waits for the plugins to act
// on it (a new version to serve, settings to be configured) before it
// records its outcome; below reloadWait, so that the command that asked
// hears what was not finished rather than nothing.
const pluginReloadWait = 10 * time.Second

// tellRunningNode asks the node serving from d, if one runs, to reload
// (SIGHUP) so that a change to its files applies at once, and says what it
// did; what completes "asked the running node (pid N) to …". The node is
// found by the data directory's lock (datadir.RunningNode), never by a
// recorded pid alone: a node killed with -9 leaves its pid behind, and that
// pid may since belong to an unrelated process.
func (a *app) tellRunningNode(d datadir.Dir, what string) error {
	pid, running := d.RunningNode()
	switch {
	case !running:
		fmt.Fprintln(a.err, "no running node found; the change applies at its next start")
		return errors.New("no running node")
	case pid <= 0:
		fmt.Fprintf(a.err, "a node serves %s but its pid is not visible from here; send it SIGHUP to apply the change\n", d.Path)
		return errors.New("the running node was not signalled")
	}
	sent := time.Now()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		fmt.Fprintf(a.err, "could not signal the running node (pid %d): %v; send it SIGHUP to apply the change\n", pid, err)
		return err
	}
	// Wait for the node to apply it: whoever runs the next command (a
	// request with the API key just created, a connection to the plugin
	// version just installed) expects the change in force.
	r, ok := d.WaitReload(sent, reloadWait)
	switch {
	case !ok:
		fmt.Fprintf(a.err, "asked the running node (pid %d) to %s; it has not confirmed within %s (see its log)\n", pid, what, reloadWait)
		return errors.New("the running node has not confirmed the reload")
	case r.Result == "ok":
		fmt.Fprintf(a.err, "asked the running node (pid %d) to %s: applied\n", pid, what)
		return nil
	default:
		fmt.Fprintf(a.err, "asked the running node (pid %d) to %s: %s\n", pid, what, r.Result)
		return errors.New("not all of the change was applied")
	}
}

// reloadCmd is `alknet reload`: SIGHUP with an answer, for operators and
// service managers (systemd's ExecReload).
func (a *app) reloadCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Have the running node re-read its configuration and auth.json, and say what it applied",
		Long: `Sends SIGHUP to the node serving this data directory and waits (up to 15s) for
its answer: "applied" once every change is in force (plugins included: a new
version serves, new settings are configured), else what was not applied and
why. Exit status 0 only when everything was applied, 1 otherwise (what was
rejected keeps its running value).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			if a.tellRunningNode(d, "reload") != nil {
				return exitError{code: 1} // what failed is printed
			}
			return nil
		},
	}
}
