package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

func (a *app) pipeCmd() *cobra.Command {
	var f dialFlags
	var alpn string
	c := &cobra.Command{
		Use:   "pipe --alpn ALPN [--peer FP | --trust-on-first-use] HOST[:PORT] | HOST PORT",
		Short: "Connect stdin/stdout to one stream of a node (OpenSSH ProxyCommand, sftp -D, scripts)",
		Long: `Open one stream to HOST:PORT (port 4433 when omitted; "HOST PORT" as two
words is accepted too, as OpenSSH passes %h %p) with the given ALPN and copy standard input to it
and it to standard output. When stdin ends the stream is half-closed; the
command exits when the node closes its side.

The node is verified by --peer (its fingerprint, from 'alknet id'), else by
known_peers in the data directory, else by WebPKI for CA-issued certificates;
anything else fails closed and prints the fingerprint to pin.
--trust-on-first-use records an unknown node in known_peers; a later change of
identity is refused. If this machine has a vault, its node certificate is
presented so the server can recognise it.`,
		Example: `  alknet pipe --alpn alknet/echo --peer ed25519:… node.example:4433
  ssh -o ProxyCommand='alknet pipe --alpn alknet/ssh --peer ed25519:… %h %p' -p 4433 user@node`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(_ *cobra.Command, args []string) error {
			if alpn == "" {
				return errors.New("--alpn is required (e.g. --alpn alknet/ssh)")
			}
			addr, err := dial.AddrFromArgs(args)
			if err != nil {
				return err
			}
			o, err := a.dialOptions(&f, alpn)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			conn, err := dial.Dial(ctx, addr, o)
			cancel()
			if err != nil {
				return err
			}
			return pipe(conn, a.in, a.out)
		},
	}
	c.Flags().StringVar(&alpn, "alpn", "", "protocol to open (alknet/ssh, alknet/echo, …)")
	f.add(c)
	return c
}

// clientCert is this machine's node certificate, if its vault opens without
// asking (plain, or sealed with --vault-passphrase-file). A vault that is
// there but does not open is said on stderr: the node then sees an
// anonymous client, and the caller must know why its identity's scopes do
// not apply.
func (a *app) clientCert(d datadir.Dir) *tls.Certificate {
	f, err := vault.ReadFile(d.VaultPath())
	if err != nil {
		return nil
	}
	if f.Info().Mode == vault.ModeSealed && a.passphraseFile == "" {
		a.log.Warn("this machine's vault is sealed: its identity is not presented and the node sees an anonymous client; give --vault-passphrase-file FILE, or unseal it (alknet vault unseal)",
			"identity", f.Info().Fingerprint, "vault", d.VaultPath())
		return nil
	}
	v, _, err := a.openVault(d)
	if err != nil {
		a.log.Warn("this machine's vault did not open: its identity is not presented and the node sees an anonymous client",
			"identity", f.Info().Fingerprint, "error", err)
		return nil
	}
	defer v.Lock()
	k, err := v.NodeKey()
	if err != nil {
		return nil
	}
	cert, err := identity.RawKeyTLSCertificate(k.Signer())
	if err != nil {
		return nil
	}
	return &cert
}

// pipe copies in → stream (then half-closes) and stream → out, and
// returns when the node has finished sending or a signal ends it. Every
// way out closes the connection before pipe returns (CloseWithError sends
// the CONNECTION_CLOSE before it returns), so the node ends the
// connection at once rather than after its idle timeout: OpenSSH sends
// its ProxyCommand SIGHUP as it exits (docs/spec/handlers.md, SSH).
func pipe(conn endpoint.Conn, in io.Reader, out io.Writer) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	defer signal.Stop(sigs)
	defer conn.CloseWithError(endpoint.CodeNormal, "")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	s, err := conn.OpenStream(ctx)
	cancel()
	if err != nil {
		return closeReason(conn, err)
	}
	go func() {
		// Owned by pipe: it ends when stdin ends or the stream fails, and
		// the process exits right after pipe returns.
		buf := make([]byte, 64<<10)
		if _, err := io.CopyBuffer(s, in, buf); err != nil {
			s.CancelWrite(0)
			return
		}
		_ = s.CloseWrite()
	}()
	done := make(chan error, 1)
	go func() {
		// Owned by pipe, which waits for it or for a signal.
		buf := make([]byte, 64<<10)
		_, err := io.CopyBuffer(out, s, buf)
		done <- err
	}()
	select {
	case err := <-done:
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EPIPE):
			return nil // whoever read stdout is gone (ssh exited)
		}
		return closeReason(conn, err)
	case sig := <-sigs:
		s.CancelRead(0)
		s.CancelWrite(0)
		if sig == syscall.SIGHUP || sig == syscall.SIGPIPE {
			return nil // the program on the other side ended: a normal end
		}
		return fmt.Errorf("interrupted by %s", sig)
	}
}

// closeReason explains why the node closed the connection.
func closeReason(conn endpoint.Conn, err error) error {
	var ae *quic.ApplicationError
	cause := context.Cause(conn.Context())
	if errors.As(err, &ae) || errors.As(cause, &ae) {
		if ae.Remote {
			what := map[uint64]string{0: "closed", 1: "no handler", 2: "handler unavailable", 3: "forbidden", 4: "internal error"}[uint64(ae.ErrorCode)]
			if ae.ErrorMessage != "" {
				what = ae.ErrorMessage
			}
			return fmt.Errorf("connection closed by the node: %s (code %d)", what, ae.ErrorCode)
		}
	}
	return fmt.Errorf("stream: %w", err)
}
