// Package dial connects to Alknet nodes and verifies who answered
// (docs/spec/identity.md §2 client side): a pinned fingerprint, else WebPKI for
// X.509 servers, else fail closed — printing the server's fingerprint and
// how to trust it. Trust on first use records new peers in known_peers.
package dial

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

// Options say how to dial and what to trust.
type Options struct {
	// ALPN to negotiate (required).
	ALPN string
	// TCP dials TCP+TLS instead of QUIC.
	TCP bool
	// Peer is the expected fingerprint; when set, nothing else is trusted.
	Peer string
	// KnownPeers is consulted when Peer is empty (may be nil).
	KnownPeers *KnownPeers
	// TrustOnFirstUse records an unknown peer's fingerprint in KnownPeers.
	TrustOnFirstUse bool
	// ClientCert is presented so the server can resolve our identity.
	ClientCert *tls.Certificate
	// ServerName overrides SNI; default "alknet" for pinned/raw-key peers
	// and the host name otherwise.
	ServerName string
	// RootCAs replaces the system roots for WebPKI verification.
	RootCAs *x509.CertPool
	// KeepAlive for QUIC (default 10 s, below the server's idle timeout).
	KeepAlive time.Duration
	// OnRecord is called when a fingerprint is recorded by TOFU.
	OnRecord func(addr, fp string)
	// LocalIP, when set, is the local address to dial from (an address of
	// several on the host; tests use 127.0.0.2 to be "another source").
	LocalIP net.IP
}

// MismatchError is a pinned or known fingerprint that does not match.
type MismatchError struct {
	Addr, Expected, Got, Source string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("IDENTITY OF %s HAS CHANGED or is not who you expect: it presented %s but %s says %s. "+
		"If the node's key really changed, remove its line from known_peers or pass the new --peer; otherwise someone may be intercepting the connection",
		e.Addr, e.Got, e.Source, e.Expected)
}

// UntrustedError is a server nobody vouches for (fail closed).
type UntrustedError struct {
	Addr, Got string
	Reason    error
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("cannot verify %s: it presented %s, which is not pinned and no CA vouches for it (%v). "+
		"If you trust it, pass --peer %s, or --trust-on-first-use to record it in known_peers",
		e.Addr, e.Got, e.Reason, e.Got)
}

func splitAddr(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		return "", 0, fmt.Errorf("%q: port must be 1..65535", addr)
	}
	return host, n, nil
}

// tlsConfig builds the client TLS config with the verification rules.
func tlsConfig(addr string, o Options) (*tls.Config, error) {
	host, _, err := splitAddr(addr)
	if err != nil {
		return nil, err
	}
	pin, source := o.Peer, "--peer"
	if pin != "" {
		if pin, err = identity.ParseFingerprint(pin); err != nil {
			return nil, err
		}
	} else if o.KnownPeers != nil {
		if pin, err = o.KnownPeers.Lookup(addr); err != nil {
			return nil, err
		}
		source = "known_peers (" + o.KnownPeers.Path() + ")"
	}
	sni := o.ServerName
	if sni == "" {
		if pin != "" || net.ParseIP(host) != nil {
			sni = identity.RawKeySNI
		} else {
			sni = host
		}
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{o.ALPN},
		ServerName: sni,
		// Verification is done in VerifyConnection below: pinning must not
		// depend on a CA, and fail-closed needs the fingerprint in the error.
		InsecureSkipVerify: true,
	}
	if o.ClientCert != nil {
		cfg.Certificates = []tls.Certificate{*o.ClientCert}
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		// Fast path for a pinned raw key: TLS has already proven that the
		// server holds the leaf's key, so equal keys are the whole check;
		// the certificate's self-signature adds nothing (and costs a
		// signature verification per dial).
		if pub, ok := leaf.PublicKey.(ed25519.PublicKey); ok && strings.HasPrefix(pin, identity.PrefixEd25519) && identity.KeyFingerprint(pub) == pin {
			return nil
		}
		got := identity.LeafFingerprint(leaf)
		if pin != "" {
			if got != pin {
				return &MismatchError{Addr: addr, Expected: pin, Got: got, Source: source}
			}
			return nil
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		// WebPKI checks the name the user asked for: --server-name when
		// given (dialing a domain-hosted node by IP), else the host.
		verifyName := host
		if o.ServerName != "" {
			verifyName = o.ServerName
		}
		_, verr := leaf.Verify(x509.VerifyOptions{Roots: o.RootCAs, Intermediates: inter, DNSName: verifyName})
		if verr == nil {
			return nil
		}
		if o.TrustOnFirstUse && o.KnownPeers != nil {
			if err := o.KnownPeers.Add(addr, got); err != nil {
				return err
			}
			if o.OnRecord != nil {
				o.OnRecord(addr, got)
			}
			return nil
		}
		return &UntrustedError{Addr: addr, Got: got, Reason: verr}
	}
	return cfg, nil
}

// Dial connects to addr and negotiates o.ALPN. The returned Conn is a
// client-side connection: OpenStream for a new stream.
func Dial(ctx context.Context, addr string, o Options) (endpoint.Conn, error) {
	if o.ALPN == "" {
		return nil, errors.New("dial: an ALPN is required")
	}
	cfg, err := tlsConfig(addr, o)
	if err != nil {
		return nil, err
	}
	if o.TCP {
		d := tls.Dialer{Config: cfg}
		if o.LocalIP != nil {
			d.NetDialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: o.LocalIP}}
		}
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, explain(addr, o.ALPN, err)
		}
		return endpoint.WrapStreamConn(nc, nc.(*tls.Conn).ConnectionState().NegotiatedProtocol, auth.TransportTCPTLS), nil
	}
	ka := o.KeepAlive
	if ka == 0 {
		ka = 10 * time.Second
	}
	qcfg := &quic.Config{KeepAlivePeriod: ka, HandshakeIdleTimeout: 10 * time.Second}
	if o.LocalIP != nil {
		return dialFrom(ctx, addr, o, cfg, qcfg)
	}
	qc, err := quic.DialAddr(ctx, addr, cfg, qcfg)
	if err != nil {
		return nil, explain(addr, o.ALPN, err)
	}
	return endpoint.WrapQUIC(qc), nil
}

// dialFrom dials QUIC from o.LocalIP on a UDP socket of its own, closed
// with the connection.
func dialFrom(ctx context.Context, addr string, o Options, cfg *tls.Config, qcfg *quic.Config) (endpoint.Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: o.LocalIP})
	if err != nil {
		return nil, fmt.Errorf("dial from %s: %w", o.LocalIP, err)
	}
	tr := &quic.Transport{Conn: udp}
	qc, err := tr.Dial(ctx, raddr, cfg, qcfg)
	if err != nil {
		_ = tr.Close()
		return nil, explain(addr, o.ALPN, err)
	}
	context.AfterFunc(qc.Context(), func() { _ = tr.Close() })
	return endpoint.WrapQUIC(qc), nil
}

// explain turns handshake errors into something a user can act on.
func explain(addr, alpn string, err error) error {
	// quic-go wraps verification errors in a CRYPTO_ERROR; the user needs
	// our message, not the transport's.
	var me *MismatchError
	if errors.As(err, &me) {
		return me
	}
	var ue *UntrustedError
	if errors.As(err, &ue) {
		return ue
	}
	if isNoALPN(err) {
		return fmt.Errorf("connect %s: the node does not serve ALPN %q (no_application_protocol); check the plugin is installed and running: %w", addr, alpn, err)
	}
	return fmt.Errorf("connect %s (ALPN %s): %w", addr, alpn, err)
}

// isNoALPN reports a TLS no_application_protocol alert (120), on QUIC
// (CRYPTO_ERROR 0x100+120) or TCP.
func isNoALPN(err error) bool {
	var te *quic.TransportError
	if errors.As(err, &te) && te.ErrorCode == quic.TransportErrorCode(0x100+120) {
		return true
	}
	var ae tls.AlertError
	if errors.As(err, &ae) && ae == 120 {
		return true
	}
	return err != nil && strings.Contains(err.Error(), "no application protocol")
}

// IsNoALPN reports whether err is a failed ALPN negotiation.
func IsNoALPN(err error) bool { return isNoALPN(err) }
