package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"alknet.dev/alknet/core/vault"
)

// errNoTerminal explains how to give a secret when there is no terminal.
var errNoTerminal = errors.New("no terminal to ask for the vault passphrase: give --vault-passphrase-file FILE (mode 0600)")

// passphrase returns the vault passphrase from --vault-passphrase-file or
// the controlling terminal (never argv or the environment, docs/architecture.md D8). confirm asks
// twice, for setting a new passphrase.
func (a *app) passphrase(prompt string, confirm bool) (vault.Secret, error) {
	if a.passphraseFile != "" {
		return vault.ReadPassphraseFile(a.passphraseFile)
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return vault.Secret{}, errNoTerminal
	}
	defer tty.Close()
	p1, err := readHidden(tty, prompt)
	if err != nil {
		return vault.Secret{}, err
	}
	if len(p1) == 0 {
		return vault.Secret{}, errors.New("empty passphrase")
	}
	if confirm {
		p2, err := readHidden(tty, "Repeat passphrase: ")
		if err != nil {
			return vault.Secret{}, err
		}
		same := bytes.Equal(p1, p2)
		clear(p2)
		if !same {
			clear(p1)
			return vault.Secret{}, errors.New("the two passphrases differ; nothing was changed")
		}
	}
	s := vault.NewSecret(p1)
	clear(p1)
	return s, nil
}

func readHidden(tty *os.File, prompt string) ([]byte, error) {
	fmt.Fprint(tty, prompt)
	b, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return nil, fmt.Errorf("read from terminal: %w", err)
	}
	return b, nil
}

// readSecretInput reads a secret (a mnemonic, a credential) from the
// terminal without echo when stdin is one, else all of stdin with one
// trailing newline removed. Never from argv.
func (a *app) readSecretInput(prompt string) ([]byte, error) {
	if f, ok := a.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(a.err, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.err)
		if err != nil {
			return nil, fmt.Errorf("read from terminal: %w", err)
		}
		return b, nil
	}
	b, err := io.ReadAll(bufio.NewReader(io.LimitReader(a.in, 1<<20)))
	if err != nil {
		return nil, fmt.Errorf("read standard input: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return b, nil
}
