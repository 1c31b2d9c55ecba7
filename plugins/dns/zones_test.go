package dnsplugin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"alknet.dev/alknet/plugins/sdk"
)

const testZone = `$TTL 300
@        IN SOA   ns1 hostmaster 1 7200 3600 1209600 60
@        IN NS    ns1
ns1      IN A     192.0.2.1
www      IN A     192.0.2.10
alias    IN CNAME www
loop1    IN CNAME loop2
loop2    IN CNAME loop1
out      IN CNAME www.example.com.
*.wild   IN A     192.0.2.42
a.b.deep IN A     192.0.2.43
sub      IN NS    ns.sub
ns.sub   IN A     192.0.2.53
`

// testPlugin is a configured plugin without a node.
func testPlugin(t *testing.T, settings string) *Plugin {
	t.Helper()
	cfg, err := parseSettings(json.RawMessage(settings), "ed25519:"+strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	p := &Plugin{}
	p.signed, _ = openSignedStore("", cfg.maxSigned)
	p.cfg.Store(cfg)
	return p
}

func ask(p *Plugin, name string, qtype uint16, id *sdk.Identity) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	return p.answer(context.Background(), q, source{transport: "doq", identity: id})
}

func zoneSettings() string {
	b, _ := json.Marshal(map[string]any{"zones": []map[string]any{{"origin": "Example.NET", "records": strings.Split(testZone, "\n"), "allow_transfer": []string{"xfr"}}}})
	return string(b)
}

func TestZoneLookup(t *testing.T) {
	p := testPlugin(t, zoneSettings())
	for _, c := range []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string // records, in order
		soa    bool     // SOA in the authority section
		aa     bool
	}{
		{"www.example.net.", dns.TypeA, dns.RcodeSuccess, []string{"www.example.net.\t300\tIN\tA\t192.0.2.10"}, false, true},
		{"WWW.Example.Net.", dns.TypeA, dns.RcodeSuccess, []string{"www.example.net.\t300\tIN\tA\t192.0.2.10"}, false, true},
		{"www.example.net.", dns.TypeMX, dns.RcodeSuccess, nil, true, true},   // NODATA
		{"nope.example.net.", dns.TypeA, dns.RcodeNameError, nil, true, true}, // NXDOMAIN
		{"b.deep.example.net.", dns.TypeA, dns.RcodeSuccess, nil, true, true}, // empty non-terminal
		{"alias.example.net.", dns.TypeA, dns.RcodeSuccess, []string{"alias.example.net.\t300\tIN\tCNAME\twww.example.net.", "www.example.net.\t300\tIN\tA\t192.0.2.10"}, false, true},
		{"alias.example.net.", dns.TypeCNAME, dns.RcodeSuccess, []string{"alias.example.net.\t300\tIN\tCNAME\twww.example.net."}, false, true},
		{"out.example.net.", dns.TypeA, dns.RcodeSuccess, []string{"out.example.net.\t300\tIN\tCNAME\twww.example.com."}, false, true},
		{"x.wild.example.net.", dns.TypeA, dns.RcodeSuccess, []string{"x.wild.example.net.\t300\tIN\tA\t192.0.2.42"}, false, true},
		{"www.example.org.", dns.TypeA, dns.RcodeRefused, nil, false, false},
		{"example.net.", dns.TypeAXFR, dns.RcodeRefused, nil, false, false}, // anonymous
	} {
		m := ask(p, c.name, c.qtype, nil)
		var got []string
		for _, rr := range m.Answer {
			got = append(got, rr.String())
		}
		soa := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
		if m.Rcode != c.rcode || strings.Join(got, "|") != strings.Join(c.answer, "|") || soa != c.soa || m.Authoritative != c.aa {
			t.Errorf("%s %s: rcode %s aa %v answer %q ns %v; want %s aa %v %q soa %v", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[m.Rcode], m.Authoritative, got, m.Ns,
				dns.RcodeToString[c.rcode], c.aa, c.answer, c.soa)
		}
		if soa && m.Ns[0].Header().Ttl != 60 {
			t.Errorf("%s: negative answer's SOA TTL %d, want the minimum 60", c.name, m.Ns[0].Header().Ttl)
		}
	}
	// A CNAME loop ends.
	if m := ask(p, "loop1.example.net.", dns.TypeA, nil); len(m.Answer) > maxCNAMEChain {
		t.Errorf("CNAME loop: %d records", len(m.Answer))
	}
	// A referral below the delegation.
	m := ask(p, "host.sub.example.net.", dns.TypeA, nil)
	if m.Authoritative || len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != dns.TypeNS {
		t.Errorf("below a delegation: want a referral, got %v", m)
	}
	// AXFR for the allowed identity, refused over UDP even to it.
	xfr := &sdk.Identity{ID: "xfr"}
	m = ask(p, "example.net.", dns.TypeAXFR, xfr)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) < 3 || m.Answer[0].Header().Rrtype != dns.TypeSOA || m.Answer[len(m.Answer)-1].Header().Rrtype != dns.TypeSOA {
		t.Errorf("AXFR for xfr: %v", m)
	}
	q := new(dns.Msg)
	q.SetQuestion("example.net.", dns.TypeAXFR)
	if m := p.answer(context.Background(), q, source{transport: "udp", identity: xfr}); m.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR over UDP: %s", dns.RcodeToString[m.Rcode])
	}
	// Not a query, two questions, another class.
	q = new(dns.Msg)
	q.SetQuestion("www.example.net.", dns.TypeA)
	q.Opcode = dns.OpcodeUpdate
	if m := p.answer(context.Background(), q, source{}); m.Rcode != dns.RcodeNotImplemented {
		t.Errorf("UPDATE: %s", dns.RcodeToString[m.Rcode])
	}
	q = new(dns.Msg)
	q.SetQuestion("www.example.net.", dns.TypeA)
	q.Question = append(q.Question, q.Question[0])
	if m := p.answer(context.Background(), q, source{}); m.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s", dns.RcodeToString[m.Rcode])
	}
	q = new(dns.Msg)
	q.SetQuestion("www.example.net.", dns.TypeA)
	q.Question[0].Qclass = dns.ClassCHAOS
	if m := p.answer(context.Background(), q, source{}); m.Rcode != dns.RcodeRefused {
		t.Errorf("class CH: %s", dns.RcodeToString[m.Rcode])
	}
}

func TestSettingsRefused(t *testing.T) {
	for settings, want := range map[string]string{
		`{"zones":[{"origin":"example.net."}]}`:                                               "neither file nor records",
		`{"zones":[{"origin":"example.net.","records":["www IN A 192.0.2.1"]}]}`:              "no SOA",
		`{"zones":[{"origin":"example.net.","records":["www.example.org. IN A 192.0.2.1"]}]}`: "outside the zone",
		`{"zones":[{"origin":"example.net.","file":"/nonexistent/zone"}]}`:                    "no such file",
		`{"signed_zone":"keys.example.org."}`:                                                 "in none of the zones",
		`{"peers":["x@127.0.0.1:1"]}`:                                                         "signed_zone is not",
		`{"read_timeout":"soon"}`:                                                             "read_timeout",
		`{"zone":[]}`:                                                                         "unknown field",
		`{"node":{"name":"node.example.org."}}`:                                               "in none of the zones",
	} {
		_, err := parseSettings(json.RawMessage(settings), "")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want an error naming %q, got %v", settings, want, err)
		}
	}
}

// Names outside the zones are forwarded only for dns:recurse: anyone else
// gets REFUSED and the upstream never hears of the query (no open
// resolver); names in the zones are never forwarded.
func TestForwardOnlyForRecurse(t *testing.T) {
	var asked atomic.Int64
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		asked.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 198.51.100.7")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	var s map[string]any
	_ = json.Unmarshal([]byte(zoneSettings()), &s)
	s["forward"] = map[string]any{"upstreams": []string{"udp://" + pc.LocalAddr().String()}}
	b, _ := json.Marshal(s)
	p := testPlugin(t, string(b))
	f, err := newForwarder(hclog.NewNullLogger(), p.cfg.Load().forward)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	p.fwd.Store(f)

	for _, id := range []*sdk.Identity{nil, {ID: "peer", Scopes: []string{ScopePublish}}} {
		if m := ask(p, "www.example.org.", dns.TypeA, id); m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Errorf("%s asked for a name outside the zones: %s %v", idOf(id), dns.RcodeToString[m.Rcode], m.Answer)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Fatalf("the upstream was asked %d times for callers without dns:recurse", n)
	}
	recurse := &sdk.Identity{ID: "resolver", Scopes: []string{ScopeRecurse}}
	m := ask(p, "www.example.org.", dns.TypeA, recurse)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || !strings.Contains(m.Answer[0].String(), "198.51.100.7") || asked.Load() != 1 {
		t.Fatalf("dns:recurse: %v (upstream asked %d times)", m, asked.Load())
	}
	if m := ask(p, "www.example.net.", dns.TypeA, recurse); !m.Authoritative || asked.Load() != 1 {
		t.Fatalf("a name in the zones went upstream: %v", m)
	}
}

// A zone larger than one DNS message transfers as several on the stream
// transports, each under 64 KiB with its own length, the SOA first and
// last, every record once.
func TestTransferOfALargeZoneSpansMessages(t *testing.T) {
	records := strings.Split(testZone, "\n")
	for i := range 3000 {
		records = append(records, fmt.Sprintf("t%04d IN TXT %q", i, strings.Repeat("x", 60)))
	}
	b, _ := json.Marshal(map[string]any{"zones": []map[string]any{{"origin": "example.net.", "records": records, "allow_transfer": []string{"xfr"}}}})
	p := testPlugin(t, string(b))
	m := ask(p, "example.net.", dns.TypeAXFR, &sdk.Identity{ID: "xfr"})
	want := len(m.Answer)
	if want < 3000 {
		t.Fatalf("AXFR answered %d records", want)
	}
	wire, err := packLengthPrefixed(m)
	if err != nil {
		t.Fatalf("pack the transfer: %v", err)
	}
	var got []dns.RR
	msgs := 0
	for len(wire) > 0 {
		n := int(binary.BigEndian.Uint16(wire))
		part := new(dns.Msg)
		if err := part.Unpack(wire[2 : 2+n]); err != nil {
			t.Fatalf("message %d: %v", msgs, err)
		}
		if part.Id != m.Id || part.Rcode != dns.RcodeSuccess || len(part.Question) != 1 {
			t.Fatalf("message %d: header %v", msgs, part.MsgHdr)
		}
		got = append(got, part.Answer...)
		wire = wire[2+n:]
		msgs++
	}
	if msgs < 3 || len(got) != want || got[0].Header().Rrtype != dns.TypeSOA || got[len(got)-1].Header().Rrtype != dns.TypeSOA {
		t.Fatalf("%d messages with %d records (want several with %d, SOA first and last)", msgs, len(got), want)
	}
	for i := range got {
		if got[i].String() != m.Answer[i].String() {
			t.Fatalf("record %d: %s, want %s", i, got[i], m.Answer[i])
		}
	}
	// A small transfer stays one message.
	small := ask(testPlugin(t, zoneSettings()), "example.net.", dns.TypeAXFR, &sdk.Identity{ID: "xfr"})
	if parts := splitTransfer(small, maxMessage); len(parts) != 1 {
		t.Errorf("a small zone took %d messages", len(parts))
	}
}
