package call

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

// ALPN of the call protocol.
const ALPN = "alknet/call"

// Adapter is the alknet/call handler of the endpoint: it hands each
// connection to a Session over the node's registry. Its callers are not
// remote-filtered; access control (scopes) governs them.
type Adapter struct {
	Registry    *Registry
	Policy      func() *auth.Policy
	CallTimeout time.Duration
	Logger      hclog.Logger
	// Limits returns the bounds for a new connection (nil: the defaults);
	// it is read per connection, so a reload applies to the next one.
	Limits func() Limits
	// NodeBudget is the node-wide budget of request bytes in flight.
	NodeBudget *Budget

	live sync.Map // *Session → struct{}: the connections being served
}

// SessionStats describes one connection served: who, and what it holds.
type SessionStats struct {
	RemoteAddr   string `json:"remote_addr"`
	Transport    string `json:"transport"`
	Identity     string `json:"identity,omitempty"`
	InFlight     int    `json:"requests_in_flight"`
	RequestBytes int64  `json:"request_bytes"`
}

// Sessions lists the connections being served, most requests first.
func (a *Adapter) Sessions() []SessionStats {
	out := []SessionStats{}
	a.live.Range(func(k, _ any) bool {
		s := k.(*Session)
		st := SessionStats{RemoteAddr: s.remote(), Transport: s.conn.Transport(), InFlight: len(s.inflight), RequestBytes: s.connBudget.Used()}
		if s.o.Identity != nil {
			st.Identity = s.o.Identity.ID
		}
		out = append(out, st)
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].InFlight > out[j].InFlight })
	return out
}

var _ endpoint.Handler = (*Adapter)(nil)

// ServeConn runs the shared dispatcher until the connection closes or the
// node drains.
func (a *Adapter) ServeConn(ctx context.Context, c endpoint.Conn, ac auth.AuthContext) error {
	var l Limits
	if a.Limits != nil {
		l = a.Limits()
	}
	s := NewSession(c, SessionOptions{Registry: a.Registry, Identity: ac.Identity, Policy: a.Policy, CallTimeout: a.CallTimeout, Logger: a.Logger,
		Limits: l, NodeBudget: a.NodeBudget})
	a.live.Store(s, struct{}{})
	defer a.live.Delete(s)
	s.Run(ctx)
	return nil
}

// Credentials say who this client is and whom it expects (docs/spec/call.md
// §7). They come from the vault and capabilities, never from the
// environment.
type Credentials struct {
	// TLS is presented to the server (the local node certificate).
	TLS *tls.Certificate
	// AuthToken is sent in every request (optional).
	AuthToken string
	// Peer is the expected server fingerprint (pin).
	Peer string
	// KnownPeers and TrustOnFirstUse as for dial.
	KnownPeers      *dial.KnownPeers
	TrustOnFirstUse bool
	RootCAs         *x509.CertPool
	ServerName      string
	// TCP uses TCP+TLS (one stream) only, QUIC only QUIC; with neither
	// both are raced (dial.Options).
	TCP, QUIC bool
	// LocalIP dials from this local address (optional).
	LocalIP net.IP
}

// String never shows the token.
func (c Credentials) String() string {
	return fmt.Sprintf("call credentials (peer %s, token set: %v)", c.Peer, c.AuthToken != "")
}

// Client dials nodes and serves the remote side's calls from its registry.
type Client struct {
	reg     *Registry
	trusted bool
	policy  func() *auth.Policy
	log     hclog.Logger
	timeout time.Duration
}

// ClientOption adjusts a Client.
type ClientOption func(*Client)

// WithPolicy resolves the remote node's fingerprint (and tokens) to an
// identity for access control of the calls it makes to us.
func WithPolicy(p func() *auth.Policy) ClientOption { return func(c *Client) { c.policy = p } }

// WithLogger sets the logger.
func WithLogger(l hclog.Logger) ClientOption { return func(c *Client) { c.log = l } }

// WithCallTimeout sets the default timeout of outgoing calls.
func WithCallTimeout(d time.Duration) ClientOption { return func(c *Client) { c.timeout = d } }

// New returns a default-deny client: while serving the remote side of its
// connections, only remote_safe operations exist (NOT_FOUND before the
// handler runs or any capability is read), and services/list hides the rest.
func New(reg *Registry, opts ...ClientOption) *Client { return newClient(reg, false, opts) }

// TrustedPeer returns a client that serves the remote side every external
// operation (still subject to access control). Use only for peers you
// trust as much as yourself.
func TrustedPeer(reg *Registry, opts ...ClientOption) *Client { return newClient(reg, true, opts) }

func newClient(reg *Registry, trusted bool, opts []ClientOption) *Client {
	c := &Client{reg: reg, trusted: trusted, log: hclog.NewNullLogger()}
	for _, o := range opts {
		o(c)
	}
	if c.reg == nil {
		c.reg = NewRegistry(c.log)
	}
	return c
}

// Connection is a live call connection: this side's calls go out, the
// remote side's calls are served. Safe to share between goroutines.
type Connection struct {
	*Session
	Fingerprint string
	done        chan struct{}
}

// Connect dials addr with ALPN alknet/call and starts the shared dispatcher.
func (c *Client) Connect(ctx context.Context, addr string, cred Credentials) (*Connection, error) {
	conn, err := dial.Dial(ctx, addr, dial.Options{
		ALPN: ALPN, TCP: cred.TCP, QUIC: cred.QUIC, Peer: cred.Peer, KnownPeers: cred.KnownPeers, TrustOnFirstUse: cred.TrustOnFirstUse,
		ClientCert: cred.TLS, RootCAs: cred.RootCAs, ServerName: cred.ServerName, LocalIP: cred.LocalIP,
	})
	if err != nil {
		return nil, err
	}
	return c.Attach(conn, cred.AuthToken), nil
}

// Attach runs the dispatcher over an already established connection;
// token (may be empty) is sent with every outgoing request.
func (c *Client) Attach(conn endpoint.Conn, token string) *Connection {
	fp := ""
	var remote *auth.Identity
	if certs := conn.PeerCertificates(); len(certs) > 0 {
		fp = identity.CertFingerprint(certs[0])
		if c.policy != nil {
			remote = c.policy().ResolveFingerprint(fp)
		}
	}
	s := NewSession(conn, SessionOptions{Registry: c.reg, Identity: remote, Policy: c.policy, RemoteFilter: !c.trusted, CallTimeout: c.timeout, Logger: c.log, AuthToken: token})
	cc := &Connection{Session: s, Fingerprint: fp, done: make(chan struct{})}
	go func() {
		// Owned by the connection: ends when it closes.
		defer close(cc.done)
		s.Run(s.ctx)
	}()
	return cc
}

// Close closes the connection and waits for its dispatcher.
func (cc *Connection) Close() error {
	err := cc.Session.Close()
	<-cc.done
	return err
}
