package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/endpoint"
)

func TestParseDNSQueryArgs(t *testing.T) {
	for _, c := range []struct {
		args   []string
		name   string
		qtype  uint16
		target string
	}{
		{[]string{"example.com", "node.example"}, "example.com.", dns.TypeA, "node.example"},
		{[]string{"example.com.", "mx", "node.example:4433"}, "example.com.", dns.TypeMX, "node.example:4433"},
		{[]string{"example.com", "AAAA", "ed25519:ab@node"}, "example.com.", dns.TypeAAAA, "ed25519:ab@node"},
		{[]string{"_sip._udp.example.com", "SRV", "[::1]:5353"}, "_sip._udp.example.com.", dns.TypeSRV, "[::1]:5353"},
		{[]string{"example.com", "TYPE65", "node"}, "example.com.", dns.TypeHTTPS, "node"},
		{[]string{"example.com", "type65534", "node"}, "example.com.", 65534, "node"},
		{[]string{".", "NS", "node"}, ".", dns.TypeNS, "node"},
	} {
		name, qtype, target, err := parseDNSQueryArgs(c.args)
		if err != nil || name != c.name || qtype != c.qtype || target != c.target {
			t.Errorf("%q: %q %d %q %v, want %q %d %q", c.args, name, qtype, target, err, c.name, c.qtype, c.target)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"example.com", "BOGUS", "node"}, `"BOGUS" is not a DNS record type`},
		{[]string{"example.com", "TYPE0", "node"}, "not a DNS record type"},
		{[]string{"example.com", "TYPE70000", "node"}, "not a DNS record type"},
		{[]string{"", "node"}, "not a domain name"},
		{[]string{"a..b", "node"}, "not a domain name"},
		{[]string{"node"}, "got 1 arguments"},
	} {
		if _, _, _, err := parseDNSQueryArgs(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

func TestDNSQuestionIDs(t *testing.T) {
	for transport, zero := range map[string]bool{dnsDoQ: true, dnsDoH: true, dnsDoT: false, dnsUDP: false, dnsTCP: false} {
		var ids []uint16
		for range 4 {
			q := dnsQuestion("example.com.", dns.TypeA, transport)
			if !q.RecursionDesired || q.IsEdns0() == nil || len(q.Question) != 1 {
				t.Fatalf("%s: %v", transport, q)
			}
			ids = append(ids, q.Id)
		}
		allZero := ids[0] == 0 && ids[1] == 0 && ids[2] == 0 && ids[3] == 0
		if allZero != zero {
			t.Errorf("%s: ids %v, want zero: %v", transport, ids, zero)
		}
	}
}

func TestDNSAddresses(t *testing.T) {
	const fp = "ed25519:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	var f dialFlags
	if addr, err := f.node(fp + "@node.example"); err != nil || addr != "node.example:4433" || f.o.Peer != fp {
		t.Fatalf("FINGERPRINT@HOST: %q %q %v", addr, f.o.Peer, err)
	}
	f = dialFlags{}
	f.o.Peer = "ed25519:" + strings.Repeat("ff", 32)
	if _, err := f.node(fp + "@node.example"); err == nil || !strings.Contains(err.Error(), "--peer says") {
		t.Fatalf("a fingerprint --peer contradicts: %v", err)
	}
	f = dialFlags{}
	if addr, err := f.node("[::1]:5000"); err != nil || addr != "[::1]:5000" || f.o.Peer != "" {
		t.Fatalf("HOST:PORT: %q %q %v", addr, f.o.Peer, err)
	}
	if addr, err := plainDNSAddr("127.0.0.1:5353", dnsUDP); err != nil || addr != "127.0.0.1:5353" {
		t.Fatalf("--udp HOST:PORT: %q %v", addr, err)
	}
	for arg, want := range map[string]string{
		"127.0.0.1":             "needs HOST:PORT",
		"node.example":          "needs HOST:PORT",
		"node.example:0":        "must be a number",
		fp + "@127.0.0.1:5353":  "no fingerprint to pin",
		"::1:53":                "needs HOST:PORT",
		"node.example:dns-port": "must be a number",
	} {
		if _, err := plainDNSAddr(arg, dnsTCP); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--tcp %q: %v, want an error containing %q", arg, err, want)
		}
	}
}

// testAnswer is the answer of the formatting tests: NXDOMAIN with a SOA,
// or NOERROR with two A records.
func testAnswer(t *testing.T, nx bool) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("example.com.", dns.TypeA)
	m := new(dns.Msg)
	m.SetReply(q)
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if nx {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{rr("example.com. 3600 IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 120")}
	} else {
		m.Answer = []dns.RR{rr("example.com. 300 IN A 192.0.2.1"), rr("example.com. 300 IN A 192.0.2.2")}
	}
	return m
}

func TestDNSAnswerOutput(t *testing.T) {
	var b bytes.Buffer
	if err := writeDNSAnswer(&b, testAnswer(t, false)); err != nil {
		t.Fatal(err)
	}
	want := ";; status: NOERROR\nexample.com.\t300\tIN\tA\t192.0.2.1\nexample.com.\t300\tIN\tA\t192.0.2.2\n"
	if b.String() != want {
		t.Errorf("NOERROR:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	if err := writeDNSAnswer(&b, testAnswer(t, true)); err != nil {
		t.Fatal(err)
	}
	want = ";; status: NXDOMAIN\n;; AUTHORITY SECTION:\nexample.com.\t3600\tIN\tSOA\tns.example.com. admin.example.com. 1 3600 600 86400 120\n"
	if b.String() != want {
		t.Errorf("NXDOMAIN:\n%q\nwant\n%q", b.String(), want)
	}
	for nx, want := range map[bool]string{
		false: `{"status":"NOERROR","answer":["example.com.\t300\tIN\tA\t192.0.2.1","example.com.\t300\tIN\tA\t192.0.2.2"],"authority":[]}`,
		true:  `{"status":"NXDOMAIN","answer":[],"authority":["example.com.\t3600\tIN\tSOA\tns.example.com. admin.example.com. 1 3600 600 86400 120"]}`,
	} {
		got, _ := json.Marshal(dnsAnswerJSON(testAnswer(t, nx)))
		if string(got) != want {
			t.Errorf("JSON:\n%s\nwant\n%s", got, want)
		}
	}
	m := testAnswer(t, false)
	m.Rcode = 3841 // not a name miekg/dns knows
	if s := dnsStatus(m); s != "RCODE3841" {
		t.Errorf("an unknown rcode: %q", s)
	}
}

// TestDNSStreamExchange is the DoQ framing: a 2-byte length and the query,
// the sending side closed, the answer framed the same way.
func TestDNSStreamExchange(t *testing.T) {
	client, server := endpoint.Pipe("doq")
	defer client.CloseWithError(endpoint.CodeNormal, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answer := testAnswer(t, false)
	done := make(chan error, 1)
	go func() {
		s, err := server.AcceptStream(ctx)
		if err != nil {
			done <- err
			return
		}
		defer s.Close()
		all, err := io.ReadAll(s) // to the end: the client closed its side
		if err != nil || len(all) < 2 || int(binary.BigEndian.Uint16(all)) != len(all)-2 {
			done <- io.ErrUnexpectedEOF
			return
		}
		var q dns.Msg
		if err := q.Unpack(all[2:]); err != nil {
			done <- err
			return
		}
		answer.Id = q.Id
		wire, _ := answer.Pack()
		_, err = s.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(wire))), wire...))
		done <- err
	}()
	s, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wire, _ := dnsQuestion("example.com.", dns.TypeA, dnsDoQ).Pack()
	got, err := streamExchange(ctx, s, wire, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	var m dns.Msg
	if err := m.Unpack(got); err != nil || m.Id != 0 || len(m.Answer) != 2 {
		t.Fatalf("answer %v %v", &m, err)
	}
}

// TestDoHExchange runs the DoH client on a TLS connection that negotiated
// h2, as the node's TCP+TLS listener hands it: the request is an HTTPS
// POST of the query.
func TestDoHExchange(t *testing.T) {
	answer := testAnswer(t, true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Method != http.MethodPost || r.URL.Path != "/dns-query" || r.TLS == nil ||
			r.Header.Get("Content-Type") != "application/dns-message" || r.Header.Get("Accept") != "application/dns-message" {
			http.Error(w, "unexpected request "+r.Method+" "+r.URL.String()+" "+r.Proto, http.StatusTeapot)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var q dns.Msg
		if err := q.Unpack(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if q.Question[0].Name == "missing.example." {
			http.Error(w, "no DNS service on this node", http.StatusNotFound)
			return
		}
		if want := map[string]string{"token.example.": "Bearer alk_t0ken"}[q.Question[0].Name]; r.Header.Get("Authorization") != want {
			http.Error(w, "Authorization: "+r.Header.Get("Authorization"), http.StatusUnauthorized)
			return
		}
		answer.Id = q.Id
		wire, _ := answer.Pack()
		w.Header().Set("Content-Type", "application/dns-message")
		w.Header().Set("Cache-Control", "max-age=120")
		_, _ = w.Write(wire)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	ask := func(name string, token ...string) ([]byte, error) {
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Fatalf("ALPN %q", p)
		}
		conn := endpoint.WrapStreamConn(tc, "h2", auth.TransportTCPTLS)
		defer conn.CloseWithError(endpoint.CodeNormal, "")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := conn.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wire, _ := dnsQuestion(name, dns.TypeA, dnsDoH).Pack()
		return dohExchange(ctx, conn, s, addr, wire, strings.Join(token, ""))
	}
	got, err := ask("example.com.")
	var m dns.Msg
	if err != nil || m.Unpack(got) != nil || m.Rcode != dns.RcodeNameError || m.Id != 0 {
		t.Fatalf("answer %v %v", &m, err)
	}
	if _, err := ask("missing.example."); err == nil || !strings.Contains(err.Error(), "404 Not Found: no DNS service on this node") {
		t.Fatalf("a 404: %v", err)
	}
	// A token goes as the request's bearer credential, and only when given.
	if _, err := ask("token.example.", "alk_t0ken"); err != nil {
		t.Fatalf("with a token: %v", err)
	}
	if _, err := ask("token.example."); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("the server saw a token that was not given: %v", err)
	}
	var _ net.Conn = &streamNetConn{}
}
