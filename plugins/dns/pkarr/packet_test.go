package pkarr

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// testKey returns the key pair of a seed made of 32 copies of b.
func testKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

// testMsg returns a reply with a few records named relative to key.
func testMsg(t *testing.T, key string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.Response = true
	for _, s := range []string{
		key + ". 300 IN A 192.0.2.1",
		key + ". 300 IN AAAA 2001:db8::1",
		"_foo." + key + ". 30 IN TXT \"hello\" \"world\"",
		"www." + key + ". 60 IN CNAME example.com.",
	} {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("dns.NewRR(%q): %v", s, err)
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

func TestSignParseRoundTrip(t *testing.T) {
	priv := testKey(7)
	key := EncodeZBase32(priv.Public().(ed25519.PublicKey))
	msg := testMsg(t, key)
	const ts = 1_700_000_000_123_456

	p, err := Sign(priv, ts, msg)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if p.Name() != key || len(p.Name()) != 52 {
		t.Errorf("Name() = %q, want %q", p.Name(), key)
	}
	b := p.Bytes()
	if len(b) != HeaderSize+len(p.DNS) {
		t.Fatalf("len(Bytes()) = %d, want %d", len(b), HeaderSize+len(p.DNS))
	}
	if got := binary.BigEndian.Uint64(b[96:104]); got != ts {
		t.Errorf("timestamp bytes = %d, want %d", got, ts)
	}

	q, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !bytes.Equal(q.PublicKey, p.PublicKey) || !bytes.Equal(q.Signature, p.Signature) ||
		q.Timestamp != p.Timestamp || !bytes.Equal(q.DNS, p.DNS) {
		t.Fatalf("Parse(Bytes()) = %+v, want %+v", q, p)
	}
	if !bytes.Equal(q.Bytes(), b) {
		t.Error("Parse(b).Bytes() differs from b")
	}
	// Parse must not alias its input.
	b[HeaderSize] ^= 0xff
	if q.DNS[0] == b[HeaderSize] {
		t.Error("Parse result shares memory with its input")
	}

	got, err := q.Msg()
	if err != nil {
		t.Fatalf("Msg: %v", err)
	}
	if !got.Response {
		t.Error("Msg().Response = false, want true")
	}
	if len(got.Answer) != len(msg.Answer) {
		t.Fatalf("Msg() has %d answers, want %d", len(got.Answer), len(msg.Answer))
	}
	for i := range msg.Answer {
		if g, w := got.Answer[i].String(), msg.Answer[i].String(); g != w {
			t.Errorf("answer %d = %q, want %q", i, g, w)
		}
	}
	// Sign packs with compression: the key's name appears once.
	if n := bytes.Count(p.DNS, []byte(key)); n != 1 {
		t.Errorf("the key's name appears %d times in the DNS part, want 1 (compressed)", n)
	}
	if msg.Compress {
		t.Error("Sign changed the caller's message")
	}
}

func TestSignable(t *testing.T) {
	got := Signable(1697016827303000, []byte("abc"))
	want := "3:seqi1697016827303000e1:v3:abc"
	if string(got) != want {
		t.Errorf("Signable = %q, want %q", got, want)
	}
	if got := Signable(0, nil); string(got) != "3:seqi0e1:v0:" {
		t.Errorf("Signable(0, nil) = %q", got)
	}
	if got := Signable(^uint64(0), []byte{0}); string(got) != "3:seqi18446744073709551615e1:v1:\x00" {
		t.Errorf("Signable(max, 0) = %q", got)
	}
}

// signRaw builds a packet byte by byte from the layout, without SignWire's
// checks, signing whatever dnsPart is.
func signRaw(priv ed25519.PrivateKey, ts uint64, dnsPart []byte) []byte {
	signable := fmt.Appendf(nil, "3:seqi%de1:v%d:", ts, len(dnsPart))
	signable = append(signable, dnsPart...)
	var b []byte
	b = append(b, priv.Public().(ed25519.PublicKey)...)
	b = append(b, ed25519.Sign(priv, signable)...)
	b = binary.BigEndian.AppendUint64(b, ts)
	return append(b, dnsPart...)
}

// txtMsgOfSize returns a packed reply with one TXT record at the root, of
// exactly n bytes (n ≥ 25 + 2).
func txtMsgOfSize(t *testing.T, n int) []byte {
	t.Helper()
	// header 12 + name 1 + type/class/ttl/rdlength 10 = 23, then the strings.
	rest := n - 23
	var txt []string
	for rest > 0 {
		l := min(rest-1, 255)
		txt = append(txt, strings.Repeat("x", l))
		rest -= l + 1
	}
	m := new(dns.Msg)
	m.Response = true
	m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 30}, Txt: txt}}
	wire, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if len(wire) != n {
		t.Fatalf("built a message of %d bytes, want %d", len(wire), n)
	}
	return wire
}

func TestParseRefuses(t *testing.T) {
	priv := testKey(1)
	other := testKey(2)
	key := EncodeZBase32(priv.Public().(ed25519.PublicKey))
	p, err := Sign(priv, 42, testMsg(t, key))
	if err != nil {
		t.Fatal(err)
	}
	good := p.Bytes()

	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		return b
	}
	otherKey := bytes.Clone(good)
	copy(otherKey, other.Public().(ed25519.PublicKey))
	signedByOther := signRaw(other, 42, p.DNS)
	copy(signedByOther, priv.Public().(ed25519.PublicKey)) // claims priv's key

	tests := []struct {
		name    string
		in      []byte
		want    error
		message string
	}{
		{"empty", nil, ErrTooShort, "signed packet: 0 bytes, shorter than the 104-byte header"},
		{"one byte", []byte{0}, ErrTooShort, "1 bytes"},
		{"header minus one", good[:HeaderSize-1], ErrTooShort, "103 bytes"},
		{"dns part of 1001 bytes", signRaw(priv, 42, txtMsgOfSize(t, 1001)), ErrTooLarge,
			"signed packet: dns part is 1001 bytes, the limit is 1000"},
		{"dns part of 1200 bytes", append(bytes.Clone(good), make([]byte, 1200-len(p.DNS))...), ErrTooLarge,
			"signed packet: dns part is 1200 bytes, the limit is 1000"},
		{"signature by another key", signedByOther, ErrBadSignature,
			"signed packet: signature does not verify for key " + key},
		{"another key", otherKey, ErrBadSignature, "signature does not verify for key " + EncodeZBase32(other.Public().(ed25519.PublicKey))},
		{"flipped key byte", flip(5), ErrBadSignature, "signature does not verify"},
		{"flipped signature byte", flip(40), ErrBadSignature, "signature does not verify"},
		{"flipped last signature byte", flip(95), ErrBadSignature, "signature does not verify"},
		{"flipped timestamp byte", flip(103), ErrBadSignature, "timestamp 43"},
		{"flipped dns byte", flip(HeaderSize + 20), ErrBadSignature, "signature does not verify"},
		{"dns byte appended", append(bytes.Clone(good), 0), ErrBadSignature, "signature does not verify"},
		{"dns part not a DNS message", signRaw(priv, 42, []byte("this is not a DNS message")), ErrBadDNS,
			"signed packet: dns part of key " + key + " (25 bytes) is not a DNS message"},
		{"empty dns part", signRaw(priv, 42, nil), ErrBadDNS, "(0 bytes) is not a DNS message"},
		{"truncated dns message", signRaw(priv, 42, p.DNS[:len(p.DNS)-3]), ErrBadDNS, "is not a DNS message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", got)
			}
			if got != nil {
				t.Errorf("Parse returned a packet with its error")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("error %q is not %v", err, tt.want)
			}
			for _, other := range []error{ErrTooShort, ErrTooLarge, ErrBadSignature, ErrBadDNS} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("error %q is also %v", err, other)
				}
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not contain %q", err, tt.message)
			}
		})
	}
}

func TestSizeLimit(t *testing.T) {
	priv := testKey(3)
	// Exactly 1000 bytes is allowed, through SignWire and Parse.
	wire := txtMsgOfSize(t, MaxDNSBytes)
	p, err := SignWire(priv, 1, wire)
	if err != nil {
		t.Fatalf("SignWire(1000 bytes): %v", err)
	}
	if _, err := Parse(p.Bytes()); err != nil {
		t.Fatalf("Parse(1000-byte dns part): %v", err)
	}
	if len(p.Bytes()) != 1104 {
		t.Errorf("len(Bytes()) = %d, want 1104", len(p.Bytes()))
	}

	// 1001 bytes is refused by SignWire.
	_, err = SignWire(priv, 1, txtMsgOfSize(t, MaxDNSBytes+1))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "1001 bytes, the limit is 1000") {
		t.Errorf("SignWire(1001 bytes) error = %v, want ErrTooLarge naming 1001 bytes", err)
	}

	// And by Sign, for a message that packs too large.
	m := new(dns.Msg)
	m.Response = true
	for i := range 80 {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: "_derp_region.iroh.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
			A:   net.IPv4(10, 0, 0, byte(i)),
		})
	}
	_, err = Sign(priv, 1, m)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "the limit is 1000") {
		t.Errorf("Sign(80 A records) error = %v, want ErrTooLarge", err)
	}
}

func TestSignWireRefuses(t *testing.T) {
	priv := testKey(4)
	_, err := SignWire(priv, 1, []byte("not dns"))
	if !errors.Is(err, ErrBadDNS) || !strings.Contains(err.Error(), "7 dns bytes are not a DNS message") {
		t.Errorf("SignWire(junk) error = %v, want ErrBadDNS", err)
	}
	_, err = SignWire(priv[:10], 1, txtMsgOfSize(t, 40))
	if err == nil || !strings.Contains(err.Error(), "private key is 10 bytes, want 64") {
		t.Errorf("SignWire(short key) error = %v", err)
	}
	if _, err := Sign(priv, 1, nil); err == nil {
		t.Error("Sign(nil message) succeeded")
	}
}

func TestMsgError(t *testing.T) {
	p := &SignedPacket{PublicKey: make([]byte, 32), DNS: []byte{1, 2, 3}}
	_, err := p.Msg()
	if !errors.Is(err, ErrBadDNS) {
		t.Errorf("Msg() error = %v, want ErrBadDNS", err)
	}
	if _, err := p.Records("example."); !errors.Is(err, ErrBadDNS) {
		t.Errorf("Records() error = %v, want ErrBadDNS", err)
	}
}
