package main

import (
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

// defaultPort is the UDP (QUIC) and TCP (TLS) port of a node (docs/architecture.md D1).
const defaultPort = 4433

type createOpts struct {
	seal     bool
	showOnce bool
}

func (a *app) initCmd() *cobra.Command {
	var o createOpts
	c := &cobra.Command{
		Use:   "init",
		Short: "Create the data directory and vault of a new node",
		Long: `Create the node's data directory (mode 0700) and its vault from a fresh
24-word BIP39 mnemonic, print the mnemonic once, and print the node's
fingerprint and dial string.

The mnemonic is the only way to recover the node's keys: it is never written
to disk. By default the seed is kept in a plain 0600 file so the node can
restart unattended; --seal (or later 'alknet vault seal') encrypts it with a
passphrase.

Refuses to touch a data directory that already has a vault.`,
		Example: "  alknet init --data-dir /var/lib/alknet\n  alknet init --seal --vault-passphrase-file /root/alknet.pass",
		Args:    cobra.NoArgs,
		RunE:    func(*cobra.Command, []string) error { return a.create(o) },
	}
	c.Flags().BoolVar(&o.seal, "seal", false, "seal the vault with a passphrase (asked on the terminal or --vault-passphrase-file)")
	c.Flags().BoolVar(&o.showOnce, "show-mnemonic-once", false, "print the mnemonic even when stdout is not a terminal (scripts)")
	return c
}

// create is `alknet init` and `alknet vault init`.
func (a *app) create(o createOpts) error {
	d, err := a.dataDir()
	if err != nil {
		return err
	}
	if d.HasVault() {
		return fmt.Errorf("%s already exists; refusing to overwrite a node's keys (choose another --data-dir, or use 'alknet vault recover --force')", d.VaultPath())
	}
	if !o.showOnce && !isTerminal(a.out) {
		return fmt.Errorf("standard output is not a terminal: pass --show-mnemonic-once to print the recovery words anyway (they are shown only this once)")
	}
	m, err := vault.NewMnemonic()
	if err != nil {
		return err
	}
	defer m.Wipe()
	fp, err := a.writeVault(d, m, "", o.seal, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.out, "Recovery words for this node (shown once, never stored; write them down in this order):\n\n%s\n", wordGrid(m.Phrase()))
	a.printIdentity(d, fp)
	return nil
}

// wordGrid numbers the recovery words in rows of four, so that they are
// copied in order and none is skipped; `alknet vault recover` takes them
// with or without the numbers.
func wordGrid(phrase string) string {
	var b, row strings.Builder
	for i, w := range strings.Fields(phrase) {
		fmt.Fprintf(&row, "%4d. %-9s", i+1, w)
		if i%4 == 3 {
			b.WriteString(strings.TrimRight(row.String(), " ") + "\n")
			row.Reset()
		}
	}
	if row.Len() > 0 {
		b.WriteString(strings.TrimRight(row.String(), " ") + "\n")
	}
	return b.String()
}

// withoutNumbers drops the numbers wordGrid puts before the words ("1.",
// "2", "3)"), so the words can be typed back as they were written down.
func withoutNumbers(s string) string {
	var words []string
	for _, f := range strings.Fields(s) {
		if strings.Trim(strings.TrimRight(f, ".):"), "0123456789") == "" {
			continue
		}
		words = append(words, f)
	}
	return strings.Join(words, " ")
}

// writeVault derives the seed from m and writes the vault file, sealed if
// asked. It returns the node fingerprint.
func (a *app) writeVault(d datadir.Dir, m vault.Mnemonic, bip39Pass string, seal, overwrite bool) (string, error) {
	if err := d.Ensure(); err != nil {
		return "", err
	}
	if d.HasVault() && !overwrite {
		return "", fmt.Errorf("%s already exists; refusing to overwrite", d.VaultPath())
	}
	seed, err := m.Seed(bip39Pass)
	if err != nil {
		return "", err
	}
	defer seed.Wipe()
	mode := vault.ModePlain
	var pass vault.Secret
	if seal {
		mode = vault.ModeSealed
		if pass, err = a.passphrase("New vault passphrase: ", true); err != nil {
			return "", err
		}
		defer pass.Wipe()
	}
	if err := vault.WriteFile(d.VaultPath(), seed, mode, pass.Bytes(), vault.DefaultKDF); err != nil {
		return "", err
	}
	f, err := vault.ReadFile(d.VaultPath())
	if err != nil {
		return "", err
	}
	a.log.Info("vault written", "path", d.VaultPath(), "mode", string(mode), "fingerprint", f.Info().Fingerprint)
	if mode == vault.ModePlain {
		a.warnPlain(d)
	}
	return f.Info().Fingerprint, nil
}

func (a *app) warnPlain(d datadir.Dir) {
	a.log.Warn("vault is not sealed: the seed is stored unencrypted (mode 0600); run 'alknet vault seal' to protect it with a passphrase", "path", d.VaultPath())
}

func (a *app) printIdentity(d datadir.Dir, fp string) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	fmt.Fprintf(a.out, "Node data:    %s\nFingerprint:  %s\nDial string:  %s@%s:%d\n", d.Path, fp, fp, host, defaultPort)
}

func (a *app) idCmd() *cobra.Command {
	var certPEM, pin, browserPin, asJSON bool
	c := &cobra.Command{
		Use:   "id",
		Short: "Print the node's fingerprint (works while the vault is sealed)",
		Long: `Print the node's identity fingerprint, ed25519:<64 hex>, the string peers pin
(--peer on 'alknet pipe', fingerprints in [[auth.peers]]). It is read from the
vault file's clear header, so no passphrase is needed.

--cert prints the node's TLS certificate (PEM) instead: a deterministic
self-signed certificate carrying the node key, identical on every run. It
needs the vault unlocked.

--pin prints the key's pin for HTTP clients, sha256//<base64>: give it to
curl --pinnedpubkey (with -k, as the certificate names no host).

--browser-pin prints the pin of the certificate the node shows browsers
(they cannot verify Ed25519: the node gives them an ECDSA P-256 certificate
whose key it derives from its own). Chromium takes the part after sha256//
in --ignore-certificate-errors-spki-list. It needs the vault unlocked.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			if certPEM || browserPin {
				return a.printNodeCert(d, browserPin)
			}
			f, err := vault.ReadFile(d.VaultPath())
			if err != nil {
				return err
			}
			fp, err := identity.ParseFingerprint(f.Info().Fingerprint)
			if err != nil {
				return err
			}
			if pin {
				p, err := identity.SPKIPin(fp)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.out, p)
				return nil
			}
			if asJSON {
				return a.printJSON(idJSON{Fingerprint: fp})
			}
			fmt.Fprintln(a.out, fp)
			return nil
		},
	}
	c.Flags().BoolVar(&certPEM, "cert", false, "print the node's TLS certificate as PEM")
	c.Flags().BoolVar(&pin, "pin", false, "print the key's pin for curl --pinnedpubkey (sha256//<base64>)")
	c.Flags().BoolVar(&browserPin, "browser-pin", false, "print the pin of the certificate browsers get (sha256//<base64>)")
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	return c
}

func (a *app) printNodeCert(d datadir.Dir, browserPin bool) error {
	v, _, err := a.openVault(d)
	if err != nil {
		return err
	}
	defer v.Lock()
	k, err := v.NodeKey()
	if err != nil {
		return err
	}
	defer k.Wipe()
	if browserPin {
		p, err := identity.BrowserPin(k.Signer())
		if err != nil {
			return err
		}
		fmt.Fprintln(a.out, p)
		return nil
	}
	der, err := identity.RawKeyCertificate(k.Signer())
	if err != nil {
		return err
	}
	return pem.Encode(a.out, &pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
