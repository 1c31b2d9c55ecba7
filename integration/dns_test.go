package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/plugins/dns/pkarr"
)

// dnsZone is the example zone every DNS test serves.
const dnsZone = `$ORIGIN example.net.
$TTL 300
@        IN SOA   ns1.example.net. hostmaster.example.net. 1 7200 3600 1209600 300
@        IN NS    ns1.example.net.
ns1      IN A     192.0.2.1
www      IN A     192.0.2.10
www      IN AAAA  2001:db8::10
@        IN MX    10 mail.example.net.
mail     IN A     192.0.2.25
@        IN TXT   "v=spf1 -all"
_sip._tcp IN SRV  10 5 5060 sip.example.net.
alias    IN CNAME www.example.net.
@        IN CAA   0 issue "letsencrypt.org"
`

// bigTXT is a name whose answer is far larger than a query.
func bigTXT() string {
	var b strings.Builder
	for i := range 30 {
		fmt.Fprintf(&b, "big IN TXT \"%s-%02d\"\n", strings.Repeat("x", 60), i)
	}
	return b.String()
}

type dnsNode struct {
	t      *testing.T
	node   *cli
	srv    *server
	port   string // the node's port (QUIC and TCP+TLS)
	pin    string // kdig's +tls-pin: base64 of the SHA-256 of the node's SPKI
	zone   string // the zone file
	config string
}

// startDNSNode starts a node serving example.net. with extra settings
// under [plugins.dns] and extra config after it.
func startDNSNode(t *testing.T, settings, extra string) *dnsNode {
	t.Helper()
	n := &dnsNode{t: t, node: newCLI(t, nil)}
	dir := t.TempDir()
	n.zone = writeFile(t, filepath.Join(dir, "example.net.zone"), dnsZone+bigTXT(), 0o600)
	cfg := fmt.Sprintf("[plugins.dns]\n%s\n\n[[plugins.dns.zones]]\norigin = \"example.net.\"\nfile = %q\nallow_transfer = [\"xfr\"]\n\n%s\n", settings, n.zone, extra)
	n.config = writeFile(t, filepath.Join(dir, "alknet.toml"), cfg, 0o600)
	n.node.ok("", "init", "--show-mnemonic-once")
	n.srv = startServe(t, n.node, "--config", n.config)
	_, n.port, _ = net.SplitHostPort(n.srv.Addr)
	n.pin = strings.TrimPrefix(strings.TrimSpace(n.node.ok("", "id", "--pin")), "sha256//")
	n.srv.waitLog("dns configured")
	return n
}

// kdig runs Debian's kdig with args and returns its output.
func kdig(t *testing.T, args ...string) string {
	t.Helper()
	full := append([]string{"+timeout=5", "+retry=0"}, args...)
	out, err := exec.Command("kdig", full...).CombinedOutput()
	if err != nil {
		t.Fatalf("kdig %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// transports are kdig's ways to the node's one port.
func (n *dnsNode) transports() map[string][]string {
	at := []string{"@127.0.0.1", "-p", n.port}
	return map[string][]string{
		// kdig 3.2.6 crashes (SIGSEGV) when +quic meets any +tls-pin,
		// +tls-ca or +tls-hostname, so over QUIC it runs the opportunistic
		// profile; the pinned DoQ client is `alknet dns query --doq` and
		// the conformance test's.
		"doq":       append(at, "+quic"),
		"dot":       append(at, "+tls", "+tls-pin="+n.pin),
		"doh":       append(at, "+https", "+tls-pin="+n.pin),
		"doh-get":   append(at, "+https-get", "+tls-pin="+n.pin),
		"doh-wrong": append(at, "+https", "+tls-pin="+base64.StdEncoding.EncodeToString(make([]byte, 32))),
	}
}

var spaces = regexp.MustCompile(`[ \t]+`)

// has reports whether kdig's output has the record (whitespace folded).
func has(out, record string) bool {
	return strings.Contains(spaces.ReplaceAllString(out, " "), record)
}

func status(out string) string {
	m := regexp.MustCompile(`status: ([A-Z]+)`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

// One node process, one port number: kdig over DoQ, DoT and DoH, and the
// classic listener over UDP and TCP, get the zone's answers; NXDOMAIN
// carries the SOA; AXFR is refused to anonymous clients; a name outside
// the zones is refused (not an open resolver); the node's own names; a
// zone file changed and SIGHUP'd is served at once.
func TestDNSOverEveryTransport(t *testing.T) {
	classicPort := freePort(t)
	n := startDNSNode(t, "", fmt.Sprintf("[plugins.dns.classic]\nlisten = \"127.0.0.1:%d\"\n\n[plugins.dns.node]\nname = \"node.example.net.\"\naddresses = [\"192.0.2.50\", \"2001:db8::50\"]\nport = 4433\n", classicPort))
	tr := n.transports()
	classic := map[string][]string{
		"udp": {"@127.0.0.1", "-p", strconv.Itoa(classicPort)},
		"tcp": {"@127.0.0.1", "-p", strconv.Itoa(classicPort), "+tcp"},
	}
	all := map[string][]string{"doq": tr["doq"], "dot": tr["dot"], "doh": tr["doh"], "doh-get": tr["doh-get"], "udp": classic["udp"], "tcp": classic["tcp"]}
	for name, args := range all {
		t.Run(name, func(t *testing.T) {
			out := kdig(t, append(args, "www.example.net", "A")...)
			if status(out) != "NOERROR" || !has(out, "www.example.net. 300 IN A 192.0.2.10") {
				t.Fatalf("www.example.net A over %s:\n%s", name, out)
			}
			if !strings.Contains(out, " aa") && !strings.Contains(out, "aa;") && !regexp.MustCompile(`Flags:[^;]*\baa\b`).MatchString(out) {
				t.Errorf("answer over %s is not authoritative:\n%s", name, out)
			}
			out = kdig(t, append(args, "nothere.example.net", "A")...)
			if status(out) != "NXDOMAIN" || !has(out, "example.net. 300 IN SOA ns1.example.net. hostmaster.example.net. 1 7200 3600 1209600 300") {
				t.Fatalf("nothere.example.net over %s: want NXDOMAIN with the SOA:\n%s", name, out)
			}
		})
	}
	// alknet dns query pins the node on DoQ, DoT and DoH; another
	// fingerprint gets no answer.
	other := strings.Repeat("ab", 32)
	for _, flag := range []string{"--doq", "--dot", "--doh"} {
		out := n.node.ok("", "dns", "query", "www.example.net", "A", n.srv.Addr, flag, "--peer", n.srv.FP)
		if !has(out, "www.example.net. 300 IN A 192.0.2.10") || !strings.Contains(out, "NOERROR") {
			t.Errorf("alknet dns query %s:\n%s", flag, out)
		}
		if out := n.node.fail("", "dns", "query", "www.example.net", "A", n.srv.Addr, flag, "--peer", "ed25519:"+other); strings.Contains(out, "192.0.2.10") {
			t.Errorf("alknet dns query %s with another pin got an answer:\n%s", flag, out)
		}
	}
	// Every record type of the zone, over DoQ.
	for _, c := range []struct{ name, typ, want string }{
		{"www.example.net", "AAAA", "www.example.net. 300 IN AAAA 2001:db8::10"},
		{"example.net", "MX", "example.net. 300 IN MX 10 mail.example.net."},
		{"example.net", "TXT", `example.net. 300 IN TXT "v=spf1 -all"`},
		{"example.net", "NS", "example.net. 300 IN NS ns1.example.net."},
		{"_sip._tcp.example.net", "SRV", "_sip._tcp.example.net. 300 IN SRV 10 5 5060 sip.example.net."},
		{"alias.example.net", "A", "www.example.net. 300 IN A 192.0.2.10"},
		{"example.net", "CAA", `example.net. 300 IN CAA 0 issue "letsencrypt.org"`},
		{"node.example.net", "A", "node.example.net. 300 IN A 192.0.2.50"},
		{"node.example.net", "AAAA", "node.example.net. 300 IN AAAA 2001:db8::50"},
		{"_alknet._udp.node.example.net", "SRV", "_alknet._udp.node.example.net. 300 IN SRV 0 0 4433 node.example.net."},
		{"_alknet._udp.node.example.net", "TXT", fmt.Sprintf(`_alknet._udp.node.example.net. 300 IN TXT "alknet=%s@node.example.net:4433"`, n.srv.FP)},
	} {
		out := kdig(t, append(tr["doq"], c.name, c.typ)...)
		if status(out) != "NOERROR" || !has(out, c.want) {
			t.Errorf("%s %s: want %q:\n%s", c.name, c.typ, c.want, out)
		}
	}
	if out := kdig(t, append(tr["doq"], "alias.example.net", "A")...); !has(out, "alias.example.net. 300 IN CNAME www.example.net.") {
		t.Errorf("alias: want the CNAME before the address:\n%s", out)
	}
	// NODATA: the name exists, the type does not.
	if out := kdig(t, append(tr["dot"], "www.example.net", "MX")...); status(out) != "NOERROR" || !has(out, "IN SOA ns1.example.net.") || !strings.Contains(out, "ANSWER: 0;") {
		t.Errorf("www MX: want NODATA with the SOA:\n%s", out)
	}
	// Not an open resolver.
	if out := kdig(t, append(tr["doq"], "example.com", "A")...); status(out) != "REFUSED" {
		t.Errorf("example.com over DoQ: want REFUSED:\n%s", out)
	}
	if out := kdig(t, append(classic["udp"], "example.com", "A")...); status(out) != "REFUSED" {
		t.Errorf("example.com over UDP: want REFUSED:\n%s", out)
	}
	// AXFR: refused to an anonymous client, on every transport kdig uses
	// for it.
	for _, name := range []string{"dot", "doq"} {
		cmd := exec.Command("kdig", append(append([]string{"+timeout=5", "+retry=0"}, tr[name]...), "example.net", "AXFR")...)
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), "REFUSED") || strings.Contains(string(out), "192.0.2.10") {
			t.Errorf("AXFR over %s: want REFUSED and no records:\n%s", name, out)
		}
	}
	// A DoH client that pins another key gets nothing.
	if out, err := exec.Command("kdig", append(append([]string{"+timeout=5", "+retry=0"}, tr["doh-wrong"]...), "www.example.net")...).CombinedOutput(); err == nil && has(string(out), "192.0.2.10") {
		t.Errorf("kdig with a wrong pin got an answer:\n%s", out)
	}

	// A changed zone file is served at once after SIGHUP.
	writeFile(t, n.zone, strings.Replace(dnsZone, "www      IN A     192.0.2.10", "www      IN A     192.0.2.99", 1), 0o600)
	// `alknet reload` returns once the plugin has read it.
	if r := n.node.run("", "reload"); r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("asked the running node (pid %d) to reload: applied", n.srv.cmd.Process.Pid)) {
		t.Fatalf("alknet reload: exit %d\n%s", r.code, r.stderr)
	}
	for _, name := range []string{"doq", "dot", "doh"} {
		if out := kdig(t, append(tr[name], "www.example.net", "A")...); !has(out, "www.example.net. 300 IN A 192.0.2.99") {
			t.Errorf("after the reload, over %s:\n%s", name, out)
		}
	}
	// A broken zone file on a reload leaves the running zone in place.
	// alknet reload says so, naming the plugin and the file, and fails.
	writeFile(t, n.zone, "this is not a zone\n", 0o600)
	if r := n.node.run("", "reload"); r.code != 1 || !strings.Contains(r.stderr, "reload: applied, except plugin dns refused its settings on this reload: ") || !strings.Contains(r.stderr, n.zone) {
		t.Fatalf("alknet reload with a broken zone file: exit %d\n%s", r.code, r.stderr)
	}
	if out := kdig(t, append(tr["doq"], "www.example.net", "A")...); !has(out, "www.example.net. 300 IN A 192.0.2.99") {
		t.Errorf("after a broken zone file, over DoQ:\n%s", out)
	}
	if strings.Contains(n.srv.logs.String(), "nothere.example.net") || strings.Contains(n.srv.logs.String(), "alias.example.net") {
		t.Errorf("the node logged a name a client looked up:\n%s", n.srv.logs)
	}
}

// The classic listener: an answer to an unverified (UDP) source is at
// most a small factor of the query's size (truncated otherwise, complete
// over TCP), and a burst of queries from one address is rate-limited.
func TestDNSClassicNoAmplification(t *testing.T) {
	classicPort := freePort(t)
	n := startDNSNode(t, "", fmt.Sprintf("[plugins.dns.classic]\nlisten = \"127.0.0.1:%d\"\nrate_limit = 20\nburst = 40\n", classicPort))
	addr := "127.0.0.1:" + strconv.Itoa(classicPort)
	q := new(dns.Msg)
	q.SetQuestion("big.example.net.", dns.TypeTXT)
	q.SetEdns0(4096, false)
	qb, _ := q.Pack()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(qb); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	k, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:k]); err != nil {
		t.Fatal(err)
	}
	if k > 3*len(qb) || !r.Truncated {
		t.Fatalf("UDP answer of %d bytes to a %d-byte query (truncated %v): want at most 3× and TC", k, len(qb), r.Truncated)
	}
	// Over TCP the whole answer comes.
	tcp := kdig(t, "@127.0.0.1", "-p", strconv.Itoa(classicPort), "+tcp", "big.example.net", "TXT")
	if c := strings.Count(spaces.ReplaceAllString(tcp, " "), " 300 IN TXT"); c != 30 {
		t.Fatalf("over TCP: %d TXT records, want 30:\n%s", c, tcp)
	}

	// A burst of 200 queries from one socket: at most the burst is
	// answered in full.
	q = new(dns.Msg)
	q.SetQuestion("www.example.net.", dns.TypeA)
	full, truncated := 0, 0
	for i := range 200 {
		q.Id = uint16(i + 1)
		b, _ := q.Pack()
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		k, err := conn.Read(buf)
		if err != nil {
			break // the node sent all it will: nothing for 2 s
		}
		var r dns.Msg
		if r.Unpack(buf[:k]) == nil {
			if r.Truncated {
				truncated++
			} else {
				full++
			}
		}
	}
	if full > 40+5 || full == 0 {
		t.Fatalf("a burst of 200 from one address: %d full answers (%d truncated); want about the burst of 40", full, truncated)
	}
	var st struct {
		Classic struct {
			RateLimited int64 `json:"rate_limited"`
		} `json:"classic"`
	}
	out := n.node.ok("", "call", "--peer", n.srv.FP, n.srv.Addr, "/dns/stats", "{}")
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Classic.RateLimited < 100 {
		t.Fatalf("dns/stats after the burst: %s (%v)", out, err)
	}
	t.Logf("burst of 200: %d full answers, %d truncated (slip), %d rate-limited", full, truncated, st.Classic.RateLimited)
}

// DoQ conformance (RFC 9250) with a Go QUIC client: one query per stream
// each answered then FIN; a malformed length or garbage resets only that
// stream; a message ID other than 0, or edns-tcp-keepalive, closes the
// connection with DOQ_PROTOCOL_ERROR (0x2). DoT pipelines queries on one
// connection.
func TestDNSDoQConformance(t *testing.T) {
	n := startDNSNode(t, "", "")
	dial := func() *quic.Conn {
		c, err := quic.DialAddr(tctx(t, 10*time.Second), n.srv.Addr,
			&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"doq"}}, &quic.Config{}) //nolint:gosec // a conformance test; the pin is checked by kdig above
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.CloseWithError(0, "") })
		return c
	}
	query := func(id uint16, keepalive bool) []byte {
		m := new(dns.Msg)
		m.SetQuestion("www.example.net.", dns.TypeA)
		m.Id = id
		if keepalive {
			o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
			o.SetUDPSize(1232)
			o.Option = append(o.Option, &dns.EDNS0_TCP_KEEPALIVE{Code: dns.EDNS0TCPKEEPALIVE})
			m.Extra = append(m.Extra, o)
		}
		b, _ := m.Pack()
		return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	ask := func(c *quic.Conn, raw []byte) ([]byte, error) {
		s, err := c.OpenStreamSync(tctx(t, 5*time.Second))
		if err != nil {
			return nil, err
		}
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Write(raw); err != nil {
			return nil, err
		}
		_ = s.Close()
		return io.ReadAll(s) // to the FIN
	}
	c := dial()
	for i := range 3 {
		b, err := ask(c, query(0, false))
		if err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		var m dns.Msg
		if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 || m.Unpack(b[2:]) != nil || m.Id != 0 || len(m.Answer) != 1 {
			t.Fatalf("query %d: want one length-prefixed answer with ID 0 then FIN, got %x", i, b)
		}
	}
	for name, raw := range map[string][]byte{
		"short length": {0, 3, 1, 2, 3},
		"garbage":      append([]byte{0, 40}, bytes.Repeat([]byte{0xff}, 40)...),
	} {
		_, err := ask(c, raw)
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != 0x2 {
			t.Fatalf("%s: want the stream reset with DOQ_PROTOCOL_ERROR, got %v", name, err)
		}
		if _, err := ask(c, query(0, false)); err != nil {
			t.Fatalf("after %s the connection should go on: %v", name, err)
		}
	}
	for name, raw := range map[string][]byte{"message ID 7": query(7, false), "edns-tcp-keepalive": query(0, true)} {
		c := dial()
		_, err := ask(c, raw)
		var ae *quic.ApplicationError
		if !errors.As(err, &ae) {
			<-c.Context().Done()
			err = context.Cause(c.Context())
		}
		if !errors.As(err, &ae) || ae.ErrorCode != 0x2 {
			t.Fatalf("%s: want the connection closed with DOQ_PROTOCOL_ERROR (0x2), got %v", name, err)
		}
	}

	// DoT: three queries written at once on one connection, three answers.
	tc, err := tls.Dial("tcp", n.srv.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"dot"}}) //nolint:gosec // as above
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	var batch []byte
	for id := uint16(1); id <= 3; id++ {
		batch = append(batch, query(id, false)...)
	}
	if _, err := tc.Write(batch); err != nil {
		t.Fatal(err)
	}
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	seen := map[uint16]bool{}
	for range 3 {
		var hdr [2]byte
		if _, err := io.ReadFull(tc, hdr[:]); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(tc, b); err != nil {
			t.Fatal(err)
		}
		var m dns.Msg
		if err := m.Unpack(b); err != nil || len(m.Answer) != 1 {
			t.Fatalf("DoT answer: %v %v", err, m)
		}
		seen[m.Id] = true
	}
	if len(seen) != 3 {
		t.Fatalf("DoT pipelining: answers for %v, want ids 1, 2, 3", seen)
	}
}

// A node publishes its signed record set; the node it replicates to
// answers for it over DoQ (kdig); a packet signed by another key, older
// than the stored one, or oversized is refused, and not replicated.
func TestDNSSignedRecordsReplicate(t *testing.T) {
	b := startDNSNode(t, "signed_zone = \"keys.example.net.\"", "")
	// A lists B as its peer; B grants A dns:publish.
	aCLI := newCLI(t, nil)
	aCLI.ok("", "init", "--show-mnemonic-once")
	var aID struct {
		Fingerprint string `json:"fingerprint"`
	}
	decodeJSON(t, "id --json", aCLI.ok("", "id", "--json"), &aID)
	writeFile(t, b.config, strings.Replace(readFile(t, b.config), "[plugins.dns]\n",
		fmt.Sprintf("[[auth.peers]]\npeer_id = \"node-a\"\nfingerprints = [%q]\nscopes = [\"dns:publish\"]\n\n[plugins.dns]\n", aID.Fingerprint), 1), 0o600)
	_ = b.srv.cmd.Process.Signal(syscall.SIGHUP)
	b.srv.waitLog("configuration reloaded")
	a := &dnsNode{t: t, node: aCLI}
	dir := t.TempDir()
	a.zone = writeFile(t, filepath.Join(dir, "example.net.zone"), dnsZone, 0o600)
	a.config = writeFile(t, filepath.Join(dir, "alknet.toml"), fmt.Sprintf(
		"[plugins.dns]\nsigned_zone = \"keys.example.net.\"\npeers = [%q]\n\n[[plugins.dns.zones]]\norigin = \"example.net.\"\nfile = %q\n",
		b.srv.FP+"@"+b.srv.Addr, a.zone), 0o600)
	a.srv = startServe(t, aCLI, "--config", a.config)
	a.srv.waitLog("dns configured")

	// `alknet dns publish` beside node A signs with A's key.
	out := aCLI.ok("", "dns", "publish", "--json", "--peer", a.srv.FP, a.srv.Addr,
		"@ 300 IN A 192.0.2.77", `_alknet._udp 300 IN TXT "alknet=`+a.srv.FP+"@"+a.srv.Addr+`"`)
	var pub struct {
		Name      string `json:"name"`
		Timestamp uint64 `json:"timestamp"`
		Stored    bool   `json:"stored"`
		Peers     []struct {
			Peer   string `json:"peer"`
			Result string `json:"result"`
			Error  string `json:"error"`
		} `json:"peers"`
	}
	decodeJSON(t, "dns publish --json", out, &pub)
	if !pub.Stored || len(pub.Peers) != 1 || pub.Peers[0].Result != "ok stored" {
		t.Fatalf("dns publish: %s", out)
	}
	key := strings.TrimSuffix(pub.Name, ".keys.example.net.")
	if raw, err := pkarr.DecodeZBase32(key); err != nil || len(raw) != 32 {
		t.Fatalf("published name %q: the first label is not a z-base-32 key: %v", pub.Name, err)
	}
	tr := b.transports()
	if out := kdig(t, append(tr["doq"], pub.Name, "A")...); !has(out, pub.Name+" 300 IN A 192.0.2.77") {
		t.Fatalf("node B over DoQ, %s A:\n%s", pub.Name, out)
	}
	if out := kdig(t, append(tr["dot"], "_alknet._udp."+pub.Name, "TXT")...); !has(out, `"alknet=`+a.srv.FP+"@"+a.srv.Addr+`"`) {
		t.Fatalf("node B over DoT, the dial record:\n%s", out)
	}
	if out := kdig(t, append(tr["doq"], "yb"+key[2:]+".keys.example.net", "A")...); status(out) != "NXDOMAIN" {
		t.Fatalf("an unknown key: want NXDOMAIN:\n%s", out)
	}

	// Refusals, through dns/publish on A as its operator.
	op := operatorConn(t, a.srv)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	msg := func(ip string) *dns.Msg {
		m := new(dns.Msg)
		m.Response = true
		rr, _ := dns.NewRR(pkarr.EncodeZBase32(priv.Public().(ed25519.PublicKey)) + ". 300 IN A " + ip)
		m.Answer = append(m.Answer, rr)
		return m
	}
	publish := func(packet []byte) (json.RawMessage, error) {
		return op.Call(tctx(t, 20*time.Second), "dns/publish", map[string]string{"packet": base64.StdEncoding.EncodeToString(packet)})
	}
	now := uint64(time.Now().UnixMicro())
	good, err := pkarr.Sign(priv, now, msg("192.0.2.5"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish(good.Bytes()); err != nil {
		t.Fatalf("a good packet: %v", err)
	}
	older, _ := pkarr.Sign(priv, now-1000, msg("192.0.2.6"))
	forged := good.Bytes()
	copy(forged[:32], other.Public().(ed25519.PublicKey)) // another key, the first key's signature
	wire, _ := msg("192.0.2.8").Pack()
	big := append(wire, make([]byte, 1001-len(wire))...)
	ts := binary.BigEndian.AppendUint64(nil, now+5)
	sig := ed25519.Sign(priv, pkarr.Signable(now+5, big))
	oversized := append(append(append([]byte(priv.Public().(ed25519.PublicKey)), sig...), ts...), big...)
	for name, c := range map[string]struct {
		packet []byte
		want   string
	}{
		"another key's signature": {forged, "signature"},
		"older":                   {older.Bytes(), "older"},
		"oversized":               {oversized, "1000"},
	} {
		_, err := publish(c.packet)
		var ce *call.Error
		// The Go client reads a declared code it does not know as
		// INTERNAL and keeps the code in the details.
		if !asCallError(err, &ce) || !strings.Contains(fmt.Sprint(ce.Details), "PACKET_REFUSED") || !strings.Contains(ce.Message, c.want) {
			t.Errorf("%s: want PACKET_REFUSED naming %q, got %v", name, c.want, err)
		}
	}
	name := pkarr.EncodeZBase32(priv.Public().(ed25519.PublicKey)) + ".keys.example.net"
	if out := kdig(t, append(tr["doq"], name, "A")...); !has(out, "192.0.2.5") || has(out, "192.0.2.6") || has(out, "192.0.2.8") {
		t.Fatalf("node B serves only the good packet:\n%s", out)
	}
	var st struct {
		PublishRefused int64 `json:"publish_refused"`
		Replicated     int64 `json:"replicated"`
	}
	if err := json.Unmarshal([]byte(aCLI.ok("", "call", "--peer", a.srv.FP, a.srv.Addr, "/dns/stats", "{}")), &st); err != nil {
		t.Fatal(err)
	}
	if st.PublishRefused != 3 || st.Replicated != 2 {
		t.Fatalf("node A's dns/stats: %+v, want 3 refused and 2 replicated", st)
	}
}

// Clients that stall hold nothing for long (D14): a DoT connection that
// sends half a length, or nothing at all, is closed; DoQ streams that
// send a byte and stop are reset, each alone, and the connection goes on
// answering.
func TestDNSStalledClientsAreClosed(t *testing.T) {
	n := startDNSNode(t, "read_timeout = \"300ms\"\nidle_timeout = \"1s\"\nmax_queries_per_connection = 8", "")
	dot := func() *tls.Conn {
		c, err := tls.Dial("tcp", n.srv.Addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"dot"}}) //nolint:gosec // bounds, not identity
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// closed waits for the node to close c (the 10 s deadline only bounds
	// a failing test).
	closed := func(what string, c *tls.Conn) {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeoutErr(err) {
			t.Fatalf("%s: the node kept the connection open (%v)", what, err)
		}
	}
	half := dot()
	if _, err := half.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	closed("DoT with half a length", half)
	closed("DoT with no query", dot())

	c, err := quic.DialAddr(tctx(t, 10*time.Second), n.srv.Addr,
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"doq"}}, &quic.Config{}) //nolint:gosec // as above
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	// More stalled streams than the connection answers at once: all are
	// reset, none waits for another's deadline forever.
	var streams []*quic.Stream
	for range 20 {
		s, err := c.OpenStreamSync(tctx(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte{0}); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	for i, s := range streams {
		_ = s.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadAll(s)
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != 0x2 {
			t.Fatalf("stalled stream %d: want a reset with DOQ_PROTOCOL_ERROR, got %v", i, err)
		}
	}
	s, err := c.OpenStreamSync(tctx(t, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("www.example.net.", dns.TypeA)
	m.Id = 0
	b, _ := m.Pack()
	_, _ = s.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
	_ = s.Close()
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	if out, err := io.ReadAll(s); err != nil || len(out) < 14 {
		t.Fatalf("a query after the stalled streams: %x %v", out, err)
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A zone larger than one DNS message transfers whole to an identity the
// zone allows: kdig over DoT with its client certificate, and a DoQ
// client, get every record in several messages, the SOA first and last.
func TestDNSTransferOfALargeZone(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "xfr"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := writeFile(t, filepath.Join(dir, "xfr.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o600)
	keyFile := writeFile(t, filepath.Join(dir, "xfr.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), 0o600)
	sum := sha256.Sum256(der)
	fp := "SHA256:" + hex.EncodeToString(sum[:])

	var zone strings.Builder
	zone.WriteString("$ORIGIN big.example.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n@ IN NS ns1\n")
	const txts = 3000
	for i := range txts {
		fmt.Fprintf(&zone, "t%04d IN TXT \"%s\"\n", i, strings.Repeat("x", 60))
	}
	zoneFile := writeFile(t, filepath.Join(dir, "big.example.zone"), zone.String(), 0o600)
	client := newCLI(t, nil) // alknet dns query, as the same identity
	client.ok("", "init", "--show-mnemonic-once")
	clientFP := strings.TrimSpace(client.ok("", "id"))
	n := startDNSNode(t, "", fmt.Sprintf("[[plugins.dns.zones]]\norigin = \"big.example.\"\nfile = %q\nallow_transfer = [\"xfr\"]\n\n[[auth.peers]]\npeer_id = \"xfr\"\nfingerprints = [%q, %q]\n", zoneFile, fp, clientFP))
	const records = txts + 3 // the SOA twice and the NS

	for _, tr := range []string{"--doq", "--dot"} {
		out := client.ok("", "dns", "query", tr, "--peer", n.srv.FP, "big.example", "AXFR", n.srv.Addr)
		if got := strings.Count(out, "\tTXT\t"); got != txts || strings.Count(out, "\tSOA\t") != 2 {
			t.Errorf("alknet dns query %s AXFR: %d TXT records, want %d, and the SOA twice:\n%s", tr, got, txts, out[:min(len(out), 600)])
		}
	}

	out := kdig(t, "@127.0.0.1", "-p", n.port, "+tls", "+tls-pin="+n.pin, "+tls-certfile="+certFile, "+tls-keyfile="+keyFile, "big.example", "AXFR")
	m := regexp.MustCompile(`\((\d+) messages, (\d+) records\)`).FindStringSubmatch(out)
	if m == nil || m[2] != strconv.Itoa(records) {
		t.Fatalf("kdig AXFR over DoT: want %d records:\n%s", records, out[max(0, len(out)-600):])
	}
	if msgs, _ := strconv.Atoi(m[1]); msgs < 3 {
		t.Errorf("kdig AXFR over DoT: %s messages for a zone of ~200 KB", m[1])
	}

	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := quic.DialAddr(tctx(t, 10*time.Second), n.srv.Addr,
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"doq"}, Certificates: []tls.Certificate{cert}}, &quic.Config{}) //nolint:gosec // the pin is checked by kdig above
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	s, err := c.OpenStreamSync(tctx(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	q := new(dns.Msg)
	q.SetQuestion("big.example.", dns.TypeAXFR)
	q.Id = 0
	b, _ := q.Pack()
	if _, err := s.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	wire, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("AXFR over DoQ: %v", err)
	}
	var got []dns.RR
	msgs := 0
	for len(wire) >= 2 {
		l := int(binary.BigEndian.Uint16(wire))
		var part dns.Msg
		if len(wire) < 2+l || part.Unpack(wire[2:2+l]) != nil || part.Rcode != dns.RcodeSuccess {
			t.Fatalf("AXFR over DoQ: message %d does not parse or is not NOERROR", msgs)
		}
		got = append(got, part.Answer...)
		wire = wire[2+l:]
		msgs++
	}
	if len(wire) != 0 || msgs < 3 || len(got) != records || got[0].Header().Rrtype != dns.TypeSOA || got[len(got)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("AXFR over DoQ: %d messages, %d records, %d bytes left (want several, %d records, SOA first and last)", msgs, len(got), len(wire), records)
	}
}

// `alknet dns query --doh` with a bearer token asks as the token's
// identity: a zone transfer the zone allows that identity is answered,
// the same query without the token is refused.
func TestDNSQueryOverHTTPSWithAToken(t *testing.T) {
	n := startDNSNode(t, "", "")
	tokenFile := writeFile(t, filepath.Join(t.TempDir(), "xfr.token"), base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a, 0xa5, 0x3c}, 8))+"\n", 0o600)
	r := n.node.run("", "peers", "add", "xfr", "--token-file", tokenFile)
	if r.code != 0 || !strings.Contains(r.stderr, "to reload: applied") {
		t.Fatalf("peers add xfr: exit %d\n%s", r.code, r.stderr)
	}
	client := newCLI(t, nil)
	args := []string{"dns", "query", "--doh", "--peer", n.srv.FP, "example.net", "AXFR", n.srv.Addr}
	if out := client.ok("", append(args, "--token-file", tokenFile)...); !strings.Contains(out, ";; status: NOERROR") || strings.Count(out, "\tSOA\t") != 2 || !strings.Contains(out, "192.0.2.10") {
		t.Errorf("AXFR over DoH with the token of an allowed identity:\n%s", out)
	}
	if out := client.ok("", args...); !strings.Contains(out, ";; status: REFUSED") || strings.Contains(out, "192.0.2.10") {
		t.Errorf("AXFR over DoH without a token:\n%s", out)
	}
	if r := client.run("", "dns", "query", "--dot", "--token-file", tokenFile, "--peer", n.srv.FP, "example.net", n.srv.Addr); r.code == 0 || !strings.Contains(r.stderr, "are for --doh") {
		t.Errorf("a token with --dot: exit %d\n%s", r.code, r.stderr)
	}
}
