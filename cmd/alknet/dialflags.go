package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/dial"
)

// dialFlags are the flags every command that connects to a node shares:
// whom to trust and how to reach it.
type dialFlags struct {
	o       dial.Options
	caFile  string
	timeout time.Duration
}

func (f *dialFlags) add(c *cobra.Command) {
	f.addTrust(c)
	fl := c.Flags()
	fl.BoolVar(&f.o.TCP, "tcp", false, "use TCP+TLS only (default: race QUIC and TCP+TLS, QUIC first)")
	fl.BoolVar(&f.o.QUIC, "quic", false, "use QUIC only (default: race QUIC and TCP+TLS, QUIC first)")
	c.MarkFlagsMutuallyExclusive("tcp", "quic")
}

// addTrust adds the flags of add but the transport's (--tcp, --quic),
// for a command that chooses the transport itself.
func (f *dialFlags) addTrust(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.o.Peer, "peer", "", "expected node fingerprint (ed25519:… or SHA256:…, from 'alknet id')")
	fl.BoolVar(&f.o.TrustOnFirstUse, "trust-on-first-use", false, "accept and record an unknown node in known_peers")
	fl.StringVar(&f.o.ServerName, "server-name", "", "TLS server name (default: alknet for pinned nodes, else the host)")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM roots to verify a CA-issued node against, instead of the system roots")
	fl.DurationVar(&f.timeout, "connect-timeout", 15*time.Second, "give up connecting after this long")
}

// options completes the dial options from the data directory: known_peers,
// trust on first use, the client certificate and extra roots.
func (a *app) dialOptions(f *dialFlags, alpn string) (dial.Options, error) {
	o := f.o
	o.ALPN = alpn
	d, err := a.dataDir()
	if err != nil {
		return o, err
	}
	o.KnownPeers = dial.OpenKnownPeers(d.KnownPeersPath())
	if o.TrustOnFirstUse {
		if err := d.Ensure(); err != nil {
			return o, err
		}
		o.OnRecord = func(addr, fp string) {
			a.log.Warn("recorded new peer in known_peers (trust on first use)", "addr", addr, "fingerprint", fp, "file", d.KnownPeersPath())
		}
	}
	o.ClientCert = a.clientCert(d)
	if f.caFile != "" {
		pemBytes, err := os.ReadFile(f.caFile)
		if err != nil {
			return o, fmt.Errorf("--ca-file: %w", err)
		}
		o.RootCAs = x509.NewCertPool()
		if !o.RootCAs.AppendCertsFromPEM(pemBytes) {
			return o, fmt.Errorf("--ca-file %s: no PEM certificate found", f.caFile)
		}
	}
	return o, nil
}

// node reads a node argument, FINGERPRINT@HOST[:PORT] (as `alknet serve`
// prints it) or HOST[:PORT], into the address to dial; a fingerprint
// there pins the node as --peer does, and one that contradicts --peer is
// an error.
func (f *dialFlags) node(arg string) (string, error) {
	fp, addr, err := dial.ParseTarget(arg)
	if err != nil {
		return "", fmt.Errorf("node %q: %w", arg, err)
	}
	if fp != "" {
		if f.o.Peer != "" && f.o.Peer != fp {
			return "", fmt.Errorf("node %q names fingerprint %s but --peer says %s: give one", arg, fp, f.o.Peer)
		}
		f.o.Peer = fp
	}
	return addr, nil
}
