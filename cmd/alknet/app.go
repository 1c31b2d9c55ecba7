package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/pluginhost"
	"alknet.dev/alknet/core/vault"
)

// app carries what every command shares: streams, settings and the logger.
type app struct {
	in       io.Reader
	out, err io.Writer
	v        *viper.Viper
	root     *cobra.Command
	log      hclog.Logger
	// passphraseFile is flag-only: docs/architecture.md D8 forbids secrets from the environment,
	// and we keep even the path to one out of it for clarity.
	passphraseFile string
	// nextSteps: `serve --next-steps` prints commands to try the node.
	nextSteps bool
}

func newApp(in io.Reader, out, errw io.Writer) *app {
	a := &app{in: in, out: out, err: errw, v: config.NewViper()}
	root := &cobra.Command{
		Use:   "alknet",
		Short: "Alknet: one node, one UDP port, many protocols",
		Long: `Alknet serves protocols on one UDP port (QUIC + TLS 1.3), choosing the
protocol by the ALPN of each connection: a JSON call protocol (alknet/call)
built in, and each other protocol from a plugin: SSH, SFTP, git, HTTP,
DNS, content-addressed files, an agent and echo ('alknet plugin list'
shows what this node has). Keys come from one BIP39
mnemonic kept in the node's vault.

Start with:  alknet init      (creates the data directory and vault)
Then:        alknet id        (prints the node fingerprint peers pin)`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setup()
		},
	}
	root.SetIn(in)
	root.SetOut(out)
	root.SetErr(errw)
	pf := root.PersistentFlags()
	pf.String("config", "", "config file (default $XDG_CONFIG_HOME/alknet/alknet.toml)")
	pf.String("data-dir", "", "data directory: vault, credentials, plugins (default $XDG_DATA_HOME/alknet)")
	pf.String("log-level", "info", "log level: trace, debug, info, warn, error")
	pf.Bool("log-json", false, "write logs as JSON lines")
	pf.StringVar(&a.passphraseFile, "vault-passphrase-file", "", "file (mode 0600) holding the vault passphrase; otherwise it is asked on the terminal")
	for flag, key := range rootFlagKeys {
		_ = a.v.BindPFlag(key, pf.Lookup(flag))
	}
	_ = a.v.BindPFlag("config", pf.Lookup("config"))
	a.root = root
	root.AddCommand(a.initCmd(), a.idCmd(), a.vaultCmd(), a.credentialCmd(), a.serveCmd(), a.pipeCmd(), a.fsCmd(), a.gitCmd(), a.agentCmd(),
		a.apikeyCmd(), a.peersCmd(), a.configCmd(), a.callCmd(), a.servicesCmd(), a.schemaCmd(), a.pluginCmd(), a.sshConfigCmd(), a.statusCmd(),
		a.pluginExecCmd(), a.dnsCmd(), a.reloadCmd(), a.versionCmd())
	a.setVersionFlag()
	return a
}

// rootFlagKeys maps the global flags to the settings they set.
var rootFlagKeys = map[string]string{"data-dir": "data_dir", "log-level": "log_level", "log-json": "log_json"}

// flagFor is the flag that sets a config key ("" if none), for `alknet
// config docs`.
func flagFor(key string) string {
	for _, m := range []map[string]string{rootFlagKeys, serveFlagKeys} {
		for flag, k := range m {
			if k == key {
				return "--" + flag
			}
		}
	}
	return ""
}

// setup reads the config file and environment (non-secret settings only)
// and builds the logger.
func (a *app) setup() error {
	if cf := a.v.GetString("config"); cf != "" {
		a.v.SetConfigFile(cf)
		if err := a.v.ReadInConfig(); err != nil {
			return fmt.Errorf("read config %s: %w", cf, err)
		}
	} else if dir, err := os.UserConfigDir(); err == nil {
		a.v.SetConfigName("alknet")
		a.v.AddConfigPath(dir + "/alknet")
		if err := a.v.ReadInConfig(); err != nil && !errors.As(err, new(viper.ConfigFileNotFoundError)) {
			return fmt.Errorf("read config: %w", err)
		}
	}
	level := hclog.LevelFromString(a.v.GetString("log_level"))
	if level == hclog.NoLevel {
		return fmt.Errorf("--log-level %q: use trace, debug, info, warn or error", a.v.GetString("log_level"))
	}
	a.log = hclog.New(&hclog.LoggerOptions{Name: "alknet", Level: level, Output: a.err, JSONFormat: a.v.GetBool("log_json")})
	a.removeLeftovers()
	return nil
}

// rereadConfig reads the config file again for a reload and returns its
// path ("" when there is none): the file given with --config, else the
// default one, found anew — a node started with the defaults takes a file
// created since, and one whose default file was removed goes back to the
// defaults.
func (a *app) rereadConfig() (string, error) {
	if a.v.GetString("config") != "" {
		return a.v.ConfigFileUsed(), a.v.ReadInConfig()
	}
	path := defaultConfigFile()
	if path == "" {
		if a.v.ConfigFileUsed() != "" {
			// Removed since it was read: an empty text in its format
			// (viper takes the type from the file's name) clears it.
			return "", a.v.ReadConfig(strings.NewReader(""))
		}
		return "", nil
	}
	a.v.SetConfigFile(path)
	return path, a.v.ReadInConfig()
}

// defaultConfigFile is the config file setup finds without --config:
// alknet.<ext> in the user's config directory's alknet/, the extensions in
// viper's order ("" if there is none).
func defaultConfigFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	for _, ext := range viper.SupportedExts {
		path := filepath.Join(dir, "alknet", "alknet."+ext)
		if st, err := os.Stat(path); err == nil && !st.IsDir() {
			return path
		}
	}
	return ""
}

// removeLeftovers removes, before any command uses the data directory,
// what writers killed half-way left in it: temporary files of its JSON
// files (one of vault.json may hold the seed in clear) and plugin install
// staging. Every command does it — `alknet serve` at its start, `alknet
// vault seal` before it seals — and entries a live process still holds are
// kept, so it is safe while a node or another command runs.
func (a *app) removeLeftovers() {
	d, err := a.dataDir()
	if err != nil || !d.Exists() {
		return
	}
	removed, err := d.RemoveLeftovers()
	more, err2 := pluginhost.OpenStore(d.PluginsPath()).RemoveLeftovers()
	for _, p := range append(removed, more...) {
		a.log.Info("removed the leftover of an interrupted write", "path", p)
	}
	if err := errors.Join(err, err2); err != nil {
		a.log.Warn("leftovers of interrupted writes remain; remove them by hand if no alknet command is running", "error", err)
	}
}

// dataDir resolves --data-dir / data_dir / ALKNET_DATA_DIR / the XDG default.
func (a *app) dataDir() (datadir.Dir, error) {
	p := a.v.GetString("data_dir")
	if p == "" {
		var err error
		if p, err = datadir.Default(); err != nil {
			return datadir.Dir{}, err
		}
	}
	return datadir.Open(p)
}

// config decodes and validates the settings (file, environment, flags)
// and merges the peers and API keys managed in <data>/auth.json.
func (a *app) config(d datadir.Dir) (*config.Config, error) {
	cfg, err := config.FromViper(a.v)
	if err != nil {
		if f := a.v.ConfigFileUsed(); f != "" {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		return nil, err
	}
	cfg.DataDir = d.Path
	managed, err := config.LoadAuthFile(config.AuthFilePath(d.Path))
	if err != nil {
		return nil, err
	}
	if err := cfg.MergeAuth(managed); err != nil {
		return nil, err
	}
	return cfg, nil
}

// openNodeVault opens the vault of the data directory in use.
func (a *app) openNodeVault() (*vault.Vault, datadir.Dir, error) {
	d, err := a.dataDir()
	if err != nil {
		return nil, d, err
	}
	v, _, err := a.openVault(d)
	return v, d, err
}

// openVault opens the node's vault, asking for the passphrase if sealed.
func (a *app) openVault(d datadir.Dir) (*vault.Vault, vault.Info, error) {
	f, err := vault.ReadFile(d.VaultPath())
	if err != nil {
		return nil, vault.Info{}, err
	}
	var pass vault.Secret
	if f.Info().Mode == vault.ModeSealed {
		if pass, err = a.passphrase("Vault passphrase: ", false); err != nil {
			return nil, f.Info(), err
		}
		defer pass.Wipe()
	}
	seed, err := f.Seed(pass.Bytes())
	if err != nil {
		return nil, f.Info(), err
	}
	v := vault.New()
	v.UnlockSeed(seed)
	return v, f.Info(), nil
}
