package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

// settings are how the helper dials: `alknet pipe`'s flags, read from git's
// configuration (git config alknet.<key>, which `git -c` sets too) and,
// for the data directory and trust on first use, from the environment.
type settings struct {
	// dataDir is the alknet data directory: the vault (this machine's
	// identity) and known_peers.
	dataDir string
	// trustOnFirstUse records an unknown node in known_peers
	// (alknet.trustOnFirstUse, ALKNET_TRUST_ON_FIRST_USE).
	trustOnFirstUse bool
	// tcp and quic force one transport (alknet.tcp, alknet.quic).
	tcp, quic bool
	// serverName overrides the TLS server name (alknet.serverName).
	serverName string
	// caFile holds PEM roots for a CA-issued node (alknet.caFile).
	caFile string
	// connectTimeout bounds the dial (alknet.connectTimeout, a Go duration).
	connectTimeout time.Duration
	// passphraseFile opens a sealed vault (alknet.vaultPassphraseFile).
	passphraseFile string
	// statelessOnly offers git stateless-connect alone
	// (alknet.statelessConnect).
	statelessOnly bool
	// protocol is git's protocol.version: 0, 1 or 2 (git's default).
	protocol int
}

// Environment variables the helper reads.
const (
	envDataDir         = "ALKNET_DATA_DIR"
	envTrustOnFirstUse = "ALKNET_TRUST_ON_FIRST_USE"
)

// gitConfigKeys are the git configuration keys the helper reads, as git
// prints them (lower case).
var gitConfigKeys = `^(protocol\.version|alknet\.(datadir|trustonfirstuse|tcp|quic|servername|cafile|connecttimeout|vaultpassphrasefile|statelessconnect))$`

// loadSettings reads git's configuration (through `git config`, so that
// the repository's, the user's and `git -c` settings all count) and the
// environment.
func loadSettings(ctx context.Context) (*settings, error) {
	s := &settings{connectTimeout: 15 * time.Second, protocol: 2}
	kv, err := readGitConfig(ctx)
	if err != nil {
		return nil, err
	}
	var gitDataDir string
	for _, e := range kv {
		var err error
		switch e.key {
		case "protocol.version":
			switch e.value {
			case "0", "1", "2":
				s.protocol, _ = strconv.Atoi(e.value)
			default:
				err = errors.New("want 0, 1 or 2")
			}
		case "alknet.datadir":
			gitDataDir = e.value
		case "alknet.trustonfirstuse":
			s.trustOnFirstUse, err = parseBool(e.value)
		case "alknet.tcp":
			s.tcp, err = parseBool(e.value)
		case "alknet.quic":
			s.quic, err = parseBool(e.value)
		case "alknet.servername":
			s.serverName = e.value
		case "alknet.cafile":
			s.caFile = e.value
		case "alknet.connecttimeout":
			s.connectTimeout, err = time.ParseDuration(e.value)
			if err == nil && s.connectTimeout <= 0 {
				err = errors.New("want a positive duration")
			}
		case "alknet.vaultpassphrasefile":
			s.passphraseFile = e.value
		case "alknet.statelessconnect":
			s.statelessOnly, err = parseBool(e.value)
		}
		if err != nil {
			return nil, fmt.Errorf("git config %s = %q: %v (e.g. true, 30s); fix it with git config", e.key, e.value, err)
		}
	}
	if v, ok := os.LookupEnv(envTrustOnFirstUse); ok && v != "" {
		if s.trustOnFirstUse, err = parseBool(v); err != nil {
			return nil, fmt.Errorf("%s=%q: %v", envTrustOnFirstUse, v, err)
		}
	}
	if s.tcp && s.quic {
		return nil, errors.New("git config alknet.tcp and alknet.quic are both true: set at most one")
	}
	if s.dataDir, err = dataDir(gitDataDir); err != nil {
		return nil, err
	}
	return s, nil
}

// gitConfigEntry is one key = value of git's configuration.
type gitConfigEntry struct{ key, value string }

// readGitConfig runs `git config -z --get-regexp` for the helper's keys;
// later entries override earlier ones, as in git.
func readGitConfig(ctx context.Context) ([]gitConfigEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "config", "-z", "--get-regexp", gitConfigKeys)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return nil, nil // none of the keys is set (stderr may hold GIT_TRACE's lines)
	case err != nil:
		return nil, fmt.Errorf("read git's configuration (git config --get-regexp): %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var kv []gitConfigEntry
	for _, rec := range bytes.Split(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		// -z: the key, a newline, the value (no newline: a bare key,
		// which means true).
		k, v, ok := bytes.Cut(rec, []byte{'\n'})
		if !ok {
			v = []byte("true")
		}
		kv = append(kv, gitConfigEntry{key: strings.ToLower(string(k)), value: string(v)})
	}
	return kv, nil
}

// parseBool reads a boolean as git does: true/yes/on/1, false/no/off/0
// (any case); an empty value is false.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0", "":
		return false, nil
	}
	return false, errors.New("not a boolean: want true or false")
}

// dataDir finds the alknet data directory as `alknet` does: ALKNET_DATA_DIR,
// else git config alknet.dataDir, else data_dir of alknet's configuration
// file (ALKNET_CONFIG, else $XDG_CONFIG_HOME/alknet/alknet.toml), else
// $XDG_DATA_HOME/alknet or ~/.local/share/alknet.
func dataDir(fromGit string) (string, error) {
	if d := os.Getenv(envDataDir); d != "" {
		return d, nil
	}
	if fromGit != "" {
		return fromGit, nil
	}
	v := config.NewViper()
	if cf := v.GetString("config"); cf != "" {
		v.SetConfigFile(cf)
		if err := v.ReadInConfig(); err != nil {
			return "", fmt.Errorf("read alknet's configuration %s (ALKNET_CONFIG) for data_dir: %w", cf, err)
		}
	} else if dir, err := os.UserConfigDir(); err == nil {
		v.SetConfigName("alknet")
		v.AddConfigPath(dir + "/alknet")
		if err := v.ReadInConfig(); err != nil && !errors.As(err, new(viper.ConfigFileNotFoundError)) {
			return "", fmt.Errorf("read alknet's configuration for data_dir: %w", err)
		}
	}
	if d := v.GetString("data_dir"); d != "" {
		return d, nil
	}
	return datadir.Default()
}

// dialOptions are the options to reach t on ALPN alknet/git, verified as
// `alknet pipe` verifies a node: the URL's fingerprint, else known_peers,
// else WebPKI; trust on first use only when asked for. Warnings go to
// warn, which git shows.
func (s *settings) dialOptions(t target, warn io.Writer) (dial.Options, error) {
	o := dial.Options{ALPN: alpn, Peer: t.fingerprint, TrustOnFirstUse: s.trustOnFirstUse,
		TCP: s.tcp, QUIC: s.quic, ServerName: s.serverName}
	d, err := datadir.Open(s.dataDir)
	if err != nil {
		return o, err
	}
	o.KnownPeers = dial.OpenKnownPeers(d.KnownPeersPath())
	if o.TrustOnFirstUse {
		if err := d.Ensure(); err != nil {
			return o, err
		}
		o.OnRecord = func(addr, fp string) {
			fmt.Fprintf(warn, "warning: alknet: recorded the node at %s as %s in %s (trust on first use); a later change of its identity is refused\n",
				addr, fp, d.KnownPeersPath())
		}
	}
	o.ClientCert = s.clientCert(d, warn)
	if s.caFile != "" {
		pemBytes, err := os.ReadFile(s.caFile)
		if err != nil {
			return o, fmt.Errorf("git config alknet.caFile: %w", err)
		}
		o.RootCAs = x509.NewCertPool()
		if !o.RootCAs.AppendCertsFromPEM(pemBytes) {
			return o, fmt.Errorf("git config alknet.caFile %s: no PEM certificate found", s.caFile)
		}
	}
	return o, nil
}

// clientCert is this machine's node certificate from the vault of the
// data directory, presented so that the node knows who pushes and
// fetches. Without a vault the node sees an anonymous client (public
// repositories only); a vault that does not open is said on warn.
func (s *settings) clientCert(d datadir.Dir, warn io.Writer) *tls.Certificate {
	f, err := vault.ReadFile(d.VaultPath())
	if errors.Is(err, vault.ErrNoVault) {
		return nil
	}
	if err != nil {
		fmt.Fprintf(warn, "warning: alknet: this machine's vault is not readable, so the node sees an anonymous client: %v\n", err)
		return nil
	}
	var pass vault.Secret
	if f.Info().Mode == vault.ModeSealed {
		if s.passphraseFile == "" {
			fmt.Fprintf(warn, "warning: alknet: this machine's vault (%s, identity %s) is sealed, so the node sees an anonymous client; "+
				"name a passphrase file with git config alknet.vaultPassphraseFile FILE, or unseal it (alknet vault unseal)\n",
				d.VaultPath(), f.Info().Fingerprint)
			return nil
		}
		if pass, err = vault.ReadPassphraseFile(s.passphraseFile); err != nil {
			fmt.Fprintf(warn, "warning: alknet: git config alknet.vaultPassphraseFile: %v; the node sees an anonymous client\n", err)
			return nil
		}
		defer pass.Wipe()
	}
	seed, err := f.Seed(pass.Bytes())
	if err != nil {
		fmt.Fprintf(warn, "warning: alknet: this machine's vault (%s) did not open, so the node sees an anonymous client: %v\n", d.VaultPath(), err)
		return nil
	}
	v := vault.New()
	v.UnlockSeed(seed)
	defer v.Lock()
	k, err := v.NodeKey()
	if err != nil {
		fmt.Fprintf(warn, "warning: alknet: this machine's node key: %v; the node sees an anonymous client\n", err)
		return nil
	}
	cert, err := identity.RawKeyTLSCertificate(k.Signer())
	if err != nil {
		fmt.Fprintf(warn, "warning: alknet: this machine's node certificate: %v; the node sees an anonymous client\n", err)
		return nil
	}
	return &cert
}
