package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/vault"
)

// callFlags: how to reach a node's alknet/call and as whom.
type callFlags struct {
	dialFlags
	tokenFile       string
	tokenCredential string
	timeout         time.Duration
}

func (f *callFlags) add(c *cobra.Command) {
	f.dialFlags.add(c)
	fl := c.Flags()
	fl.StringVar(&f.tokenFile, "token-file", "", "file (mode 0600) with a bearer token (alk_… API key or peer token) sent with each request")
	fl.StringVar(&f.tokenCredential, "token-credential", "", "name of a stored credential ('alknet credential set') holding the bearer token")
	fl.DurationVar(&f.timeout, "timeout", call.DefaultDeadline, "how long to wait for an answer")
}

// exitError carries an exit status for an error already printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// token reads the bearer token from a 0600 file or the credential store;
// never from argv or the environment (docs/architecture.md D8).
func (a *app) token(f *callFlags) (string, error) {
	switch {
	case f.tokenFile != "" && f.tokenCredential != "":
		return "", errors.New("give --token-file or --token-credential, not both")
	case f.tokenFile != "":
		s, err := vault.ReadPassphraseFile(f.tokenFile)
		if err != nil {
			return "", err
		}
		defer s.Wipe()
		return string(s.Bytes()), nil
	case f.tokenCredential != "":
		cs, v, err := a.credentialStore()
		if err != nil {
			return "", err
		}
		defer v.Lock()
		s, err := cs.Get(f.tokenCredential)
		if err != nil {
			return "", err
		}
		defer s.Wipe()
		return string(s.Bytes()), nil
	}
	return "", nil
}

// connectCall dials addr's alknet/call as a default-deny client that serves
// nothing but discovery.
func (a *app) connectCall(f *callFlags, addr string) (*call.Connection, error) {
	o, err := a.dialOptions(&f.dialFlags, call.ALPN)
	if err != nil {
		return nil, err
	}
	tok, err := a.token(f)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.dialFlags.timeout)
	defer cancel()
	cred := call.Credentials{TLS: o.ClientCert, AuthToken: tok, Peer: o.Peer, KnownPeers: o.KnownPeers,
		TrustOnFirstUse: o.TrustOnFirstUse, RootCAs: o.RootCAs, ServerName: o.ServerName, TCP: o.TCP, QUIC: o.QUIC}
	return call.New(nil, call.WithCallTimeout(f.timeout), call.WithLogger(a.log.Named("call"))).Connect(ctx, addr, cred)
}

// printCallError writes a call error as JSON on stderr and returns the
// exit status to use.
func (a *app) printCallError(err error) error {
	var ce *call.Error
	if !errors.As(err, &ce) {
		return err
	}
	b, _ := json.Marshal(ce)
	fmt.Fprintln(a.err, string(b))
	return exitError{code: 1}
}

func (a *app) writeJSON(raw json.RawMessage, indent bool) {
	var buf bytes.Buffer
	if indent && json.Indent(&buf, raw, "", "  ") == nil {
		fmt.Fprintln(a.out, buf.String())
		return
	}
	if !indent && json.Compact(&buf, raw) == nil {
		fmt.Fprintln(a.out, buf.String())
		return
	}
	fmt.Fprintln(a.out, string(raw))
}

func (a *app) callCmd() *cobra.Command {
	var f callFlags
	var subscribe bool
	c := &cobra.Command{
		Use:   "call [flags] HOST:PORT /svc/op [JSON | -]",
		Short: "Call an operation on a node (alknet/call) and print the answer as JSON",
		Long: `Send one request to HOST:PORT over alknet/call and print the answer as
indented JSON. The input is the third argument (JSON; default null), or '-'
to read it from stdin. With --subscribe every item is printed as one JSON
line until the subscription completes; Ctrl-C aborts it.

A call.error is printed as JSON on stderr and the exit status is 1.
The bearer token comes from --token-file or --token-credential, never from
the command line or the environment.`,
		Example: `  alknet call --peer ed25519:… node:4433 /services/list
  alknet call --peer ed25519:… --token-file ci.token node:4433 /echo/say '{"hi":1}'
  alknet call --peer ed25519:… --subscribe node:4433 /echo/ticks '{"count":3}'`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(_ *cobra.Command, args []string) error {
			input := json.RawMessage("null")
			if len(args) == 3 {
				raw := []byte(args[2])
				if args[2] == "-" {
					b, err := io.ReadAll(io.LimitReader(a.in, call.MaxFrame))
					if err != nil {
						return err
					}
					raw = b
				}
				if !json.Valid(raw) {
					return fmt.Errorf("input %q is not JSON (quote strings: '\"text\"')", truncate(string(raw), 60))
				}
				input = raw
			}
			conn, err := a.connectCall(&f, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if !subscribe {
				out, err := conn.Call(ctx, args[1], input)
				if err != nil {
					return a.printCallError(err)
				}
				a.writeJSON(out, true)
				return nil
			}
			sub, err := conn.Subscribe(ctx, args[1], input)
			if err != nil {
				return a.printCallError(err)
			}
			for item := range sub.Items {
				a.writeJSON(item, false)
			}
			if err := sub.Err(); err != nil {
				return a.printCallError(err)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&subscribe, "subscribe", false, "the operation is a subscription: print each item as a JSON line")
	f.add(c)
	return c
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func (a *app) servicesCmd() *cobra.Command {
	var f callFlags
	var asJSON bool
	c := &cobra.Command{
		Use:     "services HOST:PORT",
		Short:   "List the operations a node lets you call",
		Example: "  alknet services --peer ed25519:… node:4433",
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			conn, err := a.connectCall(&f, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			ops, err := conn.ServicesList(context.Background())
			if err != nil {
				return a.printCallError(err)
			}
			if asJSON {
				return a.printJSON(servicesJSON(ops))
			}
			w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "OPERATION\tTYPE")
			for _, op := range ops {
				fmt.Fprintf(w, "/%s\t%s\n", op.Name, op.OpType)
			}
			return w.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	f.add(c)
	return c
}

func (a *app) schemaCmd() *cobra.Command {
	var f callFlags
	c := &cobra.Command{
		Use:     "schema HOST:PORT svc/op",
		Short:   "Print the full spec (schemas, access control) of one operation",
		Example: "  alknet schema --peer ed25519:… node:4433 echo/ticks",
		Args:    cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			conn, err := a.connectCall(&f, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			raw, err := conn.Call(context.Background(), "services/schema", map[string]string{"name": args[1]})
			if err != nil {
				return a.printCallError(err)
			}
			a.writeJSON(raw, true)
			return nil
		},
	}
	f.add(c)
	return c
}
