package dnsplugin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// manualClock is a clock that tests move by hand.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// classicTestAnswer answers A queries with 192.0.2.1, TXT queries for
// big.example. with 50 TXT records, and records the sources it saw.
type classicTestAnswer struct {
	mu      sync.Mutex
	sources []source
}

func (a *classicTestAnswer) answer(_ context.Context, req *dns.Msg, src source) *dns.Msg {
	a.mu.Lock()
	a.sources = append(a.sources, src)
	a.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(req)
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(classicEDNSSize, opt.Do())
	}
	q := req.Question[0]
	switch {
	case q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(192, 0, 2, 1)})
	case q.Qtype == dns.TypeTXT && strings.EqualFold(q.Name, "big.example."):
		for i := range 50 {
			m.Answer = append(m.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{strings.Repeat(string(rune('a'+i%26)), 40)}})
		}
	default:
		m.Rcode = dns.RcodeRefused
	}
	return m
}

func (a *classicTestAnswer) seen() []source {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]source(nil), a.sources...)
}

// startTestClassic starts a classic listener on 127.0.0.1:0; prepare may
// set test hooks before it listens.
func startTestClassic(t *testing.T, s ClassicSettings, answer answerFunc, prepare func(*classic)) *classic {
	t.Helper()
	if s.Listen == "" {
		s.Listen = "127.0.0.1:0"
	}
	c, err := newClassic(nil, s, answer)
	if err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(c)
	}
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func classicQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

func TestClassicAnswersUDPAndTCP(t *testing.T) {
	a := &classicTestAnswer{}
	c := startTestClassic(t, ClassicSettings{}, a.answer, nil)

	for _, netw := range []string{"udp", "tcp"} {
		cl := &dns.Client{Net: netw, Timeout: 5 * time.Second}
		r, _, err := cl.Exchange(classicQuery("host.example.", dns.TypeA), c.Addr())
		if err != nil {
			t.Fatalf("%s: %v", netw, err)
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Truncated {
			t.Fatalf("%s: answer %v", netw, r)
		}
		if a, ok := r.Answer[0].(*dns.A); !ok || !a.A.Equal(net.IPv4(192, 0, 2, 1)) {
			t.Fatalf("%s: answer record %v", netw, r.Answer[0])
		}
	}
	seen := a.seen()
	if len(seen) != 2 || seen[0].transport != "udp" || seen[1].transport != "tcp" {
		t.Fatalf("sources %+v, want udp then tcp", seen)
	}
	for _, s := range seen {
		if s.identity != nil || !strings.HasPrefix(s.remote, "127.0.0.1:") {
			t.Fatalf("source %+v: want anonymous from 127.0.0.1", s)
		}
	}
	st := c.Stats()
	if st.QueriesUDP != 1 || st.QueriesTCP != 1 || st.Truncated != 0 || st.Dropped != 0 || st.RateLimited != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// sendBurst sends n A queries from conn to addr in one go and returns
// once the listener has handled all of them (handled receives one value
// per UDP query handled).
func sendBurst(t *testing.T, conn net.Conn, n int, firstID uint16, handled <-chan struct{}) {
	t.Helper()
	for i := range n {
		q := classicQuery("host.example.", dns.TypeA)
		q.Id = firstID + uint16(i)
		buf, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	timeout := time.After(30 * time.Second)
	for i := range n {
		select {
		case <-handled:
		case <-timeout:
			t.Fatalf("the listener handled %d of %d queries", i, n)
		}
	}
}

// readAnswers reads n answers from conn, then checks that no other
// answer is waiting; it returns how many were complete and how many
// truncated.
func readAnswers(t *testing.T, conn net.Conn, n int) (complete, truncated int) {
	t.Helper()
	buf := make([]byte, 65535)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, n, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:k]); err != nil {
			t.Fatal(err)
		}
		switch {
		case r.Truncated && len(r.Answer) == 0:
			truncated++
		case !r.Truncated && len(r.Answer) == 1:
			complete++
		default:
			t.Fatalf("unexpected answer %v", r)
		}
	}
	// Every answer was written before the listener reported the query
	// handled, so over loopback they are all queued already.
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("more answers than the listener counted")
	}
	return complete, truncated
}

func TestClassicRRLBurst(t *testing.T) {
	const burst, queries = 40, 200
	a := &classicTestAnswer{}
	clock := newManualClock()
	handled := make(chan struct{}, queries)
	c := startTestClassic(t, ClassicSettings{RateLimit: 20, Burst: burst}, a.answer, func(c *classic) {
		c.limiter.now = clock.Now
		c.udpDone = func() { handled <- struct{}{} }
	})

	conn, err := net.Dial("udp", c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sendBurst(t, conn, queries, 1, handled)
	st := c.Stats()
	complete, truncated := readAnswers(t, conn, int(st.QueriesUDP-st.Dropped))
	dropped := queries - complete - truncated
	t.Logf("%d queries: %d answered, %d truncated, %d dropped; stats %+v", queries, complete, truncated, dropped, st)

	// The clock stands still: the bucket gives exactly Burst answers; of
	// the rest, every second one slips (truncated), the others are dropped.
	over := queries - burst
	if complete > burst {
		t.Fatalf("%d complete answers, want at most the burst %d", complete, burst)
	}
	if complete != burst || truncated != over/2 || dropped != over-over/2 {
		t.Fatalf("answered %d, truncated %d, dropped %d; want %d, %d, %d", complete, truncated, dropped, burst, over/2, over-over/2)
	}
	if st.QueriesUDP != queries || st.RateLimited != uint64(over) || st.Truncated != uint64(truncated) || st.Dropped != uint64(dropped) {
		t.Fatalf("stats %+v do not match what the client saw", st)
	}

	// One second later the bucket holds RateLimit (20) tokens again.
	clock.Advance(time.Second)
	sendBurst(t, conn, 25, 1000, handled)
	st2 := c.Stats()
	complete, truncated = readAnswers(t, conn, int((st2.QueriesUDP-st2.Dropped)-(st.QueriesUDP-st.Dropped)))
	if complete != 20 {
		t.Fatalf("after a second: %d complete answers, %d truncated; want 20 complete", complete, truncated)
	}

	// Another /24 has its own bucket.
	other, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 1, 1)}, net.UDPAddrFromAddrPort(mustAddrPort(t, c.Addr())))
	if err != nil {
		t.Skipf("no second loopback source address: %v", err)
	}
	defer other.Close()
	sendBurst(t, other, 1, 2000, handled)
	if complete, _ := readAnswers(t, other, 1); complete != 1 {
		t.Fatal("a query from another /24 was limited")
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatal(err)
	}
	return ua.AddrPort()
}

func TestClassicTruncatesLargeUDPAnswer(t *testing.T) {
	a := &classicTestAnswer{}
	c := startTestClassic(t, ClassicSettings{}, a.answer, nil)

	for _, edns := range []bool{false, true} {
		q := classicQuery("big.example.", dns.TypeTXT)
		if edns {
			q.SetEdns0(4096, false) // the client would take it; the factor caps it
		}
		cl := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		r, _, err := cl.Exchange(q, c.Addr())
		if err != nil {
			t.Fatal(err)
		}
		if !r.Truncated || len(r.Answer) != 0 || len(r.Ns) != 0 {
			t.Fatalf("edns %v: UDP answer to a %d-byte query: TC=%v with %d records, want TC and none", edns, q.Len(), r.Truncated, len(r.Answer))
		}
		if edns && r.IsEdns0() == nil {
			t.Fatal("the truncated answer lost its OPT record")
		}
		if r.Id != q.Id || len(r.Question) != 1 || r.Question[0].Name != "big.example." {
			t.Fatalf("truncated answer header/question %v", r)
		}
	}

	// A small answer stays under the cap.
	r, _, err := (&dns.Client{Net: "udp", Timeout: 5 * time.Second}).Exchange(classicQuery("small.example.", dns.TypeA), c.Addr())
	if err != nil || r.Truncated || len(r.Answer) != 1 {
		t.Fatalf("small answer over UDP: %v, %v", r, err)
	}

	// TCP has no cap.
	r, _, err = (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(classicQuery("big.example.", dns.TypeTXT), c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated || len(r.Answer) != 50 {
		t.Fatalf("TCP answer: TC=%v with %d records, want 50", r.Truncated, len(r.Answer))
	}
	if st := c.Stats(); st.Truncated != 2 || st.QueriesUDP != 3 || st.QueriesTCP != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestClassicUDPAnswerLimit(t *testing.T) {
	q := classicQuery("example.", dns.TypeA) // 12 + 9 + 4 = 25 bytes
	if got := udpAnswerLimit(q, 3); got != 75 {
		t.Fatalf("limit %d, want 75", got)
	}
	if got := udpAnswerLimit(q, 100); got != 512 {
		t.Fatalf("limit without EDNS %d, want 512", got)
	}
	q.SetEdns0(1232, false)
	if got := udpAnswerLimit(q, 1000); got != 1232 {
		t.Fatalf("limit with EDNS 1232: %d", got)
	}
	q.IsEdns0().SetUDPSize(100) // below 512 means 512
	if got := udpAnswerLimit(q, 1000); got != 512 {
		t.Fatalf("limit with EDNS 100: %d", got)
	}
}

func TestClassicTCPConnectionLimit(t *testing.T) {
	a := &classicTestAnswer{}
	released := make(chan struct{}, 10)
	c := startTestClassic(t, ClassicSettings{MaxTCPConnections: 2, TCPIdleTimeout: "1m"}, a.answer, func(c *classic) {
		c.tcpReleased = func() { released <- struct{}{} }
	})
	dial := func() *dns.Conn {
		t.Helper()
		co, err := dns.DialTimeout("tcp", c.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { co.Close() })
		return co
	}
	query := func(co *dns.Conn) error {
		co.SetDeadline(time.Now().Add(5 * time.Second))
		q := classicQuery("host.example.", dns.TypeA)
		if err := co.WriteMsg(q); err != nil {
			return err
		}
		r, err := co.ReadMsg()
		if err == nil && len(r.Answer) != 1 {
			t.Fatalf("answer %v", r)
		}
		return err
	}

	c1, c2 := dial(), dial()
	for _, co := range []*dns.Conn{c1, c2} {
		if err := query(co); err != nil {
			t.Fatal(err)
		}
	}
	// The third connection is accepted by the kernel and closed at once.
	c3 := dial()
	if err := query(c3); err == nil {
		t.Fatal("a third connection was served with a limit of 2")
	}
	if st := c.Stats(); st.TCPRejected != 1 || st.QueriesTCP != 2 {
		t.Fatalf("stats %+v", st)
	}

	// Closing one frees its slot.
	c1.Close()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not release the closed connection")
	}
	if err := query(dial()); err != nil {
		t.Fatalf("after a slot was freed: %v", err)
	}
	if err := query(c2); err != nil {
		t.Fatalf("second query on a kept connection: %v", err)
	}
}

func TestClassicTCPIdleTimeout(t *testing.T) {
	a := &classicTestAnswer{}
	c := startTestClassic(t, ClassicSettings{TCPIdleTimeout: "100ms"}, a.answer, nil)
	co, err := dns.DialTimeout("tcp", c.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	if err := co.WriteMsg(classicQuery("host.example.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if _, err := co.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	// Idle: the server closes the connection (the client would wait 10 s).
	co.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = co.ReadMsg()
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("idle connection: read %v after %v, want the server to close it", err, time.Since(start))
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Logf("idle connection ended with %v", err)
	}
}

func TestClassicClose(t *testing.T) {
	a := &classicTestAnswer{}
	c, err := startClassic(nil, ClassicSettings{Listen: "127.0.0.1:0"}, a.answer)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.Addr()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Both ports are free again.
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP port still bound: %v", err)
	}
	pc.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP port still bound: %v", err)
	}
	ln.Close()
}

func TestClassicSettingsCheck(t *testing.T) {
	good := []ClassicSettings{
		{},
		{Listen: "127.0.0.1:5353"},
		{Listen: "[::1]:0", RateLimit: 0.5, Burst: 1, UDPAnswerFactor: 10, MaxTCPConnections: 5, TCPIdleTimeout: "2s"},
		{Listen: ":53"},
	}
	for _, s := range good {
		if err := s.check(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := []ClassicSettings{
		{Listen: "127.0.0.1"},
		{Listen: "127.0.0.1:dns53"},
		{Listen: "127.0.0.1:70000"},
		{RateLimit: -1},
		{Burst: -1},
		{UDPAnswerFactor: -2},
		{MaxTCPConnections: -1},
		{TCPIdleTimeout: "ten seconds"},
		{TCPIdleTimeout: "-1s"},
	}
	for _, s := range bad {
		if err := s.check(); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	if _, err := startClassic(nil, ClassicSettings{Listen: "127.0.0.1:x"}, (&classicTestAnswer{}).answer); err == nil {
		t.Error("startClassic accepted a bad address")
	}
}

func TestRRLPrefixes(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.77:53":                "192.0.2.0/24",
		"[::ffff:192.0.2.77]:53":       "192.0.2.0/24",
		"[2001:db8:1:2ff::1]:53":       "2001:db8:1:200::/56",
		"[fe80::1%eth0]:53":            "fe80::/56",
		"[2001:db8:1:2ff:ffff::9]:999": "2001:db8:1:200::/56",
	} {
		ua, err := net.ResolveUDPAddr("udp", in)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := rrlPrefix(ua)
		if !ok || p.String() != want {
			t.Errorf("%s: prefix %v (%v), want %s", in, p, ok, want)
		}
	}
}

func TestRRLSlipAndEviction(t *testing.T) {
	clock := newManualClock()
	l := newRRL(1, 2, 3)
	l.now = clock.Now
	a := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 53}
	var got []rrlVerdict
	for range 6 {
		got = append(got, l.check(a))
	}
	want := []rrlVerdict{rrlAnswer, rrlAnswer, rrlDrop, rrlSlip, rrlDrop, rrlSlip}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("verdicts %v, want %v", got, want)
		}
	}
	clock.Advance(1500 * time.Millisecond) // 1.5 tokens
	if l.check(a) != rrlAnswer || l.check(a) == rrlAnswer {
		t.Fatal("refill: want one answer then none")
	}

	for i := range 5 {
		l.check(&net.UDPAddr{IP: net.IPv4(198, 51, byte(i), 1), Port: 53})
	}
	if n := l.len(); n != 3 {
		t.Fatalf("%d prefixes tracked, want at most 3", n)
	}
	// 192.0.2.0/24 was evicted: it starts again with a full bucket.
	if l.check(a) != rrlAnswer || l.check(a) != rrlAnswer {
		t.Fatal("an evicted prefix did not start with a full bucket")
	}
}
