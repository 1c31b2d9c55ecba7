package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/vault"
)

func (a *app) vaultCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "vault",
		Short: "Manage the node's key vault (mnemonic, seal, rotation, derivation)",
		Long: `The vault derives every key of the node from one BIP39 mnemonic (SLIP-0010
ed25519, hardened paths under m/74'). It lives in <data-dir>/vault.json, mode
0600, either plain (the default, so the daemon restarts unattended) or sealed
with an Argon2id passphrase. Passphrases come from the terminal or
--vault-passphrase-file, never from the environment or the command line.`,
	}
	c.AddCommand(a.vaultInitCmd(), a.vaultRecoverCmd(), a.vaultSealCmd(), a.vaultUnsealCmd(),
		a.vaultStatusCmd(), a.vaultRotateCmd(), a.vaultDeriveCmd())
	return c
}

func (a *app) vaultInitCmd() *cobra.Command {
	var o createOpts
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a vault from a fresh mnemonic (printed once)",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return a.create(o) },
	}
	c.Flags().BoolVar(&o.seal, "seal", false, "seal the vault with a passphrase")
	c.Flags().BoolVar(&o.showOnce, "show-mnemonic-once", false, "print the mnemonic even when stdout is not a terminal (scripts)")
	return c
}

func (a *app) vaultRecoverCmd() *cobra.Command {
	var seal, force bool
	var bip39PassFile string
	c := &cobra.Command{
		Use:   "recover",
		Short: "Rebuild the vault file from the mnemonic (read from the terminal or stdin)",
		Long: `Rebuild <data-dir>/vault.json from the recovery words. The words are read
from the terminal without echo, or from standard input when it is not a
terminal; never from the command line. An existing vault for the same node
is replaced; a vault of a different node is kept unless --force is given.`,
		Example: "  alknet vault recover --data-dir /var/lib/alknet < words.txt",
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			words, err := a.readSecretInput("Recovery words: ")
			if err != nil {
				return err
			}
			m, err := vault.ParseMnemonic(withoutNumbers(string(words)))
			clear(words)
			if err != nil {
				return err
			}
			defer m.Wipe()
			var bip39Pass string
			if bip39PassFile != "" {
				s, err := vault.ReadPassphraseFile(bip39PassFile)
				if err != nil {
					return err
				}
				bip39Pass = string(s.Bytes())
				s.Wipe()
			}
			overwrite := force
			if d.HasVault() && !force {
				f, err := vault.ReadFile(d.VaultPath())
				if err == nil {
					seed, serr := m.Seed(bip39Pass)
					if serr != nil {
						return serr
					}
					v := vault.New()
					v.UnlockSeed(seed)
					k, _ := v.NodeKey()
					v.Lock()
					same := hex.EncodeToString(k.Public()) == strings.TrimPrefix(f.Info().Fingerprint, "ed25519:")
					k.Wipe()
					if !same {
						return fmt.Errorf("%s belongs to another node (%s); these words give a different key. Use --force to replace it", d.VaultPath(), f.Info().Fingerprint)
					}
					overwrite = true
				} else if !errors.Is(err, vault.ErrNoVault) {
					return fmt.Errorf("existing vault: %w (use --force to replace it)", err)
				}
			}
			fp, err := a.writeVault(d, m, bip39Pass, seal, overwrite)
			if err != nil {
				return err
			}
			a.printIdentity(d, fp)
			return nil
		},
	}
	c.Flags().BoolVar(&seal, "seal", false, "seal the recovered vault with a passphrase")
	c.Flags().BoolVar(&force, "force", false, "replace a vault that belongs to a different node")
	c.Flags().StringVar(&bip39PassFile, "bip39-passphrase-file", "", "file (mode 0600) with the optional BIP39 passphrase (the \"25th word\")")
	return c
}

// rewriteVault re-encodes the open vault in a new mode.
func (a *app) rewriteVault(to vault.Mode) error {
	d, err := a.dataDir()
	if err != nil {
		return err
	}
	v, info, err := a.openVault(d)
	if err != nil {
		return err
	}
	defer v.Lock()
	if info.Mode == to && to == vault.ModePlain {
		return fmt.Errorf("the vault at %s is already plain", d.VaultPath())
	}
	seed, err := v.Seed()
	if err != nil {
		return err
	}
	defer seed.Wipe()
	var pass vault.Secret
	if to == vault.ModeSealed {
		// Reuse the passphrase file if one was given; else ask for a new one.
		if pass, err = a.passphrase("New vault passphrase: ", true); err != nil {
			return err
		}
		defer pass.Wipe()
	}
	if err := vault.WriteFile(d.VaultPath(), seed, to, pass.Bytes(), vault.DefaultKDF); err != nil {
		return err
	}
	a.log.Info("vault rewritten", "path", d.VaultPath(), "mode", string(to))
	if to == vault.ModePlain {
		a.warnPlain(d)
	}
	fmt.Fprintf(a.out, "vault %s is now %s\n", d.VaultPath(), to)
	return nil
}

func (a *app) vaultSealCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "seal",
		Short: "Encrypt the vault seed with a passphrase (Argon2id + AES-256-GCM)",
		Long: `Encrypt the vault's seed with a key derived from a passphrase by Argon2id
(t=3, m=64 MiB, p=2). Run it again on a sealed vault to change the passphrase.
The node then needs the passphrase at every start: on the terminal, or with
--vault-passphrase-file pointing at a mode 0600 file.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return a.rewriteVault(vault.ModeSealed) },
	}
}

func (a *app) vaultUnsealCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "unseal",
		Short: "Store the vault seed unencrypted (mode 0600) so the node starts unattended",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return a.rewriteVault(vault.ModePlain) },
	}
}

func (a *app) vaultStatusCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the vault's mode, fingerprint and credential key version (no passphrase needed)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			f, err := vault.ReadFile(d.VaultPath())
			if err != nil {
				return err
			}
			creds, ver, err := credentialSummary(d.CredentialsPath())
			if err != nil {
				return err
			}
			st := struct {
				Path string `json:"path"`
				vault.Info
				Credentials int `json:"credentials"`
				KeyVersion  int `json:"credential_key_version"`
			}{d.VaultPath(), f.Info(), creds, ver}
			if asJSON {
				enc := json.NewEncoder(a.out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			fmt.Fprintf(a.out, "path:         %s\nformat:       %d\nmode:         %s\nfingerprint:  %s\n", st.Path, st.Format, st.Mode, st.Fingerprint)
			if k := st.KDF; k != nil {
				fmt.Fprintf(a.out, "kdf:          %s t=%d m=%d KiB p=%d\n", k.Name, k.Time, k.MemoryKiB, k.Threads)
			}
			fmt.Fprintf(a.out, "credentials:  %d (key version %d)\n", st.Credentials, st.KeyVersion)
			if st.Mode == vault.ModePlain {
				fmt.Fprintln(a.out, "note:         the seed is not sealed; 'alknet vault seal' protects it with a passphrase")
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func (a *app) vaultRotateCmd() *cobra.Command {
	var to int
	var force bool
	c := &cobra.Command{
		Use:   "rotate --to N",
		Short: "Re-encrypt every stored credential under key version N",
		Long: `Re-encrypt every credential in <data-dir>/credentials.json with the key at
m/74'/2'/0'/<N-2>' and make N the version for new credentials. Old versions stay
derivable, so a blob kept elsewhere still opens. The store is replaced in one
atomic write: on any error nothing changes. A version older than the current
one is refused unless --force is given.`,
		Example: "  alknet vault rotate --to 3",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("to") {
				return errors.New("give the new key version with --to N (N >= 2)")
			}
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			// Going back to an older key version undoes a rotation (a key
			// rotated away from may be compromised): only on purpose.
			if _, cur, err := credentialSummary(d.CredentialsPath()); err == nil && to >= vault.DefaultKeyVersion && to < cur && !force {
				return fmt.Errorf("--to %d is older than the current key version %d of %s; rotating back re-encrypts every credential under a key you rotated away from. Give --to %d or higher, or add --force if you mean it", to, cur, d.CredentialsPath(), cur+1)
			}
			v, d, err := a.openNodeVault()
			if err != nil {
				return err
			}
			defer v.Lock()
			n, err := vault.NewCredentialStore(d.CredentialsPath(), v).RotateAll(to)
			if err != nil {
				return err
			}
			a.log.Info("credentials rotated", "count", n, "key_version", to)
			fmt.Fprintf(a.out, "rotated %d credential(s) to key version %d\n", n, to)
			return nil
		},
	}
	c.Flags().IntVar(&to, "to", 0, "new key version (>= 2)")
	c.Flags().BoolVar(&force, "force", false, "allow a key version older than the current one")
	return c
}

func (a *app) vaultDeriveCmd() *cobra.Command {
	var public, private bool
	c := &cobra.Command{
		Use:   "derive PATH",
		Short: "Print the Ed25519 public key (or, with --private, the seed) at a SLIP-0010 path",
		Long: `Derive the Ed25519 key at a hardened SLIP-0010 path and print its public key
in hex. --private prints the 32-byte RFC 8032 seed instead: that is secret
key material, printed only when asked for.

Paths: m/74'/0'/0'/0' node identity, m/74'/0'/0'/<n>' device n,
m/74'/0'/1'/0' SSH host key, m/74'/2'/0'/<v-2>' credential key v,
m/74'/3'/0'/0' message key. Only hardened indices exist for ed25519.`,
		Example: "  alknet vault derive \"m/74'/0'/0'/0'\" --public",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if public && private {
				return errors.New("--public and --private exclude each other")
			}
			if _, err := vault.ParsePath(args[0]); err != nil {
				return err
			}
			v, _, err := a.openNodeVault()
			if err != nil {
				return err
			}
			defer v.Lock()
			k, err := v.DeriveEd25519(args[0])
			if err != nil {
				return err
			}
			defer k.Wipe()
			if private {
				s := k.Seed()
				fmt.Fprintln(a.out, hex.EncodeToString(s.Bytes()))
				s.Wipe()
				return nil
			}
			fmt.Fprintln(a.out, hex.EncodeToString(k.Public()))
			return nil
		},
	}
	c.Flags().BoolVar(&public, "public", false, "print the public key (the default)")
	c.Flags().BoolVar(&private, "private", false, "print the private seed instead (secret!)")
	return c
}
