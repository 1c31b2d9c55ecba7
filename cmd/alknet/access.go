package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

// managedAuth reads the peers and API keys kept in <data>/auth.json.
func (a *app) managedAuth() (config.Auth, error) {
	d, err := a.dataDir()
	if err != nil {
		return config.Auth{}, err
	}
	return config.LoadAuthFile(config.AuthFilePath(d.Path))
}

// editAuth loads <data>/auth.json, applies change, saves it, and asks a
// running node to reload so the change takes effect at once.
func (a *app) editAuth(change func(*config.Auth) error) (datadir.Dir, error) {
	d, err := a.dataDir()
	if err != nil {
		return d, err
	}
	if err := d.Ensure(); err != nil {
		return d, err
	}
	if err := config.UpdateAuthFile(config.AuthFilePath(d.Path), change); err != nil {
		return d, err
	}
	a.tellRunningNode(d, "reload")
	return d, nil
}

func (a *app) apikeyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "apikey",
		Short: "Create, list and revoke API keys (alk_… bearer tokens)",
		Long: `API keys are bearer tokens "alk_" + 160 random bits. Only the first 8
characters and a SHA-256 hash are stored (in <data-dir>/auth.json); the token
itself is printed once by 'create'. A running node picks up changes at once.`,
	}
	var scopes []string
	var expires, desc string
	create := &cobra.Command{
		Use:     "create --scope SCOPE [--expires 30d]",
		Short:   "Create an API key and print its token once",
		Example: "  alknet apikey create --scope call:invoke --expires 30d --description ci",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var exp int64
			if expires != "" {
				dur, err := parseDays(expires)
				if err != nil {
					return err
				}
				exp = time.Now().Add(dur).Unix()
			}
			token, key, err := auth.NewAPIKey(scopes, desc, exp)
			if err != nil {
				return err
			}
			if _, err := a.editAuth(func(au *config.Auth) error { au.APIKeys = append(au.APIKeys, key); return nil }); err != nil {
				return err
			}
			a.log.Info("api key created", "prefix", key.Prefix, "scopes", strings.Join(scopes, ","))
			fmt.Fprintln(a.out, token)
			fmt.Fprintln(a.err, "This token is shown only once; store it now (e.g. in a file with mode 0600).")
			return nil
		},
	}
	create.Flags().StringSliceVar(&scopes, "scope", nil, "scope granted to the key (repeatable)")
	create.Flags().StringVar(&expires, "expires", "", "lifetime, e.g. 30d, 12h (default: never)")
	create.Flags().StringVar(&desc, "description", "", "what the key is for")

	var keysJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List API keys (prefix, scopes, expiry; never tokens)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cur, err := a.managedAuth()
			if err != nil {
				return err
			}
			if keysJSON {
				return a.printJSON(apiKeysJSON(cur.APIKeys, time.Now()))
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PREFIX\tSCOPES\tEXPIRES\tDESCRIPTION")
			for _, k := range cur.APIKeys {
				exp := "never"
				if k.ExpiresAt != 0 {
					exp = time.Unix(k.ExpiresAt, 0).UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.Prefix, strings.Join(k.Scopes, ","), exp, k.Description)
			}
			return w.Flush()
		},
	}
	list.Flags().BoolVar(&keysJSON, "json", false, "print as JSON (docs/json.md)")
	revoke := &cobra.Command{
		Use:   "revoke PREFIX",
		Short: "Revoke the API key with this 8-character prefix",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := a.editAuth(func(au *config.Auth) error {
				n := len(au.APIKeys)
				au.APIKeys = slices.DeleteFunc(au.APIKeys, func(k auth.APIKey) bool { return k.Prefix == args[0] })
				if len(au.APIKeys) == n {
					return fmt.Errorf("no API key with prefix %q (see `alknet apikey list`)", args[0])
				}
				return nil
			})
			if err == nil {
				a.log.Info("api key revoked", "prefix", args[0])
			}
			return err
		},
	}
	c.AddCommand(create, list, revoke)
	return c
}

// parseDays accepts Go durations plus a "d" (days) suffix.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return 0, fmt.Errorf("--expires %q: want e.g. 30d or 12h", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--expires %q: want e.g. 30d or 12h", s)
	}
	return d, nil
}

func (a *app) peersCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "peers",
		Short: "Manage known peers: who may connect, with which scopes",
		Long: `Peers are identities the node knows: TLS fingerprints (ed25519:… from
'alknet id' on the peer), OpenSSH key fingerprints (SHA256:… from
'ssh-keygen -lf key.pub'), a bearer token (only its hash is stored), and the
scopes they get. Managed peers live in <data-dir>/auth.json beside the
[[auth.peers]] of the config file; a running node picks up changes at once.`,
	}
	var p auth.Peer
	var tokenFile string
	add := &cobra.Command{
		Use:     "add PEER_ID --fingerprint FP [--scope S] [--ssh-key SHA256:…] [--token-file F]",
		Short:   "Add a peer",
		Example: "  alknet peers add laptop --fingerprint ed25519:… --scope admin",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			p.PeerID = args[0]
			for i, fp := range p.Fingerprints {
				canon, err := identity.ParseFingerprint(fp)
				if err != nil {
					return err
				}
				p.Fingerprints[i] = canon
			}
			if tokenFile != "" {
				s, err := vault.ReadPassphraseFile(tokenFile)
				if err != nil {
					return err
				}
				tok := string(s.Bytes())
				s.Wipe()
				if bits := auth.TokenStrength(tok); bits < auth.MinTokenBits {
					return fmt.Errorf("--token-file %s: the token has about %d bits of entropy; at least %d are needed so it cannot be guessed (make one with: head -c 24 /dev/urandom | base64 > %s)", tokenFile, bits, auth.MinTokenBits, tokenFile)
				}
				p.AuthTokenHash = auth.HashToken(tok)
			}
			// Peers of the config file count too: a fingerprint resolves to
			// the first enabled peer listing it, so a second one would never
			// be used (docs/spec/identity.md §5).
			var filePeers []auth.Peer
			if fc, err := config.FromViper(a.v); err == nil {
				filePeers = fc.Auth.Peers
			}
			if _, err := a.editAuth(func(au *config.Auth) error {
				if slices.ContainsFunc(au.Peers, func(q auth.Peer) bool { return q.PeerID == p.PeerID }) {
					return fmt.Errorf("peer %q already exists (remove it first)", p.PeerID)
				}
				if err := sameKeyElsewhere(p, au.Peers, "peer", "alknet peers remove %s, then add it again with the scopes it needs"); err != nil {
					return err
				}
				if err := sameKeyElsewhere(p, filePeers, "peer of the config file", "edit [[auth.peers]] %s in "+a.v.ConfigFileUsed()); err != nil {
					return err
				}
				au.Peers = append(au.Peers, p)
				return nil
			}); err != nil {
				return err
			}
			a.log.Info("peer added", "peer_id", p.PeerID)
			return nil
		},
	}
	add.Flags().StringSliceVar(&p.Fingerprints, "fingerprint", nil, "TLS fingerprint (repeatable)")
	add.Flags().StringSliceVar(&p.SSHKeys, "ssh-key", nil, "OpenSSH key fingerprint SHA256:… (repeatable)")
	add.Flags().StringSliceVar(&p.Scopes, "scope", nil, "scope (repeatable)")
	add.Flags().StringVar(&p.DisplayName, "display-name", "", "human-readable name")
	add.Flags().StringVar(&tokenFile, "token-file", "", "file (mode 0600) with a bearer token for this peer; only its hash is stored")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List managed peers",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cur, err := a.managedAuth()
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(peersJSON(cur.Peers))
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PEER_ID\tENABLED\tSCOPES\tFINGERPRINTS")
			for _, q := range cur.Peers {
				fmt.Fprintf(w, "%s\t%v\t%s\t%s\n", q.PeerID, q.IsEnabled(), strings.Join(q.Scopes, ","), strings.Join(q.Fingerprints, ","))
			}
			return w.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")

	modify := func(use, short string, f func(*auth.Peer, *[]auth.Peer, int)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " PEER_ID",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				_, err := a.editAuth(func(au *config.Auth) error {
					i := slices.IndexFunc(au.Peers, func(q auth.Peer) bool { return q.PeerID == args[0] })
					if i < 0 {
						return fmt.Errorf("no managed peer %q (see `alknet peers list`)", args[0])
					}
					f(&au.Peers[i], &au.Peers, i)
					return nil
				})
				if err == nil {
					a.log.Info("peer "+use+"d", "peer_id", args[0])
				}
				return err
			},
		}
	}
	off, on := false, true
	remove := modify("remove", "Remove a peer", func(_ *auth.Peer, all *[]auth.Peer, i int) { *all = slices.Delete(*all, i, i+1) })
	disable := modify("disable", "Keep a peer known but refuse it", func(q *auth.Peer, _ *[]auth.Peer, _ int) { q.Enabled = &off })
	enable := modify("enable", "Accept a disabled peer again", func(q *auth.Peer, _ *[]auth.Peer, _ int) { q.Enabled = &on })
	c.AddCommand(add, list, remove, disable, enable)
	return c
}

// sameKeyElsewhere refuses a new peer that lists a fingerprint or SSH key
// another peer lists already, naming that peer; fix (with %s for its
// peer_id) says how to change that peer instead.
func sameKeyElsewhere(p auth.Peer, others []auth.Peer, kind, fix string) error {
	for _, q := range others {
		for _, k := range append(slices.Clone(p.Fingerprints), p.SSHKeys...) {
			if slices.Contains(q.Fingerprints, k) || slices.Contains(q.SSHKeys, k) {
				return fmt.Errorf("%s already belongs to %s %q; a key identifies one peer, so give %q another key or change %q instead (%s)", k, kind, q.PeerID, p.PeerID, q.PeerID, fmt.Sprintf(fix, q.PeerID))
			}
		}
	}
	return nil
}

func (a *app) configCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Check a configuration file; list every setting"}
	check := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a config file (default: the one alknet would use), plugin settings included",
		Long: `Validate a config file: every key and value of the node's own, and the
settings of every plugin the node would run — each installed (or bundled)
plugin checks its [plugins.<name>] settings against its config schema and
its own rules (a program in exec_allow that is not installed, a file that
cannot be read), as it would at start. Exit 1 names the key at fault.`,
		Example: "  alknet config check /etc/alknet/alknet.toml",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			path := a.v.ConfigFileUsed()
			if len(args) == 1 {
				path = args[0]
			}
			if path == "" {
				return fmt.Errorf("no config file found; give one: alknet config check FILE")
			}
			if _, err := os.Stat(path); err != nil {
				return err
			}
			cfg, err := config.ParseFile(path)
			if err != nil {
				return err
			}
			if err := checkImports(cfg); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if err := a.checkPluginSettings(cfg); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			fmt.Fprintf(a.out, "%s: ok\n", path)
			return nil
		},
	}
	var docsJSON bool
	docs := &cobra.Command{
		Use:   "docs",
		Short: "List every setting: type, default, flag, environment variable, whether a reload applies it, meaning",
		Long: `List every setting of the config file with its type, default, the flag and
the environment variable that set it (ALKNET_<KEY>, dots as underscores;
no setting is a secret, and secrets never come from the environment), whether
a reload (SIGHUP) applies it or a restart is needed, and its meaning.
Precedence: flag, then environment, then file, then default.`,
		Example: "  alknet config docs\n  alknet config docs --json",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			type keyJSON struct {
				Key     string `json:"key"`
				Type    string `json:"type"`
				Default string `json:"default"`
				Flag    string `json:"flag"`
				Env     string `json:"env"`
				Applies string `json:"applies"`
				Meaning string `json:"meaning"`
			}
			rows := []keyJSON{}
			for _, k := range config.Docs() {
				when := "restart"
				if k.Dynamic {
					when = "reload"
				}
				rows = append(rows, keyJSON{k.Key, k.Type, k.Default, flagFor(k.Key), k.Env, when, k.Doc})
			}
			if docsJSON {
				return a.printJSON(rows)
			}
			dash := func(s string) string {
				if s == "" {
					return "-"
				}
				return s
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "KEY\tTYPE\tDEFAULT\tFLAG\tENV\tAPPLIES\tMEANING")
			for _, r := range rows {
				def := r.Default
				if def == "" {
					def = `""`
					if r.Env == "" {
						def = "-"
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Key, r.Type, def, dash(r.Flag), dash(r.Env), r.Applies, r.Meaning)
			}
			return w.Flush()
		},
	}
	docs.Flags().BoolVar(&docsJSON, "json", false, "print as JSON (docs/json.md)")
	c.AddCommand(check, docs)
	return c
}
