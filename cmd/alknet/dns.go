package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
)

func (a *app) dnsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "dns",
		Short: "Query a node's DNS service, publish signed records (the DNS plugin)",
		Long: `A node running the DNS plugin answers DNS over QUIC (ALPN doq), DNS over TLS
(ALPN dot, on the node's TCP+TLS listener), DNS over HTTPS (/dns-query of the
HTTP plugin), all on the node's port, and plain DNS on a listener of its own.`,
	}
	c.AddCommand(a.dnsQueryCmd(), a.dnsPublishCmd())
	return c
}

// DNS transports of `alknet dns query`.
const (
	dnsDoQ = "doq"
	dnsDoT = "dot"
	dnsDoH = "doh"
	dnsUDP = "udp"
	dnsTCP = "tcp"
)

// dnsTransports are the transport flags, the default first.
var dnsTransports = []string{dnsDoQ, dnsDoT, dnsDoH, dnsUDP, dnsTCP}

// dnsMaxMessage is the largest DNS message (its length is 16 bits on
// every stream transport).
const dnsMaxMessage = 65535

func (a *app) dnsQueryCmd() *cobra.Command {
	var f dialFlags
	var tok callFlags // only its token flags
	var asJSON bool
	var timeout time.Duration
	use := map[string]*bool{}
	c := &cobra.Command{
		Use:   "query NAME [TYPE] HOST[:PORT] [--doq | --dot | --doh | --udp | --tcp]",
		Short: "Ask a node's DNS service one question and print the answer (like dig)",
		Long: `Ask HOST one question — NAME, of TYPE (default A; any type name, or TYPEnnn) —
and print the status and the answer's records, one per line as dig prints
them, then the authority section when there is one. A DNS error (NXDOMAIN,
SERVFAIL, REFUSED) is an answer: its status is printed and the exit status is
0. The exit status is 1 when no answer came (connection, verification,
transport or HTTP errors). A zone transfer (AXFR) over --doq or --dot is read
to its closing SOA, however many messages it takes; the node gives it only to
identities the zone's allow_transfer lists.

Transports (one; default --doq):
  --doq  DNS over QUIC (RFC 9250): ALPN doq on the node's UDP port
  --dot  DNS over TLS (RFC 7858): ALPN dot on the node's TCP port
  --doh  DNS over HTTPS (RFC 8484): POST /dns-query over HTTP/2 (ALPN h2) on
         the node's TCP port, served by the HTTP plugin
  --udp, --tcp  plain DNS to HOST:PORT (the port is required: the DNS
         plugin's own listener), nothing verified

The encrypted transports dial the node as 'alknet pipe' does (port 4433 when
omitted) and verify it the same way: --peer (its fingerprint, from 'alknet
id'; HOST may also be FINGERPRINT@HOST[:PORT]), else known_peers, else WebPKI
for a CA-issued certificate; anything else fails closed. For --doh the node
presents its raw-key (Ed25519) certificate to this client, so the same
fingerprint pins it. If this machine has a vault its node certificate is
presented, so the query is made as this machine's identity; with --doh a
bearer token (--token-file, --token-credential) makes it as the token's.`,
		Example: `  alknet dns query --peer ed25519:… example.com node.example
  alknet dns query --dot --peer ed25519:… example.com MX node.example:4433
  alknet dns query --doh --json example.com AAAA ed25519:…@node.example
  alknet dns query --udp example.com TXT 127.0.0.1:5353`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, qtype, target, err := parseDNSQueryArgs(args)
			if err != nil {
				return err
			}
			transport := dnsDoQ
			for _, t := range dnsTransports {
				if *use[t] {
					transport = t
				}
			}
			if (tok.tokenFile != "" || tok.tokenCredential != "") && transport != dnsDoH {
				return fmt.Errorf("--token-file and --token-credential are for --doh: DoQ and DoT carry no bearer token (the node knows this machine by its certificate)")
			}
			token, err := a.token(&tok)
			if err != nil {
				return err
			}
			q := dnsQuestion(name, qtype, transport)
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout+timeout)
			defer cancel()
			var answer *dns.Msg
			switch transport {
			case dnsUDP, dnsTCP:
				if f.o.Peer != "" || f.o.TrustOnFirstUse || f.caFile != "" || f.o.ServerName != "" {
					return fmt.Errorf("--%s is plain DNS: there is no TLS identity to verify (--peer, --trust-on-first-use, --ca-file and --server-name are for --doq, --dot and --doh)", transport)
				}
				addr, err := plainDNSAddr(target, transport)
				if err != nil {
					return err
				}
				answer, err = a.plainExchange(ctx, transport, addr, q, timeout)
				if err != nil {
					return err
				}
			default:
				addr, err := f.node(target)
				if err != nil {
					return err
				}
				answer, err = a.nodeExchange(ctx, transport, addr, &f, q, timeout, token)
				if err != nil {
					return err
				}
			}
			if answer.Id != q.Id {
				return fmt.Errorf("the answer's id %d is not the query's (%d)", answer.Id, q.Id)
			}
			if asJSON {
				return a.printJSON(dnsAnswerJSON(answer))
			}
			return writeDNSAnswer(a.out, answer)
		},
	}
	fl := c.Flags()
	help := map[string]string{
		dnsDoQ: "DNS over QUIC: ALPN doq on the node's port (default)",
		dnsDoT: "DNS over TLS: ALPN dot on the node's TCP port",
		dnsDoH: "DNS over HTTPS: POST /dns-query over HTTP/2 on the node's TCP port",
		dnsUDP: "plain DNS over UDP to HOST:PORT (not verified)",
		dnsTCP: "plain DNS over TCP to HOST:PORT (not verified)",
	}
	for _, t := range dnsTransports {
		use[t] = new(bool)
		fl.BoolVar(use[t], t, false, help[t])
	}
	c.MarkFlagsMutuallyExclusive(dnsTransports...)
	fl.BoolVar(&asJSON, "json", false, `print {"status", "answer", "authority"} as JSON (docs/json.md)`)
	fl.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the answer once connected")
	fl.StringVar(&tok.tokenFile, "token-file", "", "with --doh: file (mode 0600) with a bearer token (alk_… API key or peer token) sent as Authorization")
	fl.StringVar(&tok.tokenCredential, "token-credential", "", "with --doh: name of a stored credential ('alknet credential set') holding the bearer token")
	f.addTrust(c)
	return c
}

// parseDNSQueryArgs reads NAME [TYPE] HOST: the name as a fully
// qualified domain name and the type's number (default A).
func parseDNSQueryArgs(args []string) (name string, qtype uint16, target string, err error) {
	if len(args) < 2 || len(args) > 3 {
		return "", 0, "", fmt.Errorf("want NAME [TYPE] HOST[:PORT], got %d arguments", len(args))
	}
	name, target, qtype = args[0], args[len(args)-1], dns.TypeA
	if _, ok := dns.IsDomainName(name); !ok || name == "" {
		return "", 0, "", fmt.Errorf("%q is not a domain name", name)
	}
	name = dns.Fqdn(name)
	if len(args) == 3 {
		if qtype, err = parseDNSType(args[1]); err != nil {
			return "", 0, "", err
		}
	}
	return name, qtype, target, nil
}

// parseDNSType is a type name miekg/dns knows (case does not matter), or
// the generic TYPEnnn of RFC 3597.
func parseDNSType(s string) (uint16, error) {
	u := strings.ToUpper(s)
	if t, ok := dns.StringToType[u]; ok && t != dns.TypeNone && t != dns.TypeReserved {
		return t, nil
	}
	if n, ok := strings.CutPrefix(u, "TYPE"); ok {
		if v, err := strconv.ParseUint(n, 10, 16); err == nil && v > 0 {
			return uint16(v), nil
		}
	}
	return 0, fmt.Errorf("%q is not a DNS record type (A, AAAA, MX, TXT, … or TYPEnnn)", s)
}

// dnsQuestion is the query: recursion desired, EDNS(0) with a 1232-byte
// UDP payload (the size DNS Flag Day 2020 settled on), id 0 on DoQ (RFC
// 9250 §4.2.1) and DoH (RFC 8484 §4.1), a random id elsewhere.
func dnsQuestion(name string, qtype uint16, transport string) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, false)
	if transport == dnsDoQ || transport == dnsDoH {
		q.Id = 0
	}
	return q
}

// plainDNSAddr is HOST:PORT for --udp and --tcp, where the port is
// required: plain DNS is not on the node's port.
func plainDNSAddr(arg, transport string) (string, error) {
	if strings.Contains(arg, "@") {
		return "", fmt.Errorf("%q: --%s is plain DNS, with no fingerprint to pin; give HOST:PORT", arg, transport)
	}
	host, port, err := net.SplitHostPort(arg)
	if err != nil || host == "" {
		return "", fmt.Errorf("%q: --%s needs HOST:PORT, the port of the DNS plugin's listener (e.g. 127.0.0.1:5353; IPv6 as [::1]:5353)", arg, transport)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("%q: port %q must be a number 1..65535", arg, port)
	}
	return net.JoinHostPort(host, port), nil
}

// plainExchange asks over plain UDP or TCP; a truncated UDP answer is
// asked again over TCP, as dig does.
func (a *app) plainExchange(ctx context.Context, transport, addr string, q *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: transport, Timeout: timeout}
	r, _, err := c.ExchangeContext(ctx, q, addr)
	if err == nil && r.Truncated && transport == dnsUDP {
		fmt.Fprintln(a.err, ";; truncated, retrying over TCP")
		c.Net = dnsTCP
		r, _, err = c.ExchangeContext(ctx, q, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", strings.ToUpper(transport), addr, err)
	}
	return r, nil
}

// nodeExchange asks the node at addr over DoQ, DoT or DoH, dialed and
// verified as every command dials a node.
func (a *app) nodeExchange(ctx context.Context, transport, addr string, f *dialFlags, q *dns.Msg, timeout time.Duration, token string) (*dns.Msg, error) {
	wire, err := q.Pack()
	if err != nil {
		return nil, err
	}
	alpn := map[string]string{dnsDoQ: "doq", dnsDoT: "dot", dnsDoH: "h2"}[transport]
	o, err := a.dialOptions(f, alpn)
	if err != nil {
		return nil, err
	}
	// DoQ is QUIC's; DoT and HTTP/2 are served on the TCP+TLS listener.
	o.QUIC, o.TCP = transport == dnsDoQ, transport != dnsDoQ
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	conn, err := dial.Dial(dctx, addr, o)
	cancel()
	if err != nil {
		var ce *dial.ConnectError
		if errors.As(err, &ce) { // the hint names --tcp and --quic, which this command has not
			_, port, _ := net.SplitHostPort(addr)
			ce.Hint = fmt.Sprintf("is the node running and is TCP port %s open? (--doq uses UDP)", port)
			if transport == dnsDoQ {
				ce.Hint = fmt.Sprintf("is the node running and is UDP port %s open? (--dot and --doh use TCP)", port)
			}
		}
		return nil, err
	}
	defer conn.CloseWithError(endpoint.CodeNormal, "")
	ctx, cancel = context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, closeReason(conn, err)
	}
	defer s.Close()
	var answer []byte
	if transport == dnsDoH {
		answer, err = dohExchange(ctx, conn, s, addr, wire, token)
	} else {
		// DoQ: one query per stream, the stream's end after it (RFC
		// 9250 §4.2). DoT: the connection stays open for more queries
		// (RFC 7858 §3.3); closing it once answered is this client's end.
		answer, err = streamExchange(ctx, s, wire, transport == dnsDoQ)
	}
	if err != nil {
		if transport == dnsDoH {
			return nil, err
		}
		return nil, closeReason(conn, err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(answer); err != nil {
		return nil, fmt.Errorf("the node's answer is not a DNS message: %w", err)
	}
	if transport != dnsDoH {
		if err := readTransferRest(s, m); err != nil {
			return nil, closeReason(conn, err)
		}
	}
	return m, nil
}

// streamExchange sends one query framed by its 2-byte length (DoQ, DoT)
// and reads the answer framed the same way; closeWrite ends the sending
// side after the query.
func streamExchange(ctx context.Context, s endpoint.Stream, query []byte, closeWrite bool) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(d)
	}
	if len(query) > dnsMaxMessage {
		return nil, fmt.Errorf("the query is %d bytes, more than a DNS message holds", len(query))
	}
	frame := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(query)), uint16(len(query)))
	if _, err := s.Write(append(frame, query...)); err != nil {
		return nil, err
	}
	if closeWrite {
		if err := s.CloseWrite(); err != nil {
			return nil, err
		}
	}
	return readDNSFrame(s)
}

// readDNSFrame reads one message framed by its 2-byte length.
func readDNSFrame(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the node closed the stream without an answer")
		}
		return nil, err
	}
	answer := make([]byte, binary.BigEndian.Uint16(n[:]))
	if _, err := io.ReadFull(r, answer); err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	return answer, nil
}

// readTransferRest reads the further messages of a zone transfer whose
// first message is m, appending their records to m, until the closing
// SOA (RFC 5936 §2.2): a large zone comes in several messages.
func readTransferRest(r io.Reader, m *dns.Msg) error {
	if len(m.Question) != 1 || (m.Question[0].Qtype != dns.TypeAXFR && m.Question[0].Qtype != dns.TypeIXFR) || m.Rcode != dns.RcodeSuccess {
		return nil
	}
	soas := func() int {
		n := 0
		for _, rr := range m.Answer {
			if rr.Header().Rrtype == dns.TypeSOA {
				n++
			}
		}
		return n
	}
	for len(m.Answer) > 0 && (soas() < 2 || m.Answer[len(m.Answer)-1].Header().Rrtype != dns.TypeSOA) {
		b, err := readDNSFrame(r)
		if err != nil {
			return fmt.Errorf("zone transfer: after %d records: %w", len(m.Answer), err)
		}
		part := new(dns.Msg)
		if err := part.Unpack(b); err != nil {
			return fmt.Errorf("zone transfer: after %d records, a message that does not parse: %w", len(m.Answer), err)
		}
		if part.Id != m.Id || part.Rcode != dns.RcodeSuccess {
			return fmt.Errorf("zone transfer: after %d records, a message with id %d and status %s", len(m.Answer), part.Id, dns.RcodeToString[part.Rcode])
		}
		m.Answer = append(m.Answer, part.Answer...)
	}
	return nil
}

// dohExchange POSTs the query to /dns-query over HTTP/2 on s, the one
// stream of the TLS connection conn that negotiated h2 (RFC 8484 §4.1),
// with the bearer token, if any, as the request's credential.
func dohExchange(ctx context.Context, conn endpoint.Conn, s endpoint.Stream, addr string, query []byte, token string) ([]byte, error) {
	// The connection is TLS already (dialed and verified above): net/http
	// gets it as a connection to speak HTTP/2 on with prior knowledge, as
	// the ALPN chose it, and sends the request with its https URL on it.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	nc := &streamNetConn{Stream: s, conn: conn}
	handed := false
	tr := &http.Transport{Protocols: &protos, DialContext: func(context.Context, string, string) (net.Conn, error) {
		if handed {
			return nil, errors.New("the node's connection is in use")
		}
		handed = true
		return nc, nil
	}}
	cc, err := tr.NewClientConn(ctx, "http", addr)
	if err != nil {
		return nil, fmt.Errorf("HTTP/2 to %s: %w", addr, err)
	}
	defer cc.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/dns-query", bytes.NewReader(query))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/dns-message")
	req.Header.Set("Accept", "application/dns-message")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("POST /dns-query: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, dnsMaxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("POST /dns-query: read the answer: %w", err)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("POST /dns-query: %s: %s", resp.Status, truncate(strings.TrimSpace(string(body)), 300))
	case mt != "application/dns-message":
		return nil, fmt.Errorf("POST /dns-query: the answer is %q, not application/dns-message", resp.Header.Get("Content-Type"))
	case len(body) > dnsMaxMessage:
		return nil, errors.New("POST /dns-query: the answer is larger than a DNS message")
	}
	return body, nil
}

// streamNetConn is the stream of a TCP+TLS node connection as a net.Conn.
type streamNetConn struct {
	endpoint.Stream
	conn endpoint.Conn
}

func (c *streamNetConn) LocalAddr() net.Addr  { return c.conn.LocalAddr() }
func (c *streamNetConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// dnsStatus is an answer's rcode by name (NOERROR, NXDOMAIN, …).
func dnsStatus(m *dns.Msg) string {
	if s, ok := dns.RcodeToString[m.Rcode]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(m.Rcode)
}

// writeDNSAnswer prints ";; status: …", the answer's records one per line
// as dig prints them, then the authority section if there is one.
func writeDNSAnswer(w io.Writer, m *dns.Msg) error {
	var b strings.Builder
	fmt.Fprintf(&b, ";; status: %s\n", dnsStatus(m))
	for _, rr := range m.Answer {
		b.WriteString(rr.String() + "\n")
	}
	if len(m.Ns) > 0 {
		b.WriteString(";; AUTHORITY SECTION:\n")
		for _, rr := range m.Ns {
			b.WriteString(rr.String() + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// dnsAnswerJSON is `alknet dns query --json`.
func dnsAnswerJSON(m *dns.Msg) dnsQueryJSON {
	j := dnsQueryJSON{Status: dnsStatus(m), Answer: []string{}, Authority: []string{}}
	for _, rr := range m.Answer {
		j.Answer = append(j.Answer, rr.String())
	}
	for _, rr := range m.Ns {
		j.Authority = append(j.Authority, rr.String())
	}
	return j
}
