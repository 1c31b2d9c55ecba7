package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/vault"
)

func (a *app) credentialCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "credential",
		Short: "Store secrets (API keys, tokens) encrypted by the vault",
		Long: `Credentials are secrets the node hands to plugins as capabilities. They are
stored in <data-dir>/credentials.json as AES-256-GCM blobs keyed by the vault;
the file never holds plaintext. Values are read from the terminal or standard
input, never from the command line or the environment.`,
	}
	c.AddCommand(a.credentialSetCmd(), a.credentialListCmd(), a.credentialRemoveCmd())
	return c
}

func (a *app) credentialStore() (*vault.CredentialStore, *vault.Vault, error) {
	v, d, err := a.openNodeVault()
	if err != nil {
		return nil, nil, err
	}
	return vault.NewCredentialStore(d.CredentialsPath(), v), v, nil
}

func (a *app) credentialSetCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "set NAME",
		Short:   "Store a secret under NAME (value from the terminal or stdin)",
		Example: "  alknet credential set openai            (asks for the value)\n  alknet credential set openai < key.txt\n  alknet credential set openai --vault-passphrase-file /root/node.pass < key.txt   (sealed vault)",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := vault.CheckCredentialName(args[0]); err != nil {
				return err
			}
			cs, v, err := a.credentialStore()
			if err != nil {
				return err
			}
			defer v.Lock()
			val, err := a.readSecretInput(fmt.Sprintf("Value for %s: ", args[0]))
			if err != nil {
				return err
			}
			defer clear(val)
			if len(val) == 0 {
				return fmt.Errorf("empty value for credential %q; nothing stored", args[0])
			}
			if err := cs.Set(args[0], val); err != nil {
				return err
			}
			a.log.Info("credential stored", "name", args[0])
			fmt.Fprintf(a.out, "stored credential %q\n", args[0])
			return nil
		},
	}
}

func (a *app) credentialListCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List stored credential names and key versions (never values)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			// Listing needs no key: names and versions are in clear.
			list, err := vault.NewCredentialStore(d.CredentialsPath(), nil).List()
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(nonNil(list))
			}
			if len(list) == 0 {
				fmt.Fprintln(a.err, "no credentials stored")
				return nil
			}
			fmt.Fprintf(a.out, "%-32s %s\n", "NAME", "KEY VERSION")
			for _, c := range list {
				fmt.Fprintf(a.out, "%-32s %d\n", c.Name, c.KeyVersion)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	return c
}

func (a *app) credentialRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Delete a stored credential",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			d, err := a.dataDir()
			if err != nil {
				return err
			}
			if err := vault.NewCredentialStore(d.CredentialsPath(), nil).Remove(args[0]); err != nil {
				return err
			}
			a.log.Info("credential removed", "name", args[0])
			fmt.Fprintf(a.out, "removed credential %q\n", args[0])
			return nil
		},
	}
}

// credentialSummary counts credentials and reads the current key version
// without the vault key.
func credentialSummary(path string) (int, int, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return 0, vault.DefaultKeyVersion, nil
	}
	cs := vault.NewCredentialStore(path, nil)
	list, err := cs.List()
	if err != nil {
		return 0, 0, err
	}
	ver, err := cs.KeyVersion()
	return len(list), ver, err
}
