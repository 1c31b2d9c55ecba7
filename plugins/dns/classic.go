package dnsplugin

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// Defaults and bounds of the classic listener.
const (
	defaultClassicRateLimit    = 20.0
	defaultClassicBurst        = 40
	defaultUDPAnswerFactor     = 3
	defaultMaxTCPConnections   = 256
	defaultClassicTCPIdle      = 10 * time.Second
	classicRRLMaxEntries       = 65536 // source prefixes tracked by the rate limiter
	classicMaxUDPInFlight      = 1024  // UDP queries being answered at once; more are dropped
	classicUDPReadSize         = 4096  // read buffer for one UDP query
	classicEDNSSize            = 1232  // UDP payload size advertised in our own OPT records
	classicMinUDPSize          = 512   // RFC 1035 / RFC 6891: what every client accepts
	classicListenPortAttempts  = 16    // tries to find a port free for both UDP and TCP
	classicIPv4RateLimitPrefix = 24
	classicIPv6RateLimitPrefix = 56
)

// ClassicSettings are the keys of [plugins.dns.classic].
type ClassicSettings struct {
	// Listen is the UDP and TCP address, e.g. "127.0.0.1:5353"; empty
	// turns the classic listener off.
	Listen string `json:"listen,omitempty"`
	// RateLimit is the number of UDP responses per second allowed to one
	// source prefix (/24 for IPv4, /56 for IPv6); default 20.
	RateLimit float64 `json:"rate_limit,omitempty"`
	// Burst is the size of each source prefix's token bucket; default 40.
	Burst int `json:"burst,omitempty"`
	// UDPAnswerFactor caps an answer to an unverified UDP source at this
	// many times the size of its query (default 3); larger answers are
	// sent truncated (TC bit set, no records) so the client retries over
	// TCP.
	UDPAnswerFactor int `json:"udp_answer_factor,omitempty"`
	// MaxTCPConnections bounds the open TCP connections; default 256.
	MaxTCPConnections int `json:"max_tcp_connections,omitempty"`
	// TCPIdleTimeout closes a TCP connection that sends no query for this
	// long; default "10s".
	TCPIdleTimeout string `json:"tcp_idle_timeout,omitempty"`
}

// check validates the values (an empty Listen is valid: the listener is off).
func (s ClassicSettings) check() error {
	if s.Listen != "" {
		_, port, err := net.SplitHostPort(s.Listen)
		if err != nil {
			return fmt.Errorf("classic listen %q: %w", s.Listen, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("classic listen %q: port %q is not a number from 0 to 65535", s.Listen, port)
		}
	}
	if s.RateLimit < 0 || math.IsNaN(s.RateLimit) || math.IsInf(s.RateLimit, 0) {
		return fmt.Errorf("classic rate_limit %v: must be a finite number ≥ 0", s.RateLimit)
	}
	if s.Burst < 0 {
		return fmt.Errorf("classic burst %d: must be ≥ 0", s.Burst)
	}
	if s.UDPAnswerFactor < 0 {
		return fmt.Errorf("classic udp_answer_factor %d: must be ≥ 0", s.UDPAnswerFactor)
	}
	if s.MaxTCPConnections < 0 {
		return fmt.Errorf("classic max_tcp_connections %d: must be ≥ 0", s.MaxTCPConnections)
	}
	if s.TCPIdleTimeout != "" {
		d, err := time.ParseDuration(s.TCPIdleTimeout)
		if err != nil {
			return fmt.Errorf("classic tcp_idle_timeout %q: %w", s.TCPIdleTimeout, err)
		}
		if d < 0 {
			return fmt.Errorf("classic tcp_idle_timeout %q: must be ≥ 0", s.TCPIdleTimeout)
		}
	}
	return nil
}

// classicConfig is ClassicSettings with the defaults filled in.
type classicConfig struct {
	listen    string
	rate      float64
	burst     int
	factor    int
	maxTCP    int
	tcpIdle   time.Duration
	inFlight  int
	rrlLimits int
}

func (s ClassicSettings) config() (classicConfig, error) {
	if err := s.check(); err != nil {
		return classicConfig{}, err
	}
	if s.Listen == "" {
		return classicConfig{}, errors.New("classic listen: no address")
	}
	c := classicConfig{
		listen:    s.Listen,
		rate:      s.RateLimit,
		burst:     s.Burst,
		factor:    s.UDPAnswerFactor,
		maxTCP:    s.MaxTCPConnections,
		tcpIdle:   defaultClassicTCPIdle,
		inFlight:  classicMaxUDPInFlight,
		rrlLimits: classicRRLMaxEntries,
	}
	if c.rate == 0 {
		c.rate = defaultClassicRateLimit
	}
	if c.burst == 0 {
		c.burst = defaultClassicBurst
	}
	if c.factor == 0 {
		c.factor = defaultUDPAnswerFactor
	}
	if c.maxTCP == 0 {
		c.maxTCP = defaultMaxTCPConnections
	}
	if s.TCPIdleTimeout != "" {
		if d, _ := time.ParseDuration(s.TCPIdleTimeout); d > 0 {
			c.tcpIdle = d
		}
	}
	return c, nil
}

// ClassicStats are the classic listener's counters.
type ClassicStats struct {
	QueriesUDP  uint64 `json:"queries_udp"`  // UDP queries received
	QueriesTCP  uint64 `json:"queries_tcp"`  // TCP queries received
	RateLimited uint64 `json:"rate_limited"` // UDP queries over their source's rate (dropped or slipped)
	Truncated   uint64 `json:"truncated"`    // UDP responses sent with TC=1 and no records
	Dropped     uint64 `json:"dropped"`      // UDP queries left unanswered
	TCPRejected uint64 `json:"tcp_rejected"` // TCP connections closed at once: too many open
}

// classic is the optional classic DNS listener: plain DNS over UDP and TCP
// on one address, answering anonymously with an answerFunc.
//
// Plain UDP has no handshake, so the source address of a query may be
// forged: an open UDP DNS service can be used to reflect and amplify
// traffic towards a victim. Two defences apply to UDP only:
//   - response-rate limiting per source prefix (token buckets); over the
//     rate, queries are dropped silently except every second one, which
//     gets an empty truncated answer ("slip", as in BIND's RRL) so that a
//     real client behind the prefix retries over TCP;
//   - an answer is at most UDPAnswerFactor times the query's size (and
//     never more than the client's advertised EDNS buffer); a larger one
//     is sent truncated, so a forged query cannot buy a large answer.
//
// TCP needs a completed handshake, which proves the source address, so it
// is not rate-limited per source; it is bounded by MaxTCPConnections and
// the idle timeout instead.
type classic struct {
	log     hclog.Logger
	cfg     classicConfig
	answer  answerFunc
	limiter *rrl

	ctx    context.Context // cancelled on Close; passed to answer
	cancel context.CancelFunc

	pc       net.PacketConn
	ln       *classicListener
	udp, tcp *dns.Server
	udpSlots chan struct{} // bounds the UDP queries being answered
	wg       sync.WaitGroup

	closeOnce sync.Once

	queriesUDP, queriesTCP, rateLimited, truncated, dropped, tcpRejected atomic.Uint64

	// udpDone, when set (tests), is called after each UDP query has been
	// answered, truncated or dropped; tcpReleased when a TCP connection
	// has freed its slot.
	udpDone, tcpReleased func()
}

// startClassic listens on s.Listen (UDP and TCP on the same port number;
// port 0 picks a free UDP port and then takes the same number for TCP) and
// serves queries with answer until Close.
func startClassic(log hclog.Logger, s ClassicSettings, answer answerFunc) (*classic, error) {
	c, err := newClassic(log, s, answer)
	if err != nil {
		return nil, err
	}
	if err := c.start(); err != nil {
		return nil, err
	}
	return c, nil
}

// newClassic prepares a classic listener without listening yet.
func newClassic(log hclog.Logger, s ClassicSettings, answer answerFunc) (*classic, error) {
	cfg, err := s.config()
	if err != nil {
		return nil, err
	}
	if answer == nil {
		return nil, errors.New("classic DNS: no answer function")
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &classic{
		log:      log,
		cfg:      cfg,
		answer:   answer,
		limiter:  newRRL(cfg.rate, cfg.burst, cfg.rrlLimits),
		ctx:      ctx,
		cancel:   cancel,
		udpSlots: make(chan struct{}, cfg.inFlight),
	}, nil
}

// start binds the sockets and starts both servers; it returns once both
// serve (or with the first error, everything closed).
func (c *classic) start() error {
	pc, ln, err := listenClassic(c.cfg.listen)
	if err != nil {
		c.cancel()
		return err
	}
	c.pc = pc
	c.ln = &classicListener{Listener: ln, slots: make(chan struct{}, c.cfg.maxTCP),
		rejected: &c.tcpRejected, released: c.tcpReleased}

	// Each server reports once: nil when it serves, or the error that
	// stopped it before that.
	udpReady, tcpReady := make(chan error, 2), make(chan error, 2)
	c.udp = &dns.Server{
		PacketConn:        pc,
		Handler:           dns.HandlerFunc(c.serveUDP),
		UDPSize:           classicUDPReadSize,
		MsgAcceptFunc:     udpAcceptFunc,
		NotifyStartedFunc: func() { udpReady <- nil },
	}
	idle := c.cfg.tcpIdle
	c.tcp = &dns.Server{
		Listener:          c.ln,
		Handler:           dns.HandlerFunc(c.serveTCP),
		ReadTimeout:       idle,
		IdleTimeout:       func() time.Duration { return idle },
		NotifyStartedFunc: func() { tcpReady <- nil },
	}

	for _, srv := range []struct {
		net   string
		s     *dns.Server
		ready chan error
	}{{"udp", c.udp, udpReady}, {"tcp", c.tcp, tcpReady}} {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			if err := srv.s.ActivateAndServe(); err != nil {
				c.log.Error("classic DNS server stopped", "net", srv.net, "error", err)
				srv.ready <- fmt.Errorf("classic DNS serve %s on %s: %w", srv.net, pc.LocalAddr(), err)
			}
		}()
	}
	if err := errors.Join(<-udpReady, <-tcpReady); err != nil {
		c.Close()
		return err
	}
	c.log.Info("classic DNS listening", "addr", c.Addr())
	return nil
}

// listenClassic binds UDP and TCP on addr; with port 0 it takes a free UDP
// port and the same number for TCP, retrying if that TCP port is taken.
func listenClassic(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("classic listen %q: %w", addr, err)
	}
	attempts := 1
	if port == "0" {
		attempts = classicListenPortAttempts
	}
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("classic listen udp %q: %w", addr, err)
		}
		tcpAddr := net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		ln, err := net.Listen("tcp", tcpAddr)
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = fmt.Errorf("classic listen tcp %q: %w", tcpAddr, err)
	}
	return nil, nil, lastErr
}

// udpAcceptFunc is dns.DefaultMsgAcceptFunc without its error answers:
// those would be sent before (and so around) the rate limiter, so over UDP
// a malformed or unsupported message gets no answer at all.
func udpAcceptFunc(h dns.Header) dns.MsgAcceptAction {
	if a := dns.DefaultMsgAcceptFunc(h); a != dns.MsgAccept {
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

// Addr is the bound address, "host:port" (the same port for UDP and TCP).
func (c *classic) Addr() string {
	return c.pc.LocalAddr().String()
}

// Close stops both servers, cancels the queries being answered and waits
// for every goroutine of the listener to return. It is safe to call more
// than once.
func (c *classic) Close() error {
	c.closeOnce.Do(func() {
		c.cancel()
		// Shutdown fails only for a server that is not running (it never
		// started or has already stopped with an error, which was logged).
		_ = c.udp.Shutdown()
		_ = c.tcp.Shutdown()
		c.wg.Wait()
		// A server that never started has not closed its socket.
		_ = c.pc.Close()
		_ = c.ln.Close()
	})
	return nil
}

// Stats returns the counters.
func (c *classic) Stats() ClassicStats {
	return ClassicStats{
		QueriesUDP:  c.queriesUDP.Load(),
		QueriesTCP:  c.queriesTCP.Load(),
		RateLimited: c.rateLimited.Load(),
		Truncated:   c.truncated.Load(),
		Dropped:     c.dropped.Load(),
		TCPRejected: c.tcpRejected.Load(),
	}
}

// serveUDP answers one UDP query, subject to the rate limit and the answer
// size cap.
func (c *classic) serveUDP(w dns.ResponseWriter, req *dns.Msg) {
	if c.udpDone != nil {
		defer c.udpDone()
	}
	c.queriesUDP.Add(1)
	select {
	case c.udpSlots <- struct{}{}:
		defer func() { <-c.udpSlots }()
	default:
		c.dropped.Add(1)
		return
	}

	switch c.limiter.check(w.RemoteAddr()) {
	case rrlDrop:
		c.rateLimited.Add(1)
		c.dropped.Add(1)
		return
	case rrlSlip:
		c.rateLimited.Add(1)
		c.writeTruncated(w, req, nil)
		return
	}

	resp := c.answerOne(req, "udp", w.RemoteAddr())
	resp.Compress = true
	buf, err := resp.Pack()
	if err != nil {
		c.log.Error("classic DNS: packing an answer failed", "net", "udp", "error", err)
		buf, err = serverFailure(req).Pack()
		if err != nil {
			c.dropped.Add(1)
			return
		}
	}
	if len(buf) > udpAnswerLimit(req, c.cfg.factor) {
		c.writeTruncated(w, req, resp)
		return
	}
	_, _ = w.Write(buf)
}

// writeTruncated sends an empty answer with TC=1 (header and question of
// resp, or of a plain reply to req when resp is nil).
func (c *classic) writeTruncated(w dns.ResponseWriter, req, resp *dns.Msg) {
	buf, err := truncatedAnswer(req, resp).Pack()
	if err != nil {
		c.dropped.Add(1)
		return
	}
	c.truncated.Add(1)
	_, _ = w.Write(buf)
}

// serveTCP answers one TCP query.
func (c *classic) serveTCP(w dns.ResponseWriter, req *dns.Msg) {
	c.queriesTCP.Add(1)
	resp := c.answerOne(req, "tcp", w.RemoteAddr())
	resp.Compress = true
	buf, err := resp.Pack()
	if err == nil && len(buf) > dns.MaxMsgSize {
		err = fmt.Errorf("answer of %d bytes is over %d", len(buf), dns.MaxMsgSize)
	}
	if err != nil {
		c.log.Error("classic DNS: packing an answer failed", "net", "tcp", "error", err)
		if buf, err = serverFailure(req).Pack(); err != nil {
			return
		}
	}
	_, _ = w.Write(buf)
}

// answerOne asks the answer function; the classic listener is anonymous.
func (c *classic) answerOne(req *dns.Msg, transport string, remote net.Addr) *dns.Msg {
	src := source{transport: transport}
	if remote != nil {
		src.remote = remote.String()
	}
	if resp := c.answer(c.ctx, req, src); resp != nil {
		return resp
	}
	return serverFailure(req)
}

// serverFailure is a SERVFAIL reply to req.
func serverFailure(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req, dns.RcodeServerFailure)
	return m
}

// udpAnswerLimit is the largest UDP answer sent to the source of req:
// the client's advertised EDNS buffer (512 without EDNS, RFC 1035) but at
// most factor times the query's own size, so that a query with a forged
// source address cannot make the listener send its victim much more than
// the attacker sent (amplification).
func udpAnswerLimit(req *dns.Msg, factor int) int {
	limit := classicMinUDPSize
	if opt := req.IsEdns0(); opt != nil && int(opt.UDPSize()) > limit {
		limit = int(opt.UDPSize())
	}
	return min(limit, req.Len()*factor)
}

// truncatedAnswer is the answer sent instead of one that is too large, or
// as the "slip" of the rate limiter: the header (TC=1) and the question,
// no records except the OPT.
func truncatedAnswer(req, resp *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if resp == nil {
		m.SetReply(req)
		if opt := req.IsEdns0(); opt != nil {
			m.SetEdns0(classicEDNSSize, opt.Do())
		}
	} else {
		m.MsgHdr = resp.MsgHdr
		m.Id = req.Id
		m.Response = true
		m.Question = append([]dns.Question(nil), req.Question...)
		if opt := resp.IsEdns0(); opt != nil {
			m.Extra = []dns.RR{opt}
		}
	}
	m.Truncated = true
	return m
}

// rrlVerdict is the rate limiter's decision for one UDP response.
type rrlVerdict int

const (
	rrlAnswer rrlVerdict = iota // under the rate: answer
	rrlDrop                     // over the rate: send nothing
	rrlSlip                     // over the rate: send an empty truncated answer
)

// rrl is a response-rate limiter: one token bucket per source prefix, in a
// bounded map from which the least recently seen prefix is evicted.
type rrl struct {
	rate  float64 // tokens per second
	burst float64 // bucket size
	max   int     // prefixes tracked
	now   func() time.Time

	mu      sync.Mutex
	buckets map[netip.Prefix]*list.Element // of *rrlBucket
	order   *list.List                     // front: most recently seen
}

type rrlBucket struct {
	prefix netip.Prefix
	tokens float64
	last   time.Time
	over   uint64 // over-limit queries so far; every second one slips
}

func newRRL(rate float64, burst, entries int) *rrl {
	return &rrl{
		rate:    rate,
		burst:   float64(burst),
		max:     entries,
		now:     time.Now,
		buckets: make(map[netip.Prefix]*list.Element),
		order:   list.New(),
	}
}

// check takes a token from the bucket of addr's prefix.
func (l *rrl) check(addr net.Addr) rrlVerdict {
	prefix, ok := rrlPrefix(addr)
	if !ok {
		return rrlAnswer
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var b *rrlBucket
	if e, ok := l.buckets[prefix]; ok {
		l.order.MoveToFront(e)
		b = e.Value.(*rrlBucket)
		if elapsed := now.Sub(b.last); elapsed > 0 {
			b.tokens = min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
			b.last = now
		}
	} else {
		for l.order.Len() >= l.max {
			oldest := l.order.Back()
			l.order.Remove(oldest)
			delete(l.buckets, oldest.Value.(*rrlBucket).prefix)
		}
		b = &rrlBucket{prefix: prefix, tokens: l.burst, last: now}
		l.buckets[prefix] = l.order.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return rrlAnswer
	}
	b.over++
	if b.over%2 == 0 {
		return rrlSlip
	}
	return rrlDrop
}

// len is the number of prefixes tracked.
func (l *rrl) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// rrlPrefix is the prefix a source address is limited by: its /24 for
// IPv4 (and IPv4-mapped IPv6), its /56 for IPv6.
func rrlPrefix(addr net.Addr) (netip.Prefix, bool) {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.UDPAddr:
		var ok bool
		if ip, ok = netip.AddrFromSlice(a.IP); !ok {
			return netip.Prefix{}, false
		}
	case nil:
		return netip.Prefix{}, false
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			return netip.Prefix{}, false
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap().WithZone("")
	bits := classicIPv6RateLimitPrefix
	if ip.Is4() {
		bits = classicIPv4RateLimitPrefix
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// classicListener bounds the open TCP connections: past the limit, a new
// connection is closed as soon as it is accepted.
type classicListener struct {
	net.Listener
	slots    chan struct{}
	rejected *atomic.Uint64
	// released, when set (tests), is called when a connection frees its slot.
	released func()
}

// Accept returns the next connection for which there is a free slot.
func (l *classicListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &classicConn{Conn: conn, l: l}, nil
		default:
			l.rejected.Add(1)
			conn.Close()
		}
	}
}

// classicConn is a TCP connection holding one of the listener's slots
// until it is closed.
type classicConn struct {
	net.Conn
	l    *classicListener
	once sync.Once
}

// Close frees the slot (before closing, so that once the peer sees the
// connection end, the slot is free) and closes the connection.
func (c *classicConn) Close() error {
	c.once.Do(func() {
		<-c.l.slots
		if c.l.released != nil {
			c.l.released()
		}
	})
	return c.Conn.Close()
}
