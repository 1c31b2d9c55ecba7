package pkarr

import (
	"crypto/ed25519"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestRecords(t *testing.T) {
	priv := testKey(9)
	key := EncodeZBase32(priv.Public().(ed25519.PublicKey))
	a := func(name string) dns.RR {
		return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)}
	}
	m := new(dns.Msg)
	m.Response = true
	m.Answer = []dns.RR{
		a(key + "."),                           // the apex, as pkarr stores it
		a("_foo." + key + "."),                 // "_foo", as pkarr stores it
		a("a.b." + strings.ToUpper(key) + "."), // the key in upper case
		a("_bar."),                             // not normalised: relative
		a("@."),                                // "@": the apex
		a("."),                                 // the root: the apex
		a("x.@."),                              // "@" as the last label
		a(`foo\.` + key + "."),                 // one label that merely ends in the key
		a(key + "." + key + "."),               // the key below itself
		&dns.CNAME{Hdr: dns.RR_Header{Name: "www." + key + ".", Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 300}, Target: "target.example.com."},
	}
	m.Ns = []dns.RR{a("ns-section-is-ignored.")}
	p, err := Sign(priv, 5, m)
	if err != nil {
		t.Fatal(err)
	}

	wantNames := func(zone string) []string {
		s := key + "." + zone
		if zone == "." {
			s = key + "."
		}
		return []string{
			s,
			"_foo." + s,
			"a.b." + s,
			"_bar." + s,
			s,
			s,
			"x." + s,
			`foo\.` + key + "." + s,
			key + "." + s,
			"www." + s,
		}
	}
	for _, tt := range []struct{ zone, fqdn string }{
		{"example.", "example."},
		{"example", "example."},
		{"pk.Example.ORG.", "pk.Example.ORG."},
		{"", "."},
		{".", "."},
	} {
		rrs, err := p.Records(tt.zone)
		if err != nil {
			t.Fatalf("Records(%q): %v", tt.zone, err)
		}
		want := wantNames(tt.fqdn)
		if len(rrs) != len(want) {
			t.Fatalf("Records(%q) gave %d records, want %d", tt.zone, len(rrs), len(want))
		}
		for i, rr := range rrs {
			if rr.Header().Name != want[i] {
				t.Errorf("Records(%q)[%d] is named %q, want %q", tt.zone, i, rr.Header().Name, want[i])
			}
			if _, ok := dns.IsDomainName(rr.Header().Name); !ok {
				t.Errorf("Records(%q)[%d] name %q is not a domain name", tt.zone, i, rr.Header().Name)
			}
		}
		// Everything else is kept.
		if got := rrs[0].(*dns.A); got.Hdr.Ttl != 60 || got.Hdr.Class != dns.ClassINET || !got.A.Equal(net.IPv4(192, 0, 2, 7)) {
			t.Errorf("Records(%q)[0] = %v", tt.zone, got)
		}
		if got := rrs[9].(*dns.CNAME); got.Target != "target.example.com." || got.Hdr.Ttl != 300 {
			t.Errorf("Records(%q)[9] = %v, want the CNAME target unchanged", tt.zone, got)
		}
	}
}

func TestRecordsErrors(t *testing.T) {
	priv := testKey(10)
	key := EncodeZBase32(priv.Public().(ed25519.PublicKey))
	long := strings.Repeat("a", 63)
	m := new(dns.Msg)
	m.Answer = []dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: long + "." + long + "." + long + "." + key + ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 1},
		Txt: []string{"x"},
	}}
	p, err := Sign(priv, 1, m)
	if err != nil {
		t.Fatal(err)
	}
	// 3×64 + 53 + 1 = 246 bytes; under "example." it is 254, within the
	// 255-byte limit, and under "example.org." 258, beyond it.
	if _, err := p.Records("example."); err != nil {
		t.Errorf("Records(example.): %v", err)
	}
	_, err = p.Records("example.org.")
	if err == nil || !strings.Contains(err.Error(), "record 0 ("+long) || !strings.Contains(err.Error(), "not a valid domain name") {
		t.Errorf("Records(example.org.) error = %v, want one naming the record", err)
	}
	_, err = p.Records("bad..zone")
	if err == nil || !strings.Contains(err.Error(), `zone "bad..zone." is not a domain name`) {
		t.Errorf("Records(bad..zone) error = %v", err)
	}
}
