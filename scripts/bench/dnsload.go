package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/identity"
)

// The DNS load generator of the dns rows (m13.go): clients of DNS over
// QUIC (RFC 9250) and DNS over TLS (RFC 7858) in this process, the same
// code against every server. Each client holds one connection and asks
// one question after the other on it; c clients are c connections, asked
// from c goroutines.

// dnsQuestion is what every query asks: dnsQueryName, type A, answered by
// one A record, dnsQueryAnswer.
const (
	dnsQueryName   = "www.example.net."
	dnsQueryAnswer = "192.0.2.10"
)

// dnsTarget is a server of the dns rows and how its clients check it.
type dnsTarget struct {
	addr string // host:port
	// fp is the fingerprint of the key the server presents (pinned).
	fp string
	// alpn is the ALPN the clients offer. A server must select it, unless
	// alpnOptional: CoreDNS's DoT server selects none (it sets no
	// NextProtos; RFC 7858 does not require ALPN).
	alpn         string
	alpnOptional bool
}

// tlsConfig is the clients' TLS config: TLS 1.3, the target's ALPN, the
// server pinned by its key (the name checks of the Web PKI do not apply:
// both servers present a self-signed certificate of the bench's making or
// the node's own).
func (t dnsTarget) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{t.alpn},
		ServerName:         identity.RawKeySNI,
		InsecureSkipVerify: true, // verified below: the key is pinned
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server presented no certificate")
			}
			if err := pinNode(t.fp)(cs.PeerCertificates[0].Raw); err != nil {
				return err
			}
			if cs.NegotiatedProtocol != t.alpn && !(t.alpnOptional && cs.NegotiatedProtocol == "") {
				return fmt.Errorf("the server selected ALPN %q, want %q", cs.NegotiatedProtocol, t.alpn)
			}
			return nil
		},
	}
}

// dnsConn is one client's connection.
type dnsConn interface {
	// query asks dnsQueryName A and checks the answer.
	query(ctx context.Context) error
	// last describes the last answer (for the progress log).
	last() string
	close()
}

// dnsDial opens one client's connection to a target.
type dnsDial func(ctx context.Context, t dnsTarget) (dnsConn, error)

// dnsLoad measures queries per second of clients clients of t, each on a
// connection of its own asking sequentially. The connections are opened
// by the warm-up, right before the first round (the servers close idle
// connections after some seconds: CoreDNS after 10), and closed by stop
// before stopServer runs. label names the side in the progress log.
func dnsLoad(e *env, t dnsTarget, dial dnsDial, clients int, label string, stopServer func()) *instance {
	var mu sync.Mutex
	var conns []dnsConn
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.close()
		}
		conns = nil
	}
	pool := make(chan dnsConn, clients)
	one := func(ctx context.Context) error {
		c := <-pool
		defer func() { pool <- c }()
		return c.query(ctx)
	}
	run := func(ctx context.Context, d time.Duration) (float64, error) {
		ctx, cancel := context.WithTimeoutCause(ctx, d+30*time.Second, errors.New("round did not finish"))
		defer cancel()
		// A server that stops answering would leave a client blocked in a
		// read: closing the connections unblocks it. Not once the round
		// has ended (stop runs before cancel).
		stop := context.AfterFunc(ctx, closeAll)
		defer stop()
		return opsPerSecond(ctx, clients, d, one)
	}
	return &instance{
		Warmup: func(ctx context.Context) error {
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			for range clients {
				c, err := dial(dctx, t)
				if err != nil {
					return fmt.Errorf("connect to %s: %w", t.addr, err)
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				if err := c.query(dctx); err != nil {
					return err
				}
				pool <- c
			}
			e.progress("  %s: %s", label, conns[0].last())
			_, err := run(ctx, 200*time.Millisecond)
			return err
		},
		Measure: func(ctx context.Context) (float64, error) { return run(ctx, e.callRound()) },
		Stop: func() {
			closeAll()
			stopServer()
		},
	}
}

// dnsChecker packs the query and checks answers; one per connection.
type dnsChecker struct {
	msg dns.Msg
	// size is the last answer's length in bytes.
	size int
}

// dnsQuery is a query of dnsQueryName A with message ID id, behind its
// 2-byte length (RFC 7858 §3.3, RFC 9250 §4.2).
func dnsQuery(id uint16) ([]byte, error) {
	m := new(dns.Msg)
	m.SetQuestion(dnsQueryName, dns.TypeA)
	m.Id = id
	m.RecursionDesired = false
	b, err := m.Pack()
	if err != nil {
		return nil, err
	}
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...), nil
}

var dnsWantA = net.ParseIP(dnsQueryAnswer)

// check unpacks b and requires the answer to query id: a response,
// NOERROR, the question asked, and one answer, the A record dnsQueryAnswer.
func (c *dnsChecker) check(b []byte, id uint16) error {
	c.size = len(b)
	m := &c.msg
	if err := m.Unpack(b); err != nil {
		return fmt.Errorf("answer of %d bytes: %v", len(b), err)
	}
	switch {
	case m.Id != id:
		return fmt.Errorf("answer with message ID %d to query %d", m.Id, id)
	case !m.Response:
		return errors.New("the answer is not a response")
	case m.Rcode != dns.RcodeSuccess:
		return fmt.Errorf("answer %s, want NOERROR", dns.RcodeToString[m.Rcode])
	case len(m.Question) != 1 || !strings.EqualFold(m.Question[0].Name, dnsQueryName) || m.Question[0].Qtype != dns.TypeA:
		return fmt.Errorf("answer to question %v, want %s A", m.Question, dnsQueryName)
	case len(m.Answer) != 1:
		return fmt.Errorf("%d answer record(s), want 1: %v", len(m.Answer), m.Answer)
	}
	if a, ok := m.Answer[0].(*dns.A); !ok || !a.A.Equal(dnsWantA) {
		return fmt.Errorf("answer %v, want %s A %s", m.Answer[0], dnsQueryName, dnsQueryAnswer)
	}
	return nil
}

func (c *dnsChecker) last() string {
	m := &c.msg
	return fmt.Sprintf("%s A answered with %d bytes: %d answer, %d authority, %d additional record(s), aa=%v",
		dnsQueryName, c.size, len(m.Answer), len(m.Ns), len(m.Extra), m.Authoritative)
}

// --- DNS over QUIC ---

// doqConn asks each query on a stream of its own (RFC 9250 §4.2): the
// 2-byte length and the message, with ID 0, then FIN; the answer is read
// to the stream's end.
type doqConn struct {
	conn *quic.Conn
	req  []byte
	buf  []byte
	dnsChecker
}

func dialDoQ(ctx context.Context, t dnsTarget) (dnsConn, error) {
	req, err := dnsQuery(0)
	if err != nil {
		return nil, err
	}
	conn, err := quic.DialAddr(ctx, t.addr, t.tlsConfig(), nil)
	if err != nil {
		return nil, err
	}
	return &doqConn{conn: conn, req: req, buf: make([]byte, 0, 512)}, nil
}

func (c *doqConn) query(ctx context.Context) error {
	st, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	if _, err := st.Write(c.req); err != nil {
		st.CancelRead(0)
		return fmt.Errorf("doq: write the query: %w", err)
	}
	if err := st.Close(); err != nil {
		st.CancelRead(0)
		return err
	}
	b := c.buf[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := st.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("doq: read the answer after %d bytes: %w", len(b), err)
		}
	}
	c.buf = b
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		return fmt.Errorf("doq: the stream carried %d bytes, not one length-prefixed message", len(b))
	}
	return c.check(b[2:], 0)
}

func (c *doqConn) close() { _ = c.conn.CloseWithError(0, "") } // DOQ_NO_ERROR

// --- DNS over TLS ---

// dotConn asks its queries one after the other on one TLS connection
// (RFC 7858 §3.3): the 2-byte length and the message, each with an ID of
// its own, and reads the answer's length and message.
type dotConn struct {
	conn *tls.Conn
	req  []byte
	id   uint16
	buf  []byte
	dnsChecker
}

func dialDoT(ctx context.Context, t dnsTarget) (dnsConn, error) {
	req, err := dnsQuery(0)
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: t.tlsConfig()}
	nc, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	return &dotConn{conn: nc.(*tls.Conn), req: req, buf: make([]byte, 512)}, nil
}

func (c *dotConn) query(context.Context) error {
	c.id++
	binary.BigEndian.PutUint16(c.req[2:], c.id) // the message's ID
	if _, err := c.conn.Write(c.req); err != nil {
		return fmt.Errorf("dot: write the query: %w", err)
	}
	if _, err := io.ReadFull(c.conn, c.buf[:2]); err != nil {
		return fmt.Errorf("dot: read the answer's length: %w", err)
	}
	n := int(binary.BigEndian.Uint16(c.buf))
	if n > len(c.buf) {
		c.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(c.conn, c.buf[:n]); err != nil {
		return fmt.Errorf("dot: read the answer: %w", err)
	}
	return c.check(c.buf[:n], c.id)
}

func (c *dotConn) close() { _ = c.conn.Close() }
