package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/pluginhost"
	"alknet.dev/alknet/core/vault"
)

// pluginLock opens the store and reads its lock file.
func (a *app) pluginLock() (*pluginhost.Store, *pluginhost.Lock, error) {
	store, _, err := a.pluginStore()
	if err != nil {
		return nil, nil, err
	}
	lock, err := store.Load()
	return store, lock, err
}

func (a *app) pluginStore() (*pluginhost.Store, string, error) {
	d, err := a.dataDir()
	if err != nil {
		return nil, "", err
	}
	if err := d.Ensure(); err != nil {
		return nil, "", err
	}
	return pluginhost.OpenStore(d.PluginsPath()), d.Path, nil
}

// tellNode asks a running node to reload its plugins, if one runs.
func (a *app) tellNode() {
	d, err := a.dataDir()
	if err != nil {
		return
	}
	a.tellRunningNode(d, "apply the change")
}

func (a *app) pluginCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "plugin",
		Short: "Install, inspect, switch and restart protocol plugins",
		Long: `Protocol handlers are separate executables (alknet-plugin-<name>) that the node
runs and supervises. Installed plugins live in <data-dir>/plugins/<name>/<version>/
with their SHA-256 recorded in <data-dir>/plugins/lock.json; the node verifies the
digest before every launch and refuses a binary that changed.`,
	}
	c.AddCommand(a.pluginInstallCmd(), a.pluginListCmd(), a.pluginInfoCmd(), a.pluginUseCmd(),
		a.pluginRemoveCmd(), a.pluginVerifyCmd(), a.pluginRestartCmd(), a.pluginSignCmd())
	return c
}

func (a *app) pluginInstallCmd() *cobra.Command {
	var want, sigFile string
	var force bool
	c := &cobra.Command{
		Use:   "install PATH|URL [--sha256 HEX] [--signature FILE]",
		Short: "Install a plugin binary (file or http(s) URL) after checking it",
		Long: `Install a plugin: its manifest is read with 'describe', its name, version and
core protocol are checked, and it is copied into the data directory with its
SHA-256 recorded. A URL is downloaded first and must match --sha256 (or a
SHA256SUMS file next to it) before anything is executed. --signature checks a
publisher's Ed25519 signature ('alknet plugin sign'); with
plugins.require_signature = true in the config it is mandatory and the signer
must be one of plugins.trusted_publishers.

Installing a version that is installed already with another binary is
refused; --force replaces it, and a running node switches to the new binary
the way 'alknet plugin use' does: without dropping a connection.`,
		Example: "  alknet plugin install ./bin/alknet-plugin-echo\n  alknet plugin install https://example.org/alknet-plugin-ssh --sha256 3b1f…",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			store, _, err := a.pluginStore()
			if err != nil {
				return err
			}
			src, source := args[0], args[0]
			if u, err := url.Parse(args[0]); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
				if src, err = a.download(cmd.Context(), u, &want); err != nil {
					return err
				}
				defer os.Remove(src)
			} else if abs, err := filepath.Abs(src); err == nil {
				source = abs
			}
			o := pluginhost.InstallOptions{SHA256: want, Force: force}
			// The node's own configuration (a.config: --config, else the
			// default file, environment, auth.json) decides whether a
			// signature is required; one that cannot be read stops the
			// install rather than skipping the check.
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			cfg, err := a.config(d)
			if err != nil {
				return fmt.Errorf("plugin install needs the node's configuration (for plugins.require_signature and plugins.trusted_publishers): %w; fix it (alknet config check) and install again", err)
			}
			o.RequireSignature, o.TrustedPublishers = cfg.Plugins.RequireSignature, cfg.Plugins.TrustedPublishers
			if sigFile != "" {
				sig, err := pluginhost.ReadSignature(sigFile)
				if err != nil {
					return err
				}
				o.Signature = &sig
			}
			inst, err := store.Install(context.Background(), src, source, o)
			if errors.Is(err, pluginhost.ErrAlreadyInstalled) {
				fmt.Fprintf(a.out, "%s %s is installed already with this binary (sha256 %s); nothing changed\n", inst.Name, inst.Version, inst.SHA256[:16])
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "installed %s %s (sha256 %s, protocol %v, alpns %v)\n", inst.Name, inst.Version, inst.SHA256[:16], inst.ProtocolVersions, inst.ALPNs)
			a.tellNode()
			return nil
		},
	}
	c.Flags().StringVar(&sigFile, "signature", "", "publisher signature file (from 'alknet plugin sign')")
	c.Flags().BoolVar(&force, "force", false, "replace an installed version whose binary differs (a running node switches without downtime)")
	c.Flags().StringVar(&want, "sha256", "", "expected SHA-256 of the binary (required for URLs unless a SHA256SUMS file is published beside it)")
	return c
}

// download fetches u to a temporary file, showing progress, and checks its
// digest against want (or the SHA256SUMS beside it) before returning.
func (a *app) download(ctx context.Context, u *url.URL, want *string) (string, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if *want == "" {
		sums, err := fetchSmall(ctx, u.JoinPath("..", "SHA256SUMS").String())
		if err != nil {
			return "", fmt.Errorf("download %s: give --sha256 HEX (no SHA256SUMS beside it: %v)", u, err)
		}
		base := filepath.Base(u.Path)
		for _, line := range strings.Split(sums, "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && strings.TrimPrefix(f[1], "*") == base {
				*want = f[0]
			}
		}
		if *want == "" {
			return "", fmt.Errorf("download %s: SHA256SUMS does not list %s; give --sha256", u, base)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Minute}).Do(req)
	if err != nil {
		return "", fmt.Errorf("download %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download %s: %s", u, resp.Status)
	}
	f, err := os.CreateTemp("", "alknet-plugin-download-*")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	pr := &progress{w: a.err, total: resp.ContentLength, name: filepath.Base(u.Path)}
	_, err = io.Copy(io.MultiWriter(f, h, pr), resp.Body)
	pr.done()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("download %s: %w", u, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if !strings.EqualFold(got, *want) {
		os.Remove(f.Name())
		return "", fmt.Errorf("download %s: sha256 is %s but %s was expected; nothing was executed or installed", u, got, strings.ToLower(*want))
	}
	if err := os.Chmod(f.Name(), 0o700); err != nil {
		return "", err
	}
	return f.Name(), nil
}

func fetchSmall(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), err
}

// progress prints a one-line download progress bar.
type progress struct {
	w     io.Writer
	total int64
	n     int64
	last  time.Time
	name  string
}

func (p *progress) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if time.Since(p.last) > 200*time.Millisecond {
		p.last = time.Now()
		p.print()
	}
	return len(b), nil
}

func (p *progress) print() {
	if p.total > 0 {
		pct := float64(p.n) / float64(p.total)
		bar := strings.Repeat("#", int(pct*30)) + strings.Repeat(".", 30-int(pct*30))
		fmt.Fprintf(p.w, "\r%s [%s] %3.0f%% %d/%d bytes", p.name, bar, pct*100, p.n, p.total)
		return
	}
	fmt.Fprintf(p.w, "\r%s %d bytes", p.name, p.n)
}

func (p *progress) done() { p.print(); fmt.Fprintln(p.w) }

func (a *app) pluginListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List installed plugins with version, digest, protocol, ALPNs and state",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, lock, err := a.pluginLock()
			if err != nil {
				return err
			}
			states := map[string]pluginhost.Status{}
			if d, err := a.dataDir(); err == nil {
				if _, running := d.RunningNode(); running {
					if st, err := pluginhost.ReadState(store); err == nil {
						for _, s := range st {
							states[s.Name] = s
						}
					}
				}
			}
			var rows []pluginJSON
			for _, name := range lock.Names() {
				lp := lock.Plugins[name]
				sel, _ := lock.Select(name, "")
				st, ok := states[name]
				for _, v := range lp.SortedVersions() {
					inst := lp.Versions[v]
					r := pluginJSON{Name: name, Version: v, SHA256: inst.SHA256, ProtocolVersions: nonNil(inst.ProtocolVersions),
						ALPNs: nonNil(inst.ALPNs), State: "not running", Signer: inst.Signer}
					if ok && st.Version == v {
						r.Active, r.State, r.Restarts, r.Pid = true, st.State, st.Restarts, st.Pid
					} else if !ok && sel != nil && sel.Version == v {
						r.Active = true
					}
					rows = append(rows, r)
				}
			}
			if asJSON {
				return a.printJSON(nonNil(rows))
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tVERSION\tACTIVE\tSHA256\tPROTOCOL\tALPNS\tSTATE\tRESTARTS")
			for _, r := range rows {
				active, restarts := "", ""
				if r.Active {
					active = "*"
				}
				if r.State != "not running" {
					restarts = fmt.Sprint(r.Restarts)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\n", r.Name, r.Version, active, r.SHA256[:12], r.ProtocolVersions, strings.Join(r.ALPNs, ","), r.State, restarts)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	return c
}

func (a *app) pluginInfoCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "info NAME",
		Short: "Show what an installed plugin declares (versions, ALPNs, operations, source)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, lock, err := a.pluginLock()
			if err != nil {
				return err
			}
			lp := lock.Plugins[args[0]]
			if lp == nil || len(lp.Versions) == 0 {
				return fmt.Errorf("plugin %s is not installed (see `alknet plugin list`)", args[0])
			}
			if asJSON {
				info := pluginInfoJSON{Name: args[0], Versions: []*pluginhost.Installed{}}
				for _, v := range lp.SortedVersions() {
					info.Versions = append(info.Versions, lp.Versions[v])
				}
				return a.printJSON(info)
			}
			for _, v := range lp.SortedVersions() {
				i := lp.Versions[v]
				fmt.Fprintf(a.out, "%s %s\n  sha256:     %s\n  protocol:   %v\n  alpns:      %s\n  operations: %s\n  source:     %s\n  installed:  %s\n",
					i.Name, i.Version, i.SHA256, i.ProtocolVersions, strings.Join(i.ALPNs, ", "), strings.Join(i.Operations, ", "), i.Source, i.InstalledAt.Format(time.RFC3339))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	return c
}

func (a *app) pluginUseCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "use NAME@VERSION",
		Short:   "Switch a plugin to an installed version (no restart of the node, no dropped connection)",
		Example: "  alknet plugin use echo@0.2.0",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			name, ver, ok := strings.Cut(args[0], "@")
			if !ok || ver == "" {
				return fmt.Errorf("%q: want NAME@VERSION", args[0])
			}
			store, _, err := a.pluginStore()
			if err != nil {
				return err
			}
			err = store.Update(func(l *pluginhost.Lock) error {
				lp := l.Plugins[name]
				if lp == nil || lp.Versions[ver] == nil {
					return fmt.Errorf("%s@%s is not installed (see `alknet plugin list`)", name, ver)
				}
				lp.Active = ver
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "%s now uses %s\n", name, ver)
			a.tellNode()
			return nil
		},
	}
}

func (a *app) pluginRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME[@VERSION]",
		Short: "Remove an installed plugin version (or all its versions)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			name, ver, _ := strings.Cut(args[0], "@")
			store, _, err := a.pluginStore()
			if err != nil {
				return err
			}
			var removed []string
			err = store.Update(func(l *pluginhost.Lock) error {
				lp := l.Plugins[name]
				if lp == nil {
					return fmt.Errorf("plugin %s is not installed", name)
				}
				for v := range lp.Versions {
					if ver == "" || v == ver {
						removed = append(removed, v)
					}
				}
				if len(removed) == 0 {
					return fmt.Errorf("%s@%s is not installed", name, ver)
				}
				for _, v := range removed {
					delete(lp.Versions, v)
					if lp.Active == v {
						lp.Active = ""
					}
					// A bundled copy beside alknet must not bring it back.
					l.MarkRemoved(name, v)
				}
				if ver == "" {
					l.MarkRemoved(name, "")
				}
				if len(lp.Versions) == 0 {
					delete(l.Plugins, name)
				}
				return nil
			})
			if err != nil {
				return err
			}
			slices.Sort(removed)
			for _, v := range removed {
				_ = os.RemoveAll(filepath.Dir(store.BinaryPath(name, v)))
				fmt.Fprintf(a.out, "removed %s %s\n", name, v)
			}
			a.tellNode()
			return nil
		},
	}
}

func (a *app) pluginVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every installed plugin against the lock file",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			store, lock, err := a.pluginLock()
			if err != nil {
				return err
			}
			bad := 0
			for _, name := range lock.Names() {
				for _, v := range lock.Plugins[name].SortedVersions() {
					if err := store.Verify(lock.Plugins[name].Versions[v]); err != nil {
						bad++
						fmt.Fprintf(a.out, "FAIL %s %s: %v\n", name, v, err)
						continue
					}
					fmt.Fprintf(a.out, "ok   %s %s\n", name, v)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d plugin binaries do not match the lock file", bad)
			}
			return nil
		},
	}
}

func (a *app) pluginRestartCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "restart NAME",
		Short: "Restart a plugin (also brings a failed plugin back)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			store, _, err := a.pluginStore()
			if err != nil {
				return err
			}
			err = store.Update(func(l *pluginhost.Lock) error {
				lp := l.Plugins[args[0]]
				if lp == nil {
					return fmt.Errorf("plugin %s is not installed", args[0])
				}
				lp.RestartGeneration++
				return nil
			})
			if err != nil {
				return err
			}
			a.tellNode()
			return nil
		},
	}
}

func (a *app) pluginSignCmd() *cobra.Command {
	var keyFile, path, out string
	c := &cobra.Command{
		Use:   "sign BINARY [--vault-path PATH | --key-file FILE] [-o FILE]",
		Short: "Sign a plugin binary's SHA-256 with an Ed25519 publisher key",
		Long: `Write a publisher signature for a plugin binary: an Ed25519 signature over its
SHA-256 digest, as JSON {publisher, sha256, signature}. The key is derived from
this node's vault (--vault-path, default m/74'/0'/0'/1', device 1) or read from
--key-file (32-byte seed, raw or hex, mode 0600). Operators trust the printed
publisher fingerprint with plugins.trusted_publishers.`,
		Example: "  alknet plugin sign ./bin/alknet-plugin-echo -o alknet-plugin-echo.sig",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			sum, err := pluginhost.FileSHA256(args[0])
			if err != nil {
				return err
			}
			var key vault.PrivateKey
			if keyFile != "" {
				if key, err = vault.ReadSeedFile(keyFile); err != nil {
					return fmt.Errorf("--key-file: %w", err)
				}
			} else {
				v, _, err := a.openNodeVault()
				if err != nil {
					return err
				}
				defer v.Lock()
				if key, err = v.DeriveEd25519(path); err != nil {
					return err
				}
			}
			defer key.Wipe()
			sig, err := pluginhost.Sign(key.Signer(), sum)
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(sig, "", "  ")
			if out == "" {
				out = args[0] + ".sig"
			}
			if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "signed %s (sha256 %s) as %s → %s\n", args[0], sum[:16], sig.Publisher, out)
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key-file", "", "publisher key: 32-byte Ed25519 seed file (mode 0600)")
	c.Flags().StringVar(&path, "vault-path", "m/74'/0'/0'/1'", "publisher key: SLIP-0010 path in this node's vault")
	c.Flags().StringVarP(&out, "output", "o", "", "signature file (default BINARY.sig)")
	return c
}
