// Package dial connects to Alknet nodes and verifies who answered
// (docs/spec/identity.md §2 client side): a pinned fingerprint, else WebPKI for
// X.509 servers, else fail closed — printing the server's fingerprint and
// how to trust it. Trust on first use records new peers in known_peers.
// Unless told otherwise it races QUIC against TCP+TLS, QUIC first, and
// keeps the first connection that is established and verified.
package dial

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	// TCP dials TCP+TLS only; QUIC dials QUIC only. With neither, Dial
	// races both (QUIC first, TCP+TLS after TCPHeadStart) and keeps the
	// first connection whose handshake and verification complete.
	TCP, QUIC bool
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

// DefaultPort is the port a node serves on (UDP and TCP) unless
// configured otherwise, and the one dialled when an address has none.
const DefaultPort = 4433

// NormalizeAddr returns addr as host:port, the form known_peers records:
// "node.example", "127.0.0.1", "::1" and "[::1]" get DefaultPort;
// "node.example:5000" and "[::1]:5000" are kept. An IPv6 address with a
// port needs brackets ("::1:5000" is the host ::1:5000).
func NormalizeAddr(addr string) (string, error) {
	a := strings.TrimSpace(addr)
	var host, port string
	switch {
	case a == "":
		return "", fmt.Errorf("empty address: give HOST[:PORT], e.g. node.example:%d", DefaultPort)
	case strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]"):
		host, port = a[1:len(a)-1], strconv.Itoa(DefaultPort)
	case !strings.HasPrefix(a, "[") && strings.Count(a, ":") != 1:
		// A host name, an IPv4 address, or an IPv6 address without
		// brackets (which cannot carry a port).
		host, port = a, strconv.Itoa(DefaultPort)
	default:
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			return "", fmt.Errorf("%q is not HOST[:PORT] (IPv6 with a port needs brackets: [::1]:%d)", addr, DefaultPort)
		}
		host, port = h, p
	}
	if host == "" || strings.ContainsAny(host, "[] /") {
		return "", fmt.Errorf("%q: bad host %q; give HOST[:PORT], e.g. node.example:%d or [::1]:%d", addr, host, DefaultPort, DefaultPort)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("%q: port %q must be a number 1..65535", addr, port)
	}
	return net.JoinHostPort(host, port), nil
}

// AddrFromArgs builds the address from command-line words: "HOST[:PORT]",
// or "HOST PORT" as OpenSSH passes %h %p (the host may be a bare IPv6
// address then, e.g. "::1" "4433").
func AddrFromArgs(args []string) (string, error) {
	switch len(args) {
	case 1:
		return NormalizeAddr(args[0])
	case 2:
		host := strings.TrimSuffix(strings.TrimPrefix(args[0], "["), "]")
		if host == "" || strings.ContainsAny(host, "[] /") {
			return "", fmt.Errorf("%q is not a host name or address", args[0])
		}
		if n, err := strconv.Atoi(args[1]); err != nil || n <= 0 || n > 65535 {
			return "", fmt.Errorf("port %q must be a number 1..65535", args[1])
		}
		return net.JoinHostPort(host, args[1]), nil
	}
	return "", fmt.Errorf("want HOST[:PORT] or HOST PORT, got %d arguments", len(args))
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

// Dial connects to addr (HOST[:PORT], see NormalizeAddr) and negotiates
// o.ALPN. The returned Conn is a client-side connection: OpenStream for a
// new stream. Unless o.TCP or o.QUIC forces one transport, QUIC and
// TCP+TLS are raced (docs/spec/identity.md §2, client side).
func Dial(ctx context.Context, addr string, o Options) (endpoint.Conn, error) {
	if o.ALPN == "" {
		return nil, errors.New("dial: an ALPN is required")
	}
	if o.TCP && o.QUIC {
		return nil, errors.New("dial: --tcp and --quic exclude each other; give at most one")
	}
	norm, err := NormalizeAddr(addr)
	if err != nil {
		return nil, err
	}
	addr = norm
	if o.OnRecord != nil {
		// Both transports may verify the same unknown node in a race:
		// report the recording once.
		var once sync.Once
		rec := o.OnRecord
		o.OnRecord = func(a, fp string) { once.Do(func() { rec(a, fp) }) }
	}
	cfg, err := tlsConfig(addr, o)
	if err != nil {
		return nil, err
	}
	switch {
	case o.TCP:
		c, err := dialTCP(ctx, addr, o, cfg)
		if err != nil {
			return nil, failure(addr, o, time.Now(), []attempt{{transport: "TCP", err: err}})
		}
		return c, nil
	case o.QUIC:
		c, err := dialQUIC(ctx, addr, o, cfg)
		if err != nil {
			return nil, failure(addr, o, time.Now(), []attempt{{transport: "QUIC", err: err}})
		}
		return c, nil
	}
	return race(ctx, addr, o, cfg)
}

// TCPHeadStart is how long QUIC runs alone before TCP+TLS joins the race,
// as browsers give HTTP/3 a head start over HTTP/2: on a network that
// passes UDP the QUIC handshake (one round trip) is done well within it,
// so a node is reached over QUIC and no TCP connection is made; on one
// that drops UDP, connecting costs this much extra, which is barely
// noticeable for an interactive command.
const TCPHeadStart = 250 * time.Millisecond

// QUICGrace bounds, from the start of the dial, how long QUIC may stay
// silent once TCP has failed (connection refused, say): a node that is
// down answers neither, and the user should hear so in well under 2 s, not
// after QUIC's 10 s handshake idle timeout. A QUIC handshake that reaches
// a node at all finishes far sooner on any usable network.
const QUICGrace = time.Second

// attempt is one transport's outcome.
type attempt struct {
	transport string // "QUIC" or "TCP"
	conn      endpoint.Conn
	err       error
}

// errNoAnswer stands for a transport that was still waiting for the node
// when the dial gave up on it.
var errNoAnswer = errors.New("no answer")

// race dials QUIC, then TCP+TLS after TCPHeadStart (at once if QUIC fails
// first), and returns the first connection established; the other
// attempt is cancelled, waited for and closed. A verification or ALPN
// failure on either transport ends the dial with that error: it is the
// same node, and the other transport's success must not hide it.
func race(ctx context.Context, addr string, o Options, cfg *tls.Config) (endpoint.Conn, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan attempt, 2)
	running := map[string]bool{}
	launch := func(transport string, fn func(context.Context, string, Options, *tls.Config) (endpoint.Conn, error)) {
		running[transport] = true
		c := cfg.Clone()
		go func() {
			// Owned by race, which waits for every launched attempt
			// (finish) before returning.
			conn, err := fn(ctx, addr, o, c)
			results <- attempt{transport: transport, conn: conn, err: err}
		}()
	}
	// finish cancels what is still running, waits for it and closes any
	// connection it managed to establish anyway.
	finish := func() {
		cancel()
		for range running {
			if r := <-results; r.conn != nil {
				_ = r.conn.CloseWithError(endpoint.CodeNormal, "")
			}
		}
		clear(running)
	}
	launch("QUIC", dialQUIC)
	headStart := time.NewTimer(TCPHeadStart)
	defer headStart.Stop()
	var grace <-chan time.Time
	var failed []attempt
	for {
		select {
		case <-headStart.C:
			if !running["TCP"] && !failedOn(failed, "TCP") {
				launch("TCP", dialTCP)
			}
		case r := <-results:
			delete(running, r.transport)
			if r.err == nil {
				finish()
				return r.conn, nil
			}
			if isFinal(r.err) {
				finish()
				return nil, explain(addr, o.ALPN, r.err)
			}
			failed = append(failed, r)
			if r.transport == "QUIC" && !running["TCP"] && !failedOn(failed, "TCP") {
				headStart.Stop()
				launch("TCP", dialTCP) // no reason to wait any longer
			}
			if len(running) == 0 {
				return nil, failure(addr, o, start, failed)
			}
			if r.transport == "TCP" && running["QUIC"] {
				t := time.NewTimer(max(0, QUICGrace-time.Since(start)))
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			finish()
			return nil, failure(addr, o, start, append(failed, attempt{transport: "QUIC", err: errNoAnswer}))
		case <-ctx.Done():
			cause := context.Cause(ctx)
			for tr := range running {
				failed = append(failed, attempt{transport: tr, err: errNoAnswer})
			}
			finish()
			return nil, fmt.Errorf("%w (%v)", failure(addr, o, start, failed), cause)
		}
	}
}

func failedOn(failed []attempt, transport string) bool {
	for _, a := range failed {
		if a.transport == transport {
			return true
		}
	}
	return false
}

// isFinal reports an answer from the node itself that the other transport
// would get as well: its identity failed verification, or it does not
// serve the ALPN.
func isFinal(err error) bool {
	var me *MismatchError
	var ue *UntrustedError
	return errors.As(err, &me) || errors.As(err, &ue) || isNoALPN(err)
}

// failure describes a dial where no transport connected: what each one
// tried and got, and what to check.
func failure(addr string, o Options, start time.Time, failed []attempt) error {
	for _, a := range failed {
		if isFinal(a.err) {
			return explain(addr, o.ALPN, a.err)
		}
	}
	_, port, _ := net.SplitHostPort(addr)
	// QUIC first, whichever gave up first: the order they were tried in.
	slices.SortStableFunc(failed, func(a, b attempt) int { return strings.Compare(a.transport, b.transport) })
	var parts []string
	for _, a := range failed {
		parts = append(parts, a.transport+": "+describe(a.err, time.Since(start)))
	}
	hint := fmt.Sprintf("is the node running and is port %s open (UDP and TCP)?", port)
	switch {
	case o.TCP:
		hint = fmt.Sprintf("is the node running and is TCP port %s open? Without --tcp QUIC (UDP) is tried too", port)
	case o.QUIC:
		hint = fmt.Sprintf("is the node running and is UDP port %s open? Without --quic TCP is tried too", port)
	}
	return &ConnectError{Addr: addr, Summary: strings.Join(parts, "; "), Hint: hint, attempts: failed}
}

// ConnectError is a dial on which no transport reached the node.
type ConnectError struct {
	Addr, Summary, Hint string
	attempts            []attempt
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("dial %s: %s — %s", e.Addr, e.Summary, e.Hint)
}

// Unwrap gives the transports' errors to errors.Is/As.
func (e *ConnectError) Unwrap() []error {
	var errs []error
	for _, a := range e.attempts {
		errs = append(errs, a.err)
	}
	return errs
}

// describe says in a few words what one transport got.
func describe(err error, elapsed time.Duration) string {
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	var ne net.Error
	switch {
	case errors.Is(err, errNoAnswer), errors.As(err, &idle), errors.As(err, &hs),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("no answer within %s", elapsed.Round(100*time.Millisecond))
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset by the node"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return "network unreachable"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "cannot resolve the host name: " + dnsErr.Err
	}
	return err.Error()
}

// dialTCP connects over TCP+TLS.
func dialTCP(ctx context.Context, addr string, o Options, cfg *tls.Config) (endpoint.Conn, error) {
	d := tls.Dialer{Config: cfg}
	if o.LocalIP != nil {
		d.NetDialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: o.LocalIP}}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return endpoint.WrapStreamConn(nc, nc.(*tls.Conn).ConnectionState().NegotiatedProtocol, auth.TransportTCPTLS), nil
}

// dialQUIC connects over QUIC.
func dialQUIC(ctx context.Context, addr string, o Options, cfg *tls.Config) (endpoint.Conn, error) {
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
		return nil, err
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
		return nil, err
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

// ParseTarget splits a node's dial string, "FINGERPRINT@HOST[:PORT]" (as
// `alknet serve` prints it) or "HOST[:PORT]", into the pinned fingerprint
// ("" when none is given) and the address.
func ParseTarget(s string) (fingerprint, addr string, err error) {
	if fp, rest, ok := strings.Cut(s, "@"); ok {
		if !strings.Contains(fp, ":") || fp == "" {
			return "", "", fmt.Errorf("%q: want FINGERPRINT@HOST[:PORT] with a fingerprint like ed25519:<hex>", s)
		}
		fingerprint, s = fp, rest
	}
	addr, err = NormalizeAddr(s)
	return fingerprint, addr, err
}
