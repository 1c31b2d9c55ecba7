package ssh

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/plugins/sdk"
)

// streamConn is a stream as the net.Conn gossh runs on: its remote address
// is a *net.TCPAddr when the node gave ip:port (so certificate
// source-address restrictions can be checked), Close also ends a pending
// Read at once rather than when the peer finishes its side, and a client
// whose first bytes are not "SSH-" is cut off at once, as sshd does
// (gossh would wait for a version line until the handshake deadline).
type streamConn struct {
	*sdk.Stream
	remote net.Addr
	seen   int // bytes of the "SSH-" prefix checked so far (gossh reads from one goroutine)
}

var errNotSSH = errors.New("client did not send an SSH identification string")

func (s *streamConn) RemoteAddr() net.Addr { return s.remote }

func (s *streamConn) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	for i := 0; i < n && s.seen < len(sshPrefix); i++ {
		if p[i] != sshPrefix[s.seen] {
			return 0, errNotSSH
		}
		s.seen++
	}
	return n, err
}

const sshPrefix = "SSH-"

// serverVersion is the plugin's identification line (without CR LF).
var serverVersion = "SSH-2.0-alknet_" + Version

func (s *streamConn) Close() error {
	_ = s.Stream.SetReadDeadline(time.Unix(1, 0))
	return s.Stream.Close()
}

// serverConn is one authenticated SSH connection.
type serverConn struct {
	h     *Plugin
	cfg   *config
	sconn *gossh.ServerConn
	id    *sdk.Identity
	// actor is what bridges to other handlers act as: the node's session
	// for a key it resolved, else the connection itself (an identity from
	// the plugin's own settings is never stated to the node).
	actor  sdk.Actor
	node   *sdk.Conn // the node's connection the SSH connection runs on
	source string    // peer | authorized_keys | certificate
	noPTY  bool
	remote string
	since  time.Time
	log    hclog.Logger

	wg             sync.WaitGroup // every goroutine of the connection
	noMoreSessions atomic.Bool
	sessions       *channelLimit // max_sessions
	forwardings    *channelLimit // max_forward_channels: direct-tcpip and forwarded-tcpip

	mu       sync.Mutex
	closed   bool
	forwards map[string]net.Listener // tcpip-forward listeners by addr:port
}

// serveStream runs one SSH connection on st until it ends; everything it
// started has ended when it returns. authDone is called once the
// connection is authenticated or failed to be (max_startups counts it
// until then).
func (h *Plugin) serveStream(ctx context.Context, node *sdk.Conn, cfg *config, signer gossh.Signer, st *sdk.Stream, authDone func()) {
	log := h.logger()
	remote := node.Auth().RemoteAddr
	nc := &streamConn{Stream: st, remote: tcpAddr(remote)}
	a := &authenticator{ctx: ctx, conn: node, cfg: cfg, log: log, remote: remote}
	defer a.close()
	sc := &gossh.ServerConfig{
		PublicKeyCallback:         a.publicKey,
		VerifiedPublicKeyCallback: a.verified,
		AuthLogCallback:           a.attempted,
		MaxAuthTries:              cfg.maxAuthAttempts,
		ServerVersion:             serverVersion,
	}
	// Explicit lists: the library's defaults include SHA-1 key exchange
	// and MACs (settings.go, DefaultKexAlgorithms).
	sc.Ciphers, sc.KeyExchanges, sc.MACs = cfg.ciphers, cfg.kex, cfg.macs
	sc.AddHostKey(signer)

	// The banner, key exchange and authentication must finish in time: a
	// client that sends garbage or stalls only loses its own connection.
	handshakeDeadline := time.Now().Add(cfg.handshakeTimeout)
	_ = st.SetReadDeadline(handshakeDeadline)
	var conn net.Conn = nc
	if cfg.preferServer {
		pc, kex := readClientStart(nc, serverVersion, handshakeDeadline)
		if kex != nil {
			sc.Ciphers = preferredCiphers(cfg.ciphers, kex)
		}
		conn = pc
	}
	sconn, chans, reqs, err := gossh.NewServerConn(conn, sc)
	authDone()
	if err != nil {
		// A client that tried to authenticate and never did: its source
		// accrues a penalty. One that failed before (key exchange, garbage)
		// guessed nothing.
		if a.failures() > 0 {
			h.penalise(cfg, remote)
		}
		log.Info("ssh handshake failed", "remote_addr", remote, "error", err.Error())
		return // NewServerConn closed nc
	}
	_ = st.SetReadDeadline(time.Time{})

	id, err := identityOf(sconn.Permissions)
	if err != nil { // cannot happen: every accepted key carries one
		log.Error("ssh connection without identity", "remote_addr", remote)
		_ = sconn.Close()
		return
	}
	_, noPTY := sconn.Permissions.Extensions[extNoPTY]
	var actor sdk.Actor = node
	if sess := a.session(sconn.Permissions.Extensions[extKey]); sess != nil {
		actor = sess
	}
	c := &serverConn{h: h, cfg: cfg, sconn: sconn, id: id, actor: actor, node: node, source: sconn.Permissions.Extensions[extSource], noPTY: noPTY,
		remote: remote, since: time.Now(), log: log.With("remote_addr", remote, "id", id.ID), forwards: map[string]net.Listener{},
		sessions:    &channelLimit{what: "session", setting: "max_sessions", max: cfg.maxSessions},
		forwardings: &channelLimit{what: "forward", setting: "max_forward_channels", max: cfg.maxForwards}}
	h.track(c)
	defer h.untrack(c)

	cctx, cancel := context.WithCancel(ctx)
	c.spawn("close", func() {
		<-cctx.Done() // the node closed the connection, or the SSH connection ended
		_ = sconn.Close()
	})
	c.spawn("global requests", func() { c.globalRequests(cctx, reqs) })
	if cfg.aliveInterval > 0 {
		c.spawn("keepalive", func() { c.keepAlive(cctx, cancel) })
	}
	for nch := range chans {
		// Limits are applied here, in the order the client opened its
		// channels, before a goroutine exists for the channel.
		sl, ok := c.admitChannel(cctx, nch)
		if !ok {
			continue
		}
		c.spawn("channel", func() { c.channel(cctx, nch, sl) })
	}
	// The SSH connection ended: stop its programs, listeners and bridges.
	cancel()
	c.mu.Lock()
	c.closed = true
	for k, ln := range c.forwards {
		_ = ln.Close()
		delete(c.forwards, k)
	}
	c.mu.Unlock()
	c.wg.Wait()
	fields := []any{"duration_secs", int(time.Since(c.since).Seconds())}
	for _, l := range []*channelLimit{c.sessions, c.forwardings} {
		if n := l.refusedCount(); n > 0 {
			fields = append(fields, "refused_"+l.setting, n)
		}
	}
	c.log.Info("ssh connection closed", fields...)
}

// admitChannel applies no-more-sessions, max_sessions and
// max_forward_channels to a channel the client opens, refusing it when
// they say no. The slot (nil for other channel types) is the channel's
// place under its limit.
func (c *serverConn) admitChannel(ctx context.Context, nch gossh.NewChannel) (*slot, bool) {
	var l *channelLimit
	switch nch.ChannelType() {
	case "session":
		if c.noMoreSessions.Load() {
			_ = nch.Reject(gossh.Prohibited, "no more sessions")
			return nil, false
		}
		l = c.sessions
	case "direct-tcpip":
		l = c.forwardings
	default:
		return nil, true
	}
	sl, ok := l.acquire(ctx)
	if !ok {
		c.limitReached(l)
		_ = nch.Reject(gossh.ResourceShortage, l.message())
	}
	return sl, ok
}

// limitReached logs the first channel a limit refuses on this connection;
// the count is on the "ssh connection closed" line.
func (c *serverConn) limitReached(l *channelLimit) {
	if l.noteRefused() == 1 {
		c.log.Info("channel refused", "type", l.what, "reason", l.setting, "limit", l.max)
	}
}

// spawn runs f in a goroutine owned by the connection.
func (c *serverConn) spawn(what string, f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.h.recoverPanic(what)
		f()
	}()
}

func (c *serverConn) channel(ctx context.Context, nch gossh.NewChannel, sl *slot) {
	defer sl.release()
	switch t := nch.ChannelType(); t {
	case "session":
		c.session(ctx, nch, sl)
	case "direct-tcpip":
		c.directTCPIP(ctx, nch)
	default:
		// x11 and auth-agent@openssh.com (only a server asks a client for
		// those), direct-streamlocal@openssh.com (-L to a socket) and
		// anything unknown. The extra data is not logged: it may name a
		// forwarding destination.
		c.log.Info("channel refused", "type", clip(t))
		_ = nch.Reject(gossh.UnknownChannelType, "channel type not supported")
	}
}

func (c *serverConn) globalRequests(ctx context.Context, reqs <-chan *gossh.Request) {
	for req := range reqs {
		switch req.Type {
		case "tcpip-forward":
			ok, payload := c.tcpipForward(ctx, req.Payload)
			_ = req.Reply(ok, payload)
		case "cancel-tcpip-forward":
			_ = req.Reply(c.cancelForward(req.Payload), nil)
		case "no-more-sessions@openssh.com":
			c.noMoreSessions.Store(true)
			_ = req.Reply(true, nil)
		case "keepalive@openssh.com":
			// ServerAliveInterval: failure is the expected answer, and
			// not worth a log line every few seconds.
			_ = req.Reply(false, nil)
		default:
			// streamlocal-forward@openssh.com (-R to a socket) and
			// anything else the server does not know. The payload is not
			// logged: it may name a forwarding address.
			c.log.Info("global request refused", "type", clip(req.Type))
			_ = req.Reply(false, nil)
		}
	}
}

// clip bounds a client-chosen string before it is logged.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// --- -L / -D: direct-tcpip ---

type directTCPIPMsg struct {
	Host       string
	Port       uint32
	OriginAddr string
	OriginPort uint32
}

// directTCPIP connects to an allowed destination for the client. The
// destination is never logged (docs/architecture.md D10).
func (c *serverConn) directTCPIP(ctx context.Context, nch gossh.NewChannel) {
	var m directTCPIPMsg
	if err := gossh.Unmarshal(nch.ExtraData(), &m); err != nil || m.Port > 65535 {
		_ = nch.Reject(gossh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	if !c.id.HasScope(ScopeForward) {
		c.log.Info("forward refused", "kind", "direct-tcpip", "reason", "identity lacks scope "+ScopeForward)
		_ = nch.Reject(gossh.Prohibited, "port forwarding is not allowed for this identity")
		return
	}
	if !forwardAllowed(c.cfg.forwardRules, dirLocal, m.Host, int(m.Port)) {
		c.log.Info("forward refused", "kind", "direct-tcpip", "reason", "denied by forward_rules")
		_ = nch.Reject(gossh.Prohibited, "forwarding to this destination is not allowed")
		return
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	tcp, err := d.DialContext(ctx, "tcp", net.JoinHostPort(m.Host, strconv.Itoa(int(m.Port))))
	if err != nil {
		// The error names the destination: keep it out of logs and replies.
		_ = nch.Reject(gossh.ConnectionFailed, "connect failed")
		return
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		_ = tcp.Close()
		return
	}
	c.spawn("discard requests", func() { gossh.DiscardRequests(reqs) })
	proxy(ctx, ch, tcp.(*net.TCPConn))
}

// proxy copies between a channel and a TCP connection, half-closes
// included, until both directions end or ctx is done.
func proxy(ctx context.Context, ch gossh.Channel, tcp *net.TCPConn) {
	stop := context.AfterFunc(ctx, func() {
		_ = ch.Close()
		_ = tcp.Close()
	})
	defer stop()
	done := make(chan struct{})
	go func() {
		// Owned by proxy, which waits for it.
		defer close(done)
		_, _ = io.Copy(tcp, ch)
		_ = tcp.CloseWrite()
	}()
	_, _ = io.Copy(ch, tcp)
	_ = ch.CloseWrite()
	<-done
	_ = ch.Close()
	_ = tcp.Close()
}

// --- -R: tcpip-forward ---

type tcpipForwardMsg struct {
	Addr string
	Port uint32
}

type forwardedTCPIPMsg struct {
	Addr       string
	Port       uint32
	OriginAddr string
	OriginPort uint32
}

// tcpipForward listens on the node for the client, if allowed.
func (c *serverConn) tcpipForward(ctx context.Context, payload []byte) (bool, []byte) {
	var m tcpipForwardMsg
	if err := gossh.Unmarshal(payload, &m); err != nil || m.Port > 65535 {
		return false, nil
	}
	if !c.id.HasScope(ScopeRemoteForward) {
		c.log.Info("forward refused", "kind", "tcpip-forward", "reason", "identity lacks scope "+ScopeRemoteForward)
		return false, nil
	}
	if !forwardAllowed(c.cfg.forwardRules, dirRemote, m.Addr, int(m.Port)) {
		c.log.Info("forward refused", "kind", "tcpip-forward", "reason", "denied by forward_rules")
		return false, nil
	}
	bind := m.Addr
	if bind == "*" {
		bind = ""
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(bind, strconv.Itoa(int(m.Port))))
	if err != nil {
		c.log.Info("remote forward failed", "error", "cannot listen")
		return false, nil
	}
	port := ln.Addr().(*net.TCPAddr).Port
	key := net.JoinHostPort(m.Addr, strconv.Itoa(port))
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = ln.Close()
		return false, nil
	}
	c.forwards[key] = ln
	c.mu.Unlock()
	c.spawn("remote forward", func() { c.acceptForwarded(ctx, ln, m.Addr, port) })
	if m.Port == 0 {
		return true, gossh.Marshal(struct{ Port uint32 }{uint32(port)})
	}
	return true, nil
}

func (c *serverConn) cancelForward(payload []byte) bool {
	var m tcpipForwardMsg
	if err := gossh.Unmarshal(payload, &m); err != nil {
		return false
	}
	key := net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))
	c.mu.Lock()
	ln, ok := c.forwards[key]
	delete(c.forwards, key)
	c.mu.Unlock()
	if ok {
		_ = ln.Close()
	}
	return ok
}

// acceptForwarded opens a forwarded-tcpip channel to the client for each
// connection the listener accepts, until it is closed.
func (c *serverConn) acceptForwarded(ctx context.Context, ln net.Listener, addr string, port int) {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		tcp, err := ln.Accept()
		if err != nil {
			return
		}
		// Whoever connects to the port holds a channel of this SSH
		// connection: max_forward_channels bounds them, and a connection
		// past it is closed at once.
		sl, ok := c.forwardings.acquire(ctx)
		if !ok {
			c.limitReached(c.forwardings)
			_ = tcp.Close()
			continue
		}
		c.spawn("forwarded connection", func() {
			defer sl.release()
			orig, _ := tcp.RemoteAddr().(*net.TCPAddr)
			m := forwardedTCPIPMsg{Addr: addr, Port: uint32(port)}
			if orig != nil {
				m.OriginAddr, m.OriginPort = orig.IP.String(), uint32(orig.Port)
			}
			ch, reqs, err := c.sconn.OpenChannel("forwarded-tcpip", gossh.Marshal(&m))
			if err != nil {
				_ = tcp.Close()
				return
			}
			c.spawn("discard requests", func() { gossh.DiscardRequests(reqs) })
			proxy(ctx, ch, tcp.(*net.TCPConn))
		})
	}
}

// keepAlive asks the client to answer every client_alive_interval, as
// OpenSSH's ClientAliveInterval does: the bytes keep an idle session under
// the node's idle timeout (TCP has no keepalive of its own), and a client
// that leaves client_alive_count_max requests unanswered is gone — its
// connection ends.
func (c *serverConn) keepAlive(ctx context.Context, end context.CancelFunc) {
	t := time.NewTicker(c.cfg.aliveInterval)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		answered := make(chan struct{})
		c.spawn("keepalive request", func() {
			// SendRequest returns when the client answers or the
			// connection ends (which ctx's end forces).
			_, _, _ = c.sconn.SendRequest("keepalive@openssh.com", true, nil)
			close(answered)
		})
		select {
		case <-answered:
			missed = 0
			continue
		case <-ctx.Done():
			return
		case <-time.After(c.cfg.aliveInterval):
		}
		if missed++; missed >= c.cfg.aliveCountMax {
			c.log.Info("ssh connection closed: the client stopped answering keepalives", "missed", missed)
			end()
			return
		}
	}
}
