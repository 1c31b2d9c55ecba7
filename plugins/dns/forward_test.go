package dnsplugin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
)

// testUpstream is a resolver on loopback that answers with handle and
// counts the queries it receives.
type testUpstream struct {
	addr    string
	queries atomic.Int64
}

// fakeResolver answers like a recursive resolver with fixed data:
// nx.example. does not exist; nodata.example. has no A; refused.example.
// is refused; anything else has A 192.0.2.7 with TTL 300.
func fakeResolver(req *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(1232, opt.Do())
	}
	q := req.Question[0]
	soa := func(ttl, minttl uint32) dns.RR {
		return &dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
			Ns: "ns.example.", Mbox: "hostmaster.example.", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: minttl}
	}
	switch strings.ToLower(q.Name) {
	case "nx.example.":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(3600, 60)}
	case "nx-long.example.":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(86400, 86400)}
	case "nodata.example.":
		m.Ns = []dns.RR{soa(30, 900)}
	case "refused.example.":
		m.Rcode = dns.RcodeRefused
	default:
		m.Answer = []dns.RR{
			&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 7)},
			&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 600}, A: net.IPv4(192, 0, 2, 8)},
		}
	}
	return m
}

// startTestUpstream serves handle over UDP and TCP on 127.0.0.1.
func startTestUpstream(t *testing.T, handle func(*dns.Msg) *dns.Msg) *testUpstream {
	t.Helper()
	u := &testUpstream{}
	u.addr = startTestUpstreamWriter(t, func(w dns.ResponseWriter, req *dns.Msg) {
		u.queries.Add(1)
		_ = w.WriteMsg(handle(req))
	})
	return u
}

func forwardQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func newTestForwarder(t *testing.T, s ForwardSettings) (*forwarder, *manualClock) {
	t.Helper()
	f, err := newForwarder(nil, s)
	if err != nil {
		t.Fatal(err)
	}
	if f == nil {
		t.Fatal("no forwarder")
	}
	clock := newManualClock()
	f.now = clock.Now
	t.Cleanup(func() { f.Close() })
	return f, clock
}

func TestForwardCachesWithDecrementedTTL(t *testing.T) {
	up := startTestUpstream(t, fakeResolver)
	f, clock := newTestForwarder(t, ForwardSettings{Upstreams: []string{"udp://" + up.addr}})
	ctx := context.Background()

	q := forwardQuery("www.example.", dns.TypeA)
	q.Id = 4321
	r, err := f.Exchange(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if r.Id != 4321 || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 || r.Answer[0].Header().Ttl != 300 {
		t.Fatalf("first answer %v", r)
	}
	if r.IsEdns0() != nil {
		t.Fatal("an answer to a query without EDNS has an OPT record")
	}

	clock.Advance(10*time.Second + 400*time.Millisecond)
	q2 := forwardQuery("WWW.Example.", dns.TypeA)
	q2.Id = 999
	r2, err := f.Exchange(ctx, q2)
	if err != nil {
		t.Fatal(err)
	}
	if n := up.queries.Load(); n != 1 {
		t.Fatalf("upstream asked %d times, want 1 (the second from the cache)", n)
	}
	if r2.Id != 999 || r2.Question[0].Name != "WWW.Example." {
		t.Fatalf("cached answer has ID %d, question %v; want the request's", r2.Id, r2.Question)
	}
	if a, b := r2.Answer[0].Header().Ttl, r2.Answer[1].Header().Ttl; a != 290 || b != 590 {
		t.Fatalf("cached TTLs %d, %d; want 290, 590", a, b)
	}
	// The cached copy itself is not aged by handing it out.
	r3, _ := f.Exchange(ctx, q2)
	if r3.Answer[0].Header().Ttl != 290 {
		t.Fatalf("third answer TTL %d, want 290", r3.Answer[0].Header().Ttl)
	}

	// The smallest answer TTL (300 s) bounds the entry.
	clock.Advance(300*time.Second - 10*time.Second - 400*time.Millisecond - time.Millisecond)
	if _, err := f.Exchange(ctx, q); err != nil || up.queries.Load() != 1 {
		t.Fatalf("just before expiry: %v, upstream asked %d times", err, up.queries.Load())
	}
	clock.Advance(time.Millisecond)
	r4, err := f.Exchange(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if n := up.queries.Load(); n != 2 {
		t.Fatalf("expired entry: upstream asked %d times, want 2", n)
	}
	if r4.Answer[0].Header().Ttl != 300 {
		t.Fatalf("refetched TTL %d, want 300", r4.Answer[0].Header().Ttl)
	}
}

func TestForwardCacheKeyHasDOBit(t *testing.T) {
	up := startTestUpstream(t, fakeResolver)
	f, _ := newTestForwarder(t, ForwardSettings{Upstreams: []string{"udp://" + up.addr}})
	plain := forwardQuery("www.example.", dns.TypeA)
	do := forwardQuery("www.example.", dns.TypeA)
	do.SetEdns0(4096, true)
	for _, q := range []*dns.Msg{plain, do, plain, do} {
		r, err := f.Exchange(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		opt := r.IsEdns0()
		if (q == do) != (opt != nil) || (opt != nil && !opt.Do()) {
			t.Fatalf("query DO=%v: answer OPT %v", q == do, opt)
		}
	}
	if n := up.queries.Load(); n != 2 {
		t.Fatalf("upstream asked %d times, want 2 (one per DO bit)", n)
	}
}

func TestForwardNegativeCache(t *testing.T) {
	up := startTestUpstream(t, fakeResolver)
	f, clock := newTestForwarder(t, ForwardSettings{Upstreams: []string{"udp://" + up.addr}})
	ctx := context.Background()
	ask := func(name string) *dns.Msg {
		t.Helper()
		r, err := f.Exchange(ctx, forwardQuery(name, dns.TypeA))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// NXDOMAIN: SOA MINIMUM 60 s (smaller than the SOA's TTL).
	if r := ask("nx.example."); r.Rcode != dns.RcodeNameError {
		t.Fatalf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	clock.Advance(59 * time.Second)
	r := ask("nx.example.")
	if r.Rcode != dns.RcodeNameError || up.queries.Load() != 1 {
		t.Fatalf("cached NXDOMAIN: rcode %s, upstream asked %d times", dns.RcodeToString[r.Rcode], up.queries.Load())
	}
	if ttl := r.Ns[0].Header().Ttl; ttl != 3600-59 {
		t.Fatalf("cached SOA TTL %d", ttl)
	}
	clock.Advance(time.Second)
	ask("nx.example.")
	if n := up.queries.Load(); n != 2 {
		t.Fatalf("after the SOA minimum: upstream asked %d times, want 2", n)
	}

	// NODATA: the SOA's TTL (30 s) is smaller than its MINIMUM.
	ask("nodata.example.")
	clock.Advance(29 * time.Second)
	ask("nodata.example.")
	if n := up.queries.Load(); n != 3 {
		t.Fatalf("NODATA: upstream asked %d times, want 3", n)
	}
	clock.Advance(time.Second)
	ask("nodata.example.")
	if n := up.queries.Load(); n != 4 {
		t.Fatalf("NODATA expired: upstream asked %d times, want 4", n)
	}

	// A day-long negative TTL is capped at an hour.
	ask("nx-long.example.")
	clock.Advance(time.Hour - time.Second)
	ask("nx-long.example.")
	if n := up.queries.Load(); n != 5 {
		t.Fatalf("capped NXDOMAIN: upstream asked %d times, want 5", n)
	}
	clock.Advance(time.Second)
	ask("nx-long.example.")
	if n := up.queries.Load(); n != 6 {
		t.Fatalf("capped NXDOMAIN expired: upstream asked %d times, want 6", n)
	}
}

func TestForwardFallsThrough(t *testing.T) {
	// The first upstream receives the query and never answers.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	refusing := startTestUpstream(t, func(req *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		return m.SetRcode(req, dns.RcodeRefused)
	})
	up := startTestUpstream(t, fakeResolver)
	f, _ := newTestForwarder(t, ForwardSettings{
		Upstreams: []string{"udp://" + silent.LocalAddr().String(), "tcp://" + refusing.addr, "udp://" + up.addr},
		Timeout:   "200ms",
	})
	r, err := f.Exchange(context.Background(), forwardQuery("www.example.", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("answer %v", r)
	}
	if refusing.queries.Load() != 1 || up.queries.Load() != 1 {
		t.Fatalf("refusing upstream asked %d, answering one %d times; want 1, 1", refusing.queries.Load(), up.queries.Load())
	}

	// When every upstream fails, the error names each of them.
	f2, _ := newTestForwarder(t, ForwardSettings{
		Upstreams: []string{"udp://" + silent.LocalAddr().String()},
		Timeout:   "100ms",
	})
	if _, err := f2.Exchange(context.Background(), forwardQuery("www.example.", dns.TypeA)); err == nil ||
		!strings.Contains(err.Error(), `forward upstream "udp://`+silent.LocalAddr().String()+`"`) {
		t.Fatalf("all upstreams silent: %v", err)
	}

	// A REFUSED from the only upstream is passed on, not cached.
	f3, _ := newTestForwarder(t, ForwardSettings{Upstreams: []string{"udp://" + refusing.addr}})
	for range 2 {
		r, err := f3.Exchange(context.Background(), forwardQuery("www.example.", dns.TypeA))
		if err != nil || r.Rcode != dns.RcodeRefused {
			t.Fatalf("refused: %v, %v", r, err)
		}
	}
	if n := refusing.queries.Load(); n != 3 {
		t.Fatalf("refusing upstream asked %d times, want 3", n)
	}
}

func TestForwardTruncatedUDPRetriesOverTCP(t *testing.T) {
	// The upstream truncates over UDP; the forwarder asks again over TCP.
	var udpSeen, tcpSeen atomic.Int64
	up2 := startTestUpstreamWriter(t, func(w dns.ResponseWriter, req *dns.Msg) {
		m := fakeResolver(req)
		if _, ok := w.RemoteAddr().(*net.UDPAddr); ok {
			udpSeen.Add(1)
			m.Truncated = true
			m.Answer = nil
		} else {
			tcpSeen.Add(1)
		}
		_ = w.WriteMsg(m)
	})
	f, _ := newTestForwarder(t, ForwardSettings{Upstreams: []string{"udp://" + up2}})
	r, err := f.Exchange(context.Background(), forwardQuery("www.example.", dns.TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 2 || udpSeen.Load() != 1 || tcpSeen.Load() != 1 {
		t.Fatalf("answer TC=%v with %d records; UDP %d, TCP %d queries", r.Truncated, len(r.Answer), udpSeen.Load(), tcpSeen.Load())
	}
}

// startTestUpstreamWriter serves h over UDP and TCP on 127.0.0.1.
func startTestUpstreamWriter(t *testing.T, h dns.HandlerFunc) string {
	t.Helper()
	pc, ln, err := listenClassic("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ActivateAndServe()
		}()
		<-started
		t.Cleanup(func() {
			_ = srv.Shutdown()
			<-done
		})
	}
	return pc.LocalAddr().String()
}

// selfSignedTestCert is a self-signed certificate for 127.0.0.1 and localhost.
func selfSignedTestCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test resolver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// doqTestServer is a minimal DNS-over-QUIC server (RFC 9250).
type doqTestServer struct {
	ln      *quic.Listener
	roots   *x509.CertPool
	conns   atomic.Int64 // connections accepted
	queries atomic.Int64
	badID   atomic.Int64 // queries whose ID was not 0

	mu    sync.Mutex
	open  []*quic.Conn
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelFunc
	reset atomic.Bool // reset every stream with DOQ_EXCESSIVE_LOAD
}

func startDoQServer(t *testing.T, handle func(*dns.Msg) *dns.Msg) *doqTestServer {
	t.Helper()
	cert, roots := selfSignedTestCert(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"doq"}, MinVersion: tls.VersionTLS13}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &doqTestServer{ln: ln, roots: roots}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept(s.ctx)
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			s.open = append(s.open, conn)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serveConn(conn, handle)
			}()
		}
	}()
	t.Cleanup(func() {
		s.stop()
		ln.Close()
		s.closeConns()
		s.wg.Wait()
	})
	return s
}

func (s *doqTestServer) addr() string { return s.ln.Addr().String() }

// closeConns closes every connection accepted so far.
func (s *doqTestServer) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.open {
		_ = c.CloseWithError(0, "")
	}
	s.open = nil
}

func (s *doqTestServer) serveConn(conn *quic.Conn, handle func(*dns.Msg) *dns.Msg) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := conn.AcceptStream(s.ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.reset.Load() {
				st.CancelRead(4)
				st.CancelWrite(4)
				return
			}
			// The query ends where the client closed its side.
			in, err := io.ReadAll(io.LimitReader(st, 65537))
			if err != nil || len(in) < 2 || int(binary.BigEndian.Uint16(in)) != len(in)-2 {
				st.CancelWrite(2)
				return
			}
			req := new(dns.Msg)
			if err := req.Unpack(in[2:]); err != nil {
				st.CancelWrite(2)
				return
			}
			s.queries.Add(1)
			if req.Id != 0 {
				s.badID.Add(1)
			}
			out, err := handle(req).Pack()
			if err != nil {
				st.CancelWrite(1)
				return
			}
			_, _ = st.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
			_ = st.Close()
		}()
	}
}

func TestForwardDoQ(t *testing.T) {
	srv := startDoQServer(t, fakeResolver)
	f, _ := newTestForwarder(t, ForwardSettings{Upstreams: []string{"quic://" + srv.addr()}})
	f.rootCAs = srv.roots
	ctx := context.Background()

	for i, name := range []string{"a.example.", "b.example.", "a.example."} {
		q := forwardQuery(name, dns.TypeA)
		q.Id = uint16(100 + i)
		q.SetEdns0(1232, false)
		r, err := f.Exchange(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Id != q.Id || len(r.Answer) != 2 || r.IsEdns0() == nil {
			t.Fatalf("%s: answer %v", name, r)
		}
	}
	if q, c, bad := srv.queries.Load(), srv.conns.Load(), srv.badID.Load(); q != 2 || c != 1 || bad != 0 {
		t.Fatalf("server saw %d queries (want 2: one from the cache) on %d connections (want 1), %d with an ID", q, c, bad)
	}

	// Many queries on one connection: finished streams do not count
	// against the server's limit on open streams (100 by default).
	for i := range 150 {
		if _, err := f.Exchange(ctx, forwardQuery(fmt.Sprintf("n%d.example.", i), dns.TypeA)); err != nil {
			t.Fatalf("query %d on one connection: %v", i, err)
		}
	}
	if c := srv.conns.Load(); c != 1 {
		t.Fatalf("%d connections, want 1", c)
	}

	// The server closes the connection: the next query dials again.
	srv.closeConns()
	r, err := f.Exchange(ctx, forwardQuery("c.example.", dns.TypeA))
	if err != nil {
		t.Fatalf("after the server closed the connection: %v", err)
	}
	if len(r.Answer) != 2 || srv.conns.Load() != 2 {
		t.Fatalf("answer %v on connection %d, want a second connection", r, srv.conns.Load())
	}

	// A stream reset by the server fails the query, not the connection.
	srv.reset.Store(true)
	if _, err := f.Exchange(ctx, forwardQuery("d.example.", dns.TypeA)); err == nil {
		t.Fatal("a reset stream gave an answer")
	}
	srv.reset.Store(false)
	if _, err := f.Exchange(ctx, forwardQuery("e.example.", dns.TypeA)); err != nil || srv.conns.Load() != 2 {
		t.Fatalf("after a reset stream: %v, %d connections (want 2)", err, srv.conns.Load())
	}
}

func TestForwardDoQRejectsUnknownCertificate(t *testing.T) {
	srv := startDoQServer(t, fakeResolver)
	f, _ := newTestForwarder(t, ForwardSettings{Upstreams: []string{"quic://" + srv.addr()}, Timeout: "2s"})
	// No f.rootCAs: the system roots do not know the test certificate.
	_, err := f.Exchange(context.Background(), forwardQuery("a.example.", dns.TypeA))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("unknown certificate: %v", err)
	}
	if srv.queries.Load() != 0 {
		t.Fatal("the query was sent to an unverified server")
	}
}

func TestForwardDoT(t *testing.T) {
	cert, roots := selfSignedTestCert(t)
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &acceptCounter{Listener: tcp}
	ln := tls.NewListener(counted, &tls.Config{Certificates: []tls.Certificate{cert}})
	var queries atomic.Int64
	var padded atomic.Int64
	srv := &dns.Server{Listener: ln, Net: "tcp-tls", Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		queries.Add(1)
		if opt := req.IsEdns0(); opt != nil {
			for _, o := range opt.Option {
				if _, ok := o.(*dns.EDNS0_PADDING); ok && req.Len()%forwardPaddingBlock == 0 {
					padded.Add(1)
				}
			}
		}
		_ = w.WriteMsg(fakeResolver(req))
	})}
	started, done := make(chan struct{}), make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})

	f, _ := newTestForwarder(t, ForwardSettings{Upstreams: []string{"tls://" + ln.Addr().String()}})
	f.rootCAs = roots
	for _, name := range []string{"a.example.", "b.example."} {
		r, err := f.Exchange(context.Background(), forwardQuery(name, dns.TypeA))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(r.Answer) != 2 {
			t.Fatalf("%s: answer %v", name, r)
		}
	}
	if queries.Load() != 2 || padded.Load() != 2 {
		t.Fatalf("server saw %d queries, %d padded to %d bytes; want 2, 2", queries.Load(), padded.Load(), forwardPaddingBlock)
	}
	if n := counted.n.Load(); n != 1 {
		t.Fatalf("%d TLS connections, want 1 (kept for the second query)", n)
	}
}

// acceptCounter counts the connections it accepts.
type acceptCounter struct {
	net.Listener
	n atomic.Int64
}

func (l *acceptCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func TestForwardCacheEviction(t *testing.T) {
	c := newAnswerCache(2)
	now := time.Now()
	m := fakeResolver(forwardQuery("x.example.", dns.TypeA))
	for _, n := range []string{"a.", "b.", "c."} {
		c.put(cacheKey{name: n, qtype: dns.TypeA, qclass: dns.ClassINET}, m, now)
		if n == "b." {
			c.get(cacheKey{name: "a.", qtype: dns.TypeA, qclass: dns.ClassINET}, now) // a. is now the most recent
		}
	}
	if c.len() != 2 {
		t.Fatalf("%d entries, want 2", c.len())
	}
	if _, ok := c.get(cacheKey{name: "b.", qtype: dns.TypeA, qclass: dns.ClassINET}, now); ok {
		t.Fatal("the least recently used entry was kept")
	}
	if _, ok := c.get(cacheKey{name: "a.", qtype: dns.TypeA, qclass: dns.ClassINET}, now); !ok {
		t.Fatal("a recently used entry was evicted")
	}
}

func TestForwardCacheTTL(t *testing.T) {
	m := new(dns.Msg)
	m.Rcode = dns.RcodeServerFailure
	if cacheTTL(m) != 0 {
		t.Fatal("SERVFAIL cached")
	}
	m.Rcode = dns.RcodeNameError
	if cacheTTL(m) != 0 {
		t.Fatal("NXDOMAIN without SOA cached")
	}
	m = fakeResolver(forwardQuery("www.example.", dns.TypeA))
	m.Answer[1].Header().Ttl = 0
	if cacheTTL(m) != 0 {
		t.Fatal("an answer with a zero TTL cached")
	}
	m.Answer[1].Header().Ttl = 7 * 86400
	m.Answer[0].Header().Ttl = 7 * 86400
	if got := cacheTTL(m); got != forwardMaxPositiveTTL {
		t.Fatalf("a week-long TTL cached for %v", got)
	}
}

func TestForwardSettingsCheck(t *testing.T) {
	good := []ForwardSettings{
		{},
		{Upstreams: []string{"udp://192.0.2.53:53", "tcp://192.0.2.53", "tls://dns.example:853", "quic://dns.example", "udp://[2001:db8::53]:5353"}},
		{CacheSize: 10, Timeout: "500ms"},
	}
	for _, s := range good {
		if err := s.check(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := []ForwardSettings{
		{Upstreams: []string{"192.0.2.53:53"}},
		{Upstreams: []string{"https://dns.example/dns-query"}},
		{Upstreams: []string{"udp://"}},
		{Upstreams: []string{"udp://192.0.2.53:0"}},
		{Upstreams: []string{"udp://192.0.2.53:99999"}},
		{Upstreams: []string{"tls://dns.example:853/path"}},
		{Upstreams: []string{"tls://user@dns.example:853"}},
		{Upstreams: []string{"quic://dns.example:853#pin"}},
		{CacheSize: -1},
		{Timeout: "0s"},
		{Timeout: "soon"},
	}
	for _, s := range bad {
		if err := s.check(); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	err := ForwardSettings{Upstreams: []string{"ftp://x:21"}}.check()
	if err == nil || !strings.Contains(err.Error(), `forward upstream "ftp://x:21"`) {
		t.Errorf("error %v does not name the upstream", err)
	}

	f, err := newForwarder(nil, ForwardSettings{})
	if f != nil || err != nil {
		t.Fatalf("no upstreams: %v, %v; want nil, nil", f, err)
	}
}

func TestForwardClosed(t *testing.T) {
	up := startTestUpstream(t, fakeResolver)
	f, _ := newTestForwarder(t, ForwardSettings{Upstreams: []string{"udp://" + up.addr}})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Exchange(context.Background(), forwardQuery("a.example.", dns.TypeA)); err == nil {
		t.Fatal("Exchange after Close")
	}
}
