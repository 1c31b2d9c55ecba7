package dnsplugin

import (
	"container/list"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
)

// Defaults and bounds of the forwarder.
const (
	defaultForwardCacheSize = 4096
	defaultForwardTimeout   = 3 * time.Second
	forwardMaxPositiveTTL   = 24 * time.Hour // longest a positive answer is cached
	forwardMaxNegativeTTL   = time.Hour      // longest NXDOMAIN/NODATA is cached (RFC 2308 suggests 1–3 h)
	forwardEDNSSize         = 1232           // UDP payload size advertised upstream and to clients
	forwardPaddingBlock     = 128            // RFC 8467: queries on encrypted transports padded to this
	forwardDoQIdleTimeout   = 30 * time.Second

	// DoQ error codes (RFC 9250 §4.3).
	doqNoErrorCode          = 0x0
	doqRequestCancelledCode = 0x3
)

// ForwardSettings are the keys of [plugins.dns.forward].
type ForwardSettings struct {
	// Upstreams are tried in order: "udp://192.0.2.53:53" (plain DNS over
	// UDP, TCP when truncated), "tcp://192.0.2.53:53", "tls://dns.example:853"
	// (DNS over TLS, RFC 7858) and "quic://dns.example:853" (DNS over
	// QUIC, RFC 9250). TLS servers are verified against the system roots
	// for the URL's host. The port defaults to 53 (udp, tcp) or 853.
	Upstreams []string `json:"upstreams,omitempty"`
	// CacheSize is the number of answers cached; default 4096.
	CacheSize int `json:"cache_size,omitempty"`
	// Timeout bounds one attempt on one upstream; default "3s".
	Timeout string `json:"timeout,omitempty"`
}

// check validates the values.
func (s ForwardSettings) check() error {
	for _, u := range s.Upstreams {
		if _, err := parseUpstream(u); err != nil {
			return err
		}
	}
	if s.CacheSize < 0 {
		return fmt.Errorf("forward cache_size %d: must be ≥ 0", s.CacheSize)
	}
	if s.Timeout != "" {
		d, err := time.ParseDuration(s.Timeout)
		if err != nil {
			return fmt.Errorf("forward timeout %q: %w", s.Timeout, err)
		}
		if d <= 0 {
			return fmt.Errorf("forward timeout %q: must be > 0", s.Timeout)
		}
	}
	return nil
}

// upstreamURL is a parsed upstream.
type upstreamURL struct {
	raw    string // as configured
	scheme string // "udp", "tcp", "tls" or "quic"
	host   string // name or address, no brackets: the TLS server name
	addr   string // host:port to dial
}

// parseUpstream parses one entry of ForwardSettings.Upstreams.
func parseUpstream(raw string) (upstreamURL, error) {
	fail := func(format string, a ...any) (upstreamURL, error) {
		return upstreamURL{}, fmt.Errorf("forward upstream %q: %s", raw, fmt.Sprintf(format, a...))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fail("%v", err)
	}
	var port string
	switch u.Scheme {
	case "udp", "tcp":
		port = "53"
	case "tls", "quic":
		port = "853"
	default:
		return fail("scheme must be udp, tcp, tls or quic")
	}
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fail("want scheme://host[:port] and nothing else")
	}
	host := u.Hostname()
	if host == "" {
		return fail("no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return fail("port %q is not a number from 1 to 65535", p)
		}
		port = p
	}
	return upstreamURL{raw: raw, scheme: u.Scheme, host: host, addr: net.JoinHostPort(host, port)}, nil
}

// forwarder is the forwarding resolver: it sends queries for names outside
// the node's zones to upstream resolvers, in order until one answers, and
// caches the answers.
type forwarder struct {
	log       hclog.Logger
	timeout   time.Duration
	upstreams []upstream
	cache     *answerCache
	now       func() time.Time
	sessions  tls.ClientSessionCache
	closed    atomic.Bool

	// rootCAs, when set (tests), replaces the system roots for TLS and QUIC
	// upstreams. It is read when a connection is dialled.
	rootCAs *x509.CertPool
}

// upstream is one resolver the forwarder asks.
type upstream interface {
	// exchange sends q (which it may modify) and returns the answer.
	exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error)
	close() error
	String() string
}

// newForwarder returns the forwarder for s, or nil (and no error) when s
// has no upstreams.
func newForwarder(log hclog.Logger, s ForwardSettings) (*forwarder, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if len(s.Upstreams) == 0 {
		return nil, nil
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	f := &forwarder{
		log:      log,
		timeout:  defaultForwardTimeout,
		now:      time.Now,
		sessions: tls.NewLRUClientSessionCache(0),
	}
	if s.Timeout != "" {
		f.timeout, _ = time.ParseDuration(s.Timeout)
	}
	size := s.CacheSize
	if size == 0 {
		size = defaultForwardCacheSize
	}
	f.cache = newAnswerCache(size)
	for _, raw := range s.Upstreams {
		u, _ := parseUpstream(raw) // checked above
		switch u.scheme {
		case "udp", "tcp":
			f.upstreams = append(f.upstreams, &plainUpstream{u: u, f: f})
		case "tls":
			f.upstreams = append(f.upstreams, &dotUpstream{u: u, f: f})
		case "quic":
			f.upstreams = append(f.upstreams, &doqUpstream{u: u, f: f})
		}
	}
	return f, nil
}

// Exchange answers req from the cache or from the first upstream that
// answers. The answer carries req's ID and question; it has an OPT record
// when req has one. Answers are cached by (name in lower case, type, class,
// DO bit): positive ones for the smallest TTL of their answer records,
// negative ones (NXDOMAIN, NODATA) for their SOA's negative TTL, capped at
// an hour. A cached answer's TTLs are decreased by the time it spent in
// the cache.
func (f *forwarder) Exchange(ctx context.Context, req *dns.Msg) (*dns.Msg, error) {
	if f.closed.Load() {
		return nil, errors.New("forward: closed")
	}
	if len(req.Question) != 1 {
		return nil, fmt.Errorf("forward: a query has %d questions, want 1", len(req.Question))
	}
	q := req.Question[0]
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	key := cacheKey{name: strings.ToLower(q.Name), qtype: q.Qtype, qclass: q.Qclass, do: do}
	if m, ok := f.cache.get(key, f.now()); ok {
		return f.reply(req, m), nil
	}

	query := new(dns.Msg)
	query.Question = []dns.Question{q}
	query.RecursionDesired = true
	query.CheckingDisabled = req.CheckingDisabled
	query.SetEdns0(forwardEDNSSize, do)

	var errs []error
	var failure *dns.Msg // a SERVFAIL or REFUSED, returned if nothing better comes
	for _, u := range f.upstreams {
		resp, err := f.attempt(ctx, u, query)
		if err == nil && (resp.Rcode == dns.RcodeServerFailure || resp.Rcode == dns.RcodeRefused) {
			err = fmt.Errorf("answered %s", dns.RcodeToString[resp.Rcode])
			failure = resp
		}
		if err != nil {
			err = fmt.Errorf("forward upstream %q: %w", u, err)
			f.log.Debug("forward upstream failed", "upstream", u.String(), "error", err)
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		f.cache.put(key, resp, f.now())
		return f.reply(req, resp), nil
	}
	if failure != nil {
		return f.reply(req, failure), nil
	}
	if len(errs) == 0 {
		return nil, errors.New("forward: no upstreams")
	}
	return nil, errors.Join(errs...)
}

// attempt asks one upstream, within the per-attempt timeout, and checks
// that the answer is an answer to the question.
func (f *forwarder) attempt(ctx context.Context, u upstream, query *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	q := query.Copy()
	q.Id = dns.Id()
	resp, err := u.exchange(ctx, q)
	if err != nil {
		return nil, err
	}
	want := query.Question[0]
	switch {
	case !resp.Response:
		return nil, errors.New("the answer is not a response")
	case resp.Truncated:
		return nil, errors.New("the answer is truncated")
	case len(resp.Question) != 1 || resp.Question[0].Qtype != want.Qtype || resp.Question[0].Qclass != want.Qclass ||
		!strings.EqualFold(resp.Question[0].Name, want.Name):
		return nil, errors.New("the answer is for another question")
	}
	return resp, nil
}

// reply adapts an upstream or cached answer m to req: req's ID, question
// and flags; an OPT record (our own) only when req has one.
func (f *forwarder) reply(req, m *dns.Msg) *dns.Msg {
	r := m.Copy()
	r.Id = req.Id
	r.Response = true
	r.Opcode = req.Opcode
	r.Authoritative = false
	r.RecursionDesired = req.RecursionDesired
	r.RecursionAvailable = true
	r.CheckingDisabled = req.CheckingDisabled
	r.Question = append([]dns.Question(nil), req.Question...)
	r.Compress = true
	r.Extra = withoutOPT(r.Extra)
	opt := req.IsEdns0()
	if !req.AuthenticatedData && (opt == nil || !opt.Do()) {
		r.AuthenticatedData = false // RFC 6840 §5.8: only for clients that ask
	}
	if opt != nil {
		r.SetEdns0(forwardEDNSSize, opt.Do())
	} else if r.Rcode > 0xF {
		// An extended RCODE needs an OPT record to be sent at all.
		r.Rcode = dns.RcodeServerFailure
	}
	return r
}

// withoutOPT is rrs without OPT records (which are per hop).
func withoutOPT(rrs []dns.RR) []dns.RR {
	out := rrs[:0:0]
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

// tlsConfig is the TLS configuration for an upstream named host.
func (f *forwarder) tlsConfig(host string, nextProtos ...string) *tls.Config {
	return &tls.Config{
		ServerName:         host,
		RootCAs:            f.rootCAs,
		NextProtos:         nextProtos,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: f.sessions,
	}
}

// Close closes the upstream connections; Exchange fails afterwards.
func (f *forwarder) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, u := range f.upstreams {
		if err := u.close(); err != nil {
			errs = append(errs, fmt.Errorf("forward upstream %q: close: %w", u, err))
		}
	}
	return errors.Join(errs...)
}

// plainUpstream is DNS over UDP (retried over TCP when truncated) or TCP.
type plainUpstream struct {
	u upstreamURL
	f *forwarder
}

func (p *plainUpstream) String() string { return p.u.raw }
func (p *plainUpstream) close() error   { return nil }

func (p *plainUpstream) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if p.u.scheme == "udp" {
		c := &dns.Client{Net: "udp", UDPSize: forwardEDNSSize, Timeout: p.f.timeout}
		r, _, err := c.ExchangeContext(ctx, q, p.u.addr)
		if err != nil {
			return nil, fmt.Errorf("udp: %w", err)
		}
		if !r.Truncated {
			return r, nil
		}
	}
	c := &dns.Client{Net: "tcp", Timeout: p.f.timeout}
	r, _, err := c.ExchangeContext(ctx, q, p.u.addr)
	if err != nil {
		return nil, fmt.Errorf("tcp: %w", err)
	}
	return r, nil
}

// dotUpstream is DNS over TLS (RFC 7858). One idle connection is kept for
// the next query; a query on a kept connection that fails (the server may
// have closed it) is retried once on a new one.
type dotUpstream struct {
	u upstreamURL
	f *forwarder

	mu     sync.Mutex
	idle   *dns.Conn
	closed bool
}

func (d *dotUpstream) String() string { return d.u.raw }

func (d *dotUpstream) client() *dns.Client {
	return &dns.Client{Net: "tcp-tls", TLSConfig: d.f.tlsConfig(d.u.host), Timeout: d.f.timeout}
}

func (d *dotUpstream) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	padQuery(q)
	c := d.client()
	for try := 0; ; try++ {
		var co *dns.Conn
		if try == 0 {
			co = d.take()
		}
		kept := co != nil
		if !kept {
			var err error
			if co, err = c.DialContext(ctx, d.u.addr); err != nil {
				return nil, fmt.Errorf("dial: %w", err)
			}
		}
		r, _, err := c.ExchangeWithConnContext(ctx, q, co)
		if err == nil {
			d.put(co)
			return r, nil
		}
		co.Close()
		if !kept || ctx.Err() != nil {
			return nil, err
		}
	}
}

// take returns the idle connection, if any.
func (d *dotUpstream) take() *dns.Conn {
	d.mu.Lock()
	defer d.mu.Unlock()
	co := d.idle
	d.idle = nil
	return co
}

// put keeps co for the next query, or closes it.
func (d *dotUpstream) put(co *dns.Conn) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.idle == nil && !d.closed {
		d.idle = co
		return
	}
	co.Close()
}

func (d *dotUpstream) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.idle != nil {
		d.idle.Close()
		d.idle = nil
	}
	return nil
}

// doqUpstream is DNS over QUIC (RFC 9250). github.com/miekg/dns v1 has no
// DoQ client, and the protocol is small: one bidirectional stream per
// query carrying the message (ID 0) behind a 2-byte length, the write side
// closed after it, and the answer read the same way. The QUIC connection is
// kept for the next queries and dialled again when it has failed.
type doqUpstream struct {
	u upstreamURL
	f *forwarder

	mu     sync.Mutex
	conn   *quic.Conn
	closed bool
}

func (d *doqUpstream) String() string { return d.u.raw }

func (d *doqUpstream) exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	q.Id = 0 // RFC 9250 §4.2.1
	padQuery(q)
	msg, err := q.Pack()
	if err != nil {
		return nil, fmt.Errorf("pack the query: %w", err)
	}
	for try := 0; ; try++ {
		conn, fresh, err := d.connection(ctx)
		if err != nil {
			return nil, err
		}
		r, err := doqRoundTrip(ctx, conn, msg)
		if err == nil {
			return r, nil
		}
		if serr := (*quic.StreamError)(nil); errors.As(err, &serr) && serr.Remote {
			// The server reset this stream (e.g. DOQ_EXCESSIVE_LOAD): the
			// connection is fine, the query failed.
			return nil, err
		}
		// The connection is broken, closed by the server while idle, or
		// stuck: dial a new one, once, unless this one was new.
		d.drop(conn)
		if fresh || try > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// connection returns the kept connection if it is alive, or dials one;
// fresh says it was just dialled.
func (d *doqUpstream) connection(ctx context.Context) (conn *quic.Conn, fresh bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, errors.New("closed")
	}
	if d.conn != nil && d.conn.Context().Err() == nil {
		return d.conn, false, nil
	}
	tc := d.f.tlsConfig(d.u.host, "doq")
	tc.MinVersion = tls.VersionTLS13
	conn, err = quic.DialAddr(ctx, d.u.addr, tc, &quic.Config{MaxIdleTimeout: forwardDoQIdleTimeout})
	if err != nil {
		return nil, false, fmt.Errorf("dial: %w", err)
	}
	d.conn = conn
	return conn, true, nil
}

// drop closes conn and forgets it, unless it has already been replaced.
func (d *doqUpstream) drop(conn *quic.Conn) {
	d.mu.Lock()
	if d.conn == conn {
		d.conn = nil
	}
	d.mu.Unlock()
	_ = conn.CloseWithError(doqNoErrorCode, "")
}

func (d *doqUpstream) close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.conn != nil {
		_ = d.conn.CloseWithError(doqNoErrorCode, "")
		d.conn = nil
	}
	return nil
}

// doqRoundTrip sends one packed query on a new stream of conn and reads
// the answer.
func doqRoundTrip(ctx context.Context, conn *quic.Conn, msg []byte) (*dns.Msg, error) {
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open a stream: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() {
		s.CancelRead(doqRequestCancelledCode)
		s.CancelWrite(doqRequestCancelledCode)
	})
	defer stop()

	out := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(out, uint16(len(msg)))
	copy(out[2:], msg)
	if _, err := s.Write(out); err != nil {
		s.CancelRead(doqRequestCancelledCode)
		return nil, fmt.Errorf("send the query: %w", err)
	}
	if err := s.Close(); err != nil { // the query is complete (RFC 9250 §4.2)
		s.CancelRead(doqRequestCancelledCode)
		return nil, fmt.Errorf("send the query: %w", err)
	}
	var l [2]byte
	if _, err := io.ReadFull(s, l[:]); err != nil {
		s.CancelRead(doqRequestCancelledCode)
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(s, buf); err != nil {
		s.CancelRead(doqRequestCancelledCode)
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	// The answer is complete: whether or not the server's FIN has been
	// read yet, the stream is done (and no longer counts against the
	// server's stream limit).
	s.CancelRead(doqNoErrorCode)
	r := new(dns.Msg)
	if err := r.Unpack(buf); err != nil {
		return nil, fmt.Errorf("unpack the answer: %w", err)
	}
	if r.Id != 0 {
		return nil, fmt.Errorf("the answer has ID %d, want 0", r.Id)
	}
	return r, nil
}

// padQuery pads q's OPT record to a multiple of forwardPaddingBlock bytes
// (RFC 7830, RFC 8467), so that the size of an encrypted query tells
// little about the name.
func padQuery(q *dns.Msg) {
	opt := q.IsEdns0()
	if opt == nil {
		return
	}
	l := q.Len() + 4 // the padding option's code and length
	opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, (forwardPaddingBlock-l%forwardPaddingBlock)%forwardPaddingBlock)})
}

// cacheKey identifies a cached answer.
type cacheKey struct {
	name          string // lower case
	qtype, qclass uint16
	do            bool
}

// answerCache is a bounded cache of answers; the least recently used entry
// is evicted.
type answerCache struct {
	max int

	mu    sync.Mutex
	items map[cacheKey]*list.Element // of *cacheEntry
	order *list.List                 // front: most recently used
}

type cacheEntry struct {
	key     cacheKey
	msg     *dns.Msg // without OPT
	stored  time.Time
	expires time.Time
}

func newAnswerCache(size int) *answerCache {
	return &answerCache{max: size, items: make(map[cacheKey]*list.Element), order: list.New()}
}

// get returns a copy of the entry for key, its TTLs decreased by the
// whole seconds it has been cached, if it has not expired at now.
func (c *answerCache) get(key cacheKey, now time.Time) (*dns.Msg, bool) {
	c.mu.Lock()
	e, ok := c.items[key]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	ent := e.Value.(*cacheEntry)
	if !now.Before(ent.expires) {
		c.order.Remove(e)
		delete(c.items, key)
		c.mu.Unlock()
		return nil, false
	}
	c.order.MoveToFront(e)
	c.mu.Unlock()

	m := ent.msg.Copy()
	aged := uint32(max(0, now.Sub(ent.stored)/time.Second))
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			h := rr.Header()
			h.Ttl -= min(h.Ttl, aged)
		}
	}
	return m, true
}

// put caches m under key for as long as cacheTTL allows.
func (c *answerCache) put(key cacheKey, m *dns.Msg, now time.Time) {
	ttl := cacheTTL(m)
	if ttl <= 0 {
		return
	}
	stored := m.Copy()
	stored.Extra = withoutOPT(stored.Extra)
	ent := &cacheEntry{key: key, msg: stored, stored: now, expires: now.Add(ttl)}

	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		e.Value = ent
		c.order.MoveToFront(e)
		return
	}
	for c.order.Len() >= c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheEntry).key)
	}
	c.items[key] = c.order.PushFront(ent)
}

// len is the number of entries (expired ones included until looked up or
// evicted).
func (c *answerCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// cacheTTL is how long m may be cached: the smallest TTL of its answer
// records for a positive answer (at most a day); for NXDOMAIN or NODATA,
// the negative TTL of its SOA (the smaller of the SOA's TTL and MINIMUM,
// RFC 2308 §5), at most an hour; 0 (do not cache) otherwise.
func cacheTTL(m *dns.Msg) time.Duration {
	if m.Truncated {
		return 0
	}
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		ttl := m.Answer[0].Header().Ttl
		for _, rr := range m.Answer[1:] {
			ttl = min(ttl, rr.Header().Ttl)
		}
		return min(time.Duration(ttl)*time.Second, forwardMaxPositiveTTL)
	case m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess:
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl := min(soa.Hdr.Ttl, soa.Minttl)
				return min(time.Duration(ttl)*time.Second, forwardMaxNegativeTTL)
			}
		}
	}
	return 0
}
