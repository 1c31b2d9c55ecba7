// Package endpoint is the node's front door (docs/architecture.md D1, docs/spec/identity.md §1): QUIC
// on one UDP port and TCP+TLS on the same TCP port, plus optional plain-TCP
// ports mapped to one ALPN. The TLS handshake picks the protocol by ALPN;
// each connection is handed with its AuthContext to the handler registered
// for that ALPN, in its own goroutine, with panic recovery.
package endpoint

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/config"
	"alknet.dev/alknet/core/identity"
)

// Handler serves connections of one ALPN. ctx is cancelled when the node
// starts draining: stop accepting new streams and return once the streams
// in progress are done. The connection is closed (code 0) when ServeConn
// returns nil, with code 4 when it returns an error or panics.
type Handler interface {
	ServeConn(ctx context.Context, c Conn, a auth.AuthContext) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c Conn, a auth.AuthContext) error

// ServeConn calls f.
func (f HandlerFunc) ServeConn(ctx context.Context, c Conn, a auth.AuthContext) error {
	return f(ctx, c, a)
}

// CertSource supplies the server certificate for a handshake.
type CertSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// ChallengeSource is implemented by identities that answer ACME
// TLS-ALPN-01 challenges ("acme-tls/1" is offered only while one is pending).
type ChallengeSource interface {
	ChallengePending(*tls.ClientHelloInfo) bool
}

const acmeALPN = "acme-tls/1"

// closeGrace is how long a connection whose handler finished normally stays
// open for the peer to read the last bytes and close it itself.
const closeGrace = 2 * time.Second

// Options configure an Endpoint.
type Options struct {
	// Listen is host:port for both UDP (QUIC) and TCP (TLS). Port 0 picks
	// a free port number that is bound on both.
	Listen string
	// Plain lists plain-TCP listeners mapped to one ALPN each.
	Plain []config.PlainListener
	// Certs is the TLS identity.
	Certs CertSource
	// Auth resolves client fingerprints to identities.
	Auth *auth.Provider
	// Limits returns the current (dynamic) limits.
	Limits func() config.Limits
	// DrainTimeout bounds graceful shutdown.
	DrainTimeout time.Duration
	Logger       hclog.Logger
}

type route struct {
	owner string
	h     Handler
}

// Endpoint accepts connections and routes them by ALPN.
type Endpoint struct {
	opts Options
	log  hclog.Logger

	mu     sync.RWMutex
	routes map[string]route

	udp      *net.UDPConn
	tr       *quic.Transport
	qln      *quic.Listener
	tcp      net.Listener
	plainLns []net.Listener

	srcMu   sync.Mutex
	perSrc  map[netip.Prefix]int // connections per source; zero entries are removed
	total   int                  // connections of every source
	conns   sync.Map             // Conn → struct{}
	handler sync.WaitGroup
	accept  sync.WaitGroup

	drainCtx    context.Context
	startDrain  context.CancelFunc
	closed      atomic.Bool
	startedOnce sync.Once
}

// New returns an endpoint; Register handlers, then Start.
func New(o Options) *Endpoint {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 2 * time.Second
	}
	if o.Auth == nil {
		o.Auth = auth.NewProvider(nil)
	}
	if o.Limits == nil {
		l := config.Limits{MaxConnections: 10000, MaxConnectionsPerIP: 100, IPv6PrefixLen: auth.DefaultIPv6Prefix, MaxAuthAttempts: 5,
			HandshakeTimeout: 5 * time.Second, IdleTimeout: 30 * time.Second, MaxStreamsPerConnection: 100}
		o.Limits = func() config.Limits { return l }
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Endpoint{opts: o, log: o.Logger, routes: map[string]route{}, perSrc: map[netip.Prefix]int{}, drainCtx: ctx, startDrain: cancel}
}

// Register routes alpn to h. owner names who registered it (for errors).
// A second registration of the same ALPN is an error naming both owners.
func (e *Endpoint) Register(alpn, owner string, h Handler) error {
	if alpn == "" || len(alpn) > 255 {
		return fmt.Errorf("register ALPN %q for %s: must be 1-255 bytes", alpn, owner)
	}
	if alpn == acmeALPN {
		return fmt.Errorf("register ALPN %q for %s: reserved for ACME challenges", alpn, owner)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.routes[alpn]; ok {
		return fmt.Errorf("ALPN %q is registered twice: by %s and by %s", alpn, r.owner, owner)
	}
	e.routes[alpn] = route{owner: owner, h: h}
	return nil
}

// Unregister removes alpn if owner registered it. New handshakes stop
// offering it at once; connections already routed are not touched.
func (e *Endpoint) Unregister(alpn, owner string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.routes[alpn]; ok && r.owner == owner {
		delete(e.routes, alpn)
	}
}

// ALPNs returns the advertised set in deterministic (sorted) order.
func (e *Endpoint) ALPNs() []string {
	e.mu.RLock()
	defer e.mu.RUnlock()
	out := make([]string, 0, len(e.routes))
	for a := range e.routes {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// ServeInternal routes an in-process connection (see Pipe) to the handler
// of its ALPN, as if it had arrived from the network with ac, and returns
// at once; the handler runs in its own goroutine and the connection is
// closed when it returns. It fails if no handler is registered for the
// ALPN. The caller decides the identity in ac: the core, never a plugin
// (docs/architecture.md D15).
func (e *Endpoint) ServeInternal(c Conn, ac auth.AuthContext) error {
	h, ok := e.handlerFor(c.ALPN())
	if !ok {
		return fmt.Errorf("no handler for ALPN %q in this node", c.ALPN())
	}
	ac.ALPN = c.ALPN()
	if ac.RemoteAddr == nil {
		ac.RemoteAddr = c.RemoteAddr()
	}
	if ac.Transport == "" {
		ac.Transport = c.Transport()
	}
	e.handler.Add(1)
	go func() {
		defer e.handler.Done()
		code, reason := e.run(h, c, ac)
		_ = c.CloseWithError(code, reason)
	}()
	return nil
}

func (e *Endpoint) handlerFor(alpn string) (Handler, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	r, ok := e.routes[alpn]
	return r.h, ok
}

// Start binds the listeners and starts accepting. With port 0 it picks a
// port number free on both UDP and TCP.
func (e *Endpoint) Start() error {
	host, port, err := config.SplitHostPort(e.opts.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	limits := e.opts.Limits()
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		udp, err := net.ListenUDP("udp", udpAddr(host, port))
		if err != nil {
			return fmt.Errorf("listen udp %s: %w", e.opts.Listen, err)
		}
		p := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			udp.Close()
			lastErr = err
			if port == 0 {
				continue // that number is taken on TCP; try another
			}
			return fmt.Errorf("listen tcp %s: %w", net.JoinHostPort(host, strconv.Itoa(p)), err)
		}
		e.udp, e.tcp = udp, tcp
		break
	}
	if e.udp == nil {
		return fmt.Errorf("no port free on both UDP and TCP for %s: %w", e.opts.Listen, lastErr)
	}
	e.tr = &quic.Transport{Conn: e.udp}
	qconf := &quic.Config{
		HandshakeIdleTimeout:  limits.HandshakeTimeout,
		MaxIdleTimeout:        limits.IdleTimeout,
		MaxIncomingStreams:    int64(limits.MaxStreamsPerConnection),
		MaxIncomingUniStreams: -1,
	}
	e.qln, err = e.tr.Listen(e.tlsConfig(false), qconf)
	if err != nil {
		e.udp.Close()
		e.tcp.Close()
		return fmt.Errorf("listen quic %s: %w", e.udp.LocalAddr(), err)
	}
	for _, pl := range e.opts.Plain {
		ln, err := net.Listen("tcp", pl.Addr)
		if err != nil {
			e.closeListeners()
			return fmt.Errorf("listen plain tcp %s (alpn %s): %w", pl.Addr, pl.ALPN, err)
		}
		e.plainLns = append(e.plainLns, ln)
	}
	e.accept.Add(2 + len(e.plainLns))
	go e.acceptQUIC()
	go e.acceptTCP()
	for i, ln := range e.plainLns {
		go e.acceptPlain(ln, e.opts.Plain[i].ALPN)
	}
	e.log.Info("listening", "quic", e.udp.LocalAddr().String(), "tcp", e.tcp.Addr().String(), "alpns", fmt.Sprint(e.ALPNs()))
	for i, ln := range e.plainLns {
		e.log.Info("listening plain tcp", "addr", ln.Addr().String(), "alpn", e.opts.Plain[i].ALPN)
	}
	return nil
}

func udpAddr(host string, port int) *net.UDPAddr {
	a := &net.UDPAddr{Port: port}
	if host != "" {
		a.IP = net.ParseIP(host)
		if a.IP == nil {
			if ips, err := net.LookupIP(host); err == nil && len(ips) > 0 {
				a.IP = ips[0]
			}
		}
	}
	return a
}

// UDPAddr is the bound QUIC address.
func (e *Endpoint) UDPAddr() net.Addr { return e.udp.LocalAddr() }

// TCPAddr is the bound TCP+TLS address.
func (e *Endpoint) TCPAddr() net.Addr { return e.tcp.Addr() }

// PlainAddrs are the bound plain-TCP addresses, in config order.
func (e *Endpoint) PlainAddrs() []net.Addr {
	out := make([]net.Addr, len(e.plainLns))
	for i, ln := range e.plainLns {
		out[i] = ln.Addr()
	}
	return out
}

func (e *Endpoint) acceptQUIC() {
	defer e.accept.Done()
	for {
		qc, err := e.qln.Accept(context.Background())
		if err != nil {
			return
		}
		c := WrapQUIC(qc)
		if !e.admit(c) {
			continue
		}
		e.dispatch(c)
	}
}

func (e *Endpoint) acceptTCP() {
	defer e.accept.Done()
	tconf := e.tlsConfig(true)
	for {
		nc, err := e.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Warn("tcp accept failed", "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !e.reserve(nc.RemoteAddr(), auth.TransportTCPTLS) {
			nc.Close()
			continue
		}
		e.handler.Add(1)
		go func() {
			defer e.handler.Done()
			tc := tls.Server(&alertConn{Conn: nc}, tconf)
			ctx, cancel := context.WithTimeout(context.Background(), e.opts.Limits().HandshakeTimeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				e.release(nc.RemoteAddr())
				e.log.Info("connection rejected", "remote_addr", nc.RemoteAddr().String(), "transport", auth.TransportTCPTLS, "reason", "handshake failed: "+err.Error())
				nc.Close()
				return
			}
			alpn := tc.ConnectionState().NegotiatedProtocol
			if alpn == acmeALPN {
				// The CA has seen the challenge certificate; nothing more to do.
				e.release(nc.RemoteAddr())
				tc.Close()
				return
			}
			e.serve(WrapStreamConn(tc, alpn, auth.TransportTCPTLS))
		}()
	}
}

func (e *Endpoint) acceptPlain(ln net.Listener, alpn string) {
	defer e.accept.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			e.log.Warn("plain tcp accept failed", "addr", ln.Addr().String(), "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !e.reserve(nc.RemoteAddr(), auth.TransportTCP) {
			nc.Close()
			continue
		}
		e.handler.Add(1)
		go func() {
			defer e.handler.Done()
			e.serve(WrapStreamConn(nc, alpn, auth.TransportTCP))
		}()
	}
}

func (e *Endpoint) dispatch(c Conn) {
	e.handler.Add(1)
	go func() {
		defer e.handler.Done()
		e.serve(c)
	}()
}

// serve resolves the identity, logs, runs the handler and closes.
func (e *Endpoint) serve(c Conn) {
	defer e.release(c.RemoteAddr())
	start := time.Now()
	remote := c.RemoteAddr().String()
	ac := auth.AuthContext{ALPN: c.ALPN(), RemoteAddr: c.RemoteAddr(), Transport: c.Transport()}
	if certs := c.PeerCertificates(); len(certs) > 0 {
		ac.Fingerprint = identity.CertFingerprint(certs[0])
		ac.Identity = e.opts.Auth.Policy().ResolveFingerprint(ac.Fingerprint)
		// A certificate nobody is configured for is not a failed login:
		// the connection goes on anonymously (fail2ban matches reject).
		pol := e.opts.Auth.Policy()
		id, result := ac.Fingerprint, "anonymous"
		switch {
		case ac.Identity != nil:
			id, result = ac.Identity.ID, "accept"
		case pol.Disabled(ac.Fingerprint):
			result = "reject" // a known peer that is disabled
		}
		e.log.Info("auth attempt", "remote_addr", remote, "method", "tls", "id", id, "result", result)
	}
	h, ok := e.handlerFor(ac.ALPN)
	if !ok {
		e.log.Info("connection rejected", "remote_addr", remote, "transport", ac.Transport, "alpn", ac.ALPN, "reason", "no handler")
		_ = c.CloseWithError(CodeNoHandler, "no handler")
		return
	}
	e.log.Info("connection opened", "remote_addr", remote, "transport", ac.Transport, "alpn", ac.ALPN)
	if sc, ok := c.(*streamConn); ok {
		// TCP carries no keepalive of its own: a connection where nothing
		// moves and nothing is in progress is closed, as QUIC's idle
		// timeout closes a silent QUIC connection.
		sc.watchIdle(e.opts.Limits().IdleTimeout, func() {
			e.log.Info("connection closed by the idle timeout", "remote_addr", remote, "alpn", ac.ALPN, "idle_timeout", e.opts.Limits().IdleTimeout.String())
		})
	}
	e.conns.Store(c, struct{}{})
	defer e.conns.Delete(c)
	code, reason := e.run(h, c, ac)
	if code == CodeNormal {
		// Let the peer read what the handler wrote last: a QUIC close sent
		// now would discard stream data still queued. The peer closes once
		// it has read everything; a silent peer gets closeGrace.
		t := time.NewTimer(closeGrace)
		select {
		case <-c.Context().Done():
		case <-t.C:
		}
		t.Stop()
	}
	_ = c.CloseWithError(code, reason)
	e.log.Info("connection closed", "remote_addr", remote, "alpn", ac.ALPN, "duration_secs", fmt.Sprintf("%.3f", time.Since(start).Seconds()))
}

// run calls the handler, turning a panic into a close of this connection
// only (code 4), logged with the ALPN.
func (e *Endpoint) run(h Handler, c Conn, ac auth.AuthContext) (code CloseCode, reason string) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("handler panic", "alpn", ac.ALPN, "remote_addr", ac.RemoteAddr.String(), "panic", fmt.Sprint(r))
			code, reason = CodeInternal, "internal"
		}
	}()
	if err := h.ServeConn(e.drainCtx, c, ac); err != nil && !errors.Is(err, context.Canceled) {
		e.log.Warn("handler error", "alpn", ac.ALPN, "remote_addr", ac.RemoteAddr.String(), "error", err)
		return CodeInternal, "internal"
	}
	return CodeNormal, ""
}

func (e *Endpoint) closeListeners() {
	if e.qln != nil {
		e.qln.Close()
	}
	if e.tcp != nil {
		e.tcp.Close()
	}
	for _, ln := range e.plainLns {
		ln.Close()
	}
}

// Shutdown stops accepting, lets handlers finish for up to the drain
// timeout (returning early when all are done), then closes what remains
// with code 0 "shutdown". It is safe to call more than once.
func (e *Endpoint) Shutdown() {
	if !e.closed.CompareAndSwap(false, true) {
		return
	}
	e.closeListeners()
	e.accept.Wait()
	e.startDrain()
	open, _ := e.Counts()
	e.log.Info("draining: listeners closed, open connections may finish", "connections", open, "drain_timeout", e.opts.DrainTimeout.String())
	done := make(chan struct{})
	go func() { e.handler.Wait(); close(done) }()
	timer := time.NewTimer(e.opts.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		n := 0
		e.conns.Range(func(k, _ any) bool {
			_ = k.(Conn).CloseWithError(CodeNormal, "shutdown")
			n++
			return true
		})
		e.log.Info("drain timeout: closed remaining connections", "count", n, "drain_timeout", e.opts.DrainTimeout.String())
		<-done
	}
	if e.tr != nil {
		e.tr.Close()
	}
	if e.udp != nil {
		e.udp.Close()
	}
}

func rawCerts(certs []*x509.Certificate) [][]byte {
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.Raw
	}
	return out
}
