package pkarr

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParse feeds arbitrary bytes to Parse. It must not panic, and a packet
// it accepts must come back unchanged through Bytes and Parse. Since random
// bytes almost never carry a valid signature, the DNS part of each input is
// also signed with a fixed key, so that the DNS checks and Records see
// arbitrary messages too.
func FuzzParse(f *testing.F) {
	priv := testKey(0)
	key := EncodeZBase32(priv.Public().(ed25519.PublicKey))

	// Seeds: pkarr's published packet and mutations of it, and a packet
	// signed here.
	if raw, err := os.ReadFile("testdata/pkarr_js_signed_packet.txt"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if hexPayload, ok := strings.CutPrefix(line, "payload="); ok {
				payload := mustHex(f, hexPayload)
				good := append(append([]byte{}, priv.Public().(ed25519.PublicKey)...), payload...)
				f.Add(good)
				flipped := bytes.Clone(good)
				flipped[50] ^= 0x80
				f.Add(flipped)
				f.Add(good[:HeaderSize])
				f.Add(good[:HeaderSize-1])
				f.Add(append(bytes.Clone(good), 0))
				f.Add(good[:len(good)-1])
			}
		}
	}
	m := new(dns.Msg)
	m.Response = true
	if p, err := Sign(priv, 1, m); err == nil {
		f.Add(p.Bytes())
	}
	f.Add([]byte{})
	f.Add(make([]byte, HeaderSize+MaxDNSBytes+1))

	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := Parse(data); err == nil {
			checkReparse(t, p, data)
		} else if p != nil {
			t.Fatalf("Parse returned a packet with error %v", err)
		}

		if len(data) < HeaderSize {
			return
		}
		ts := binary.BigEndian.Uint64(data[96:104])
		p, err := SignWire(priv, ts, data[HeaderSize:])
		if err != nil {
			return
		}
		b := p.Bytes()
		q, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(SignWire(...).Bytes()): %v", err)
		}
		checkReparse(t, q, b)
		if q.Name() != key {
			t.Fatalf("Name() = %q, want %q", q.Name(), key)
		}
	})
}

// checkReparse checks that a packet Parse accepted from data gives the same
// bytes and fields again, and that serving it does not panic.
func checkReparse(t *testing.T, p *SignedPacket, data []byte) {
	t.Helper()
	b := p.Bytes()
	if !bytes.Equal(b, data) {
		t.Fatalf("Bytes() = %x, want the input %x", b, data)
	}
	q, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Bytes()) of an accepted packet: %v", err)
	}
	if !bytes.Equal(q.PublicKey, p.PublicKey) || !bytes.Equal(q.Signature, p.Signature) ||
		q.Timestamp != p.Timestamp || !bytes.Equal(q.DNS, p.DNS) {
		t.Fatalf("Parse(Bytes()) = %+v, want %+v", q, p)
	}
	if n := len(p.Name()); n != 52 {
		t.Fatalf("Name() has %d characters, want 52", n)
	}
	if _, err := DecodeZBase32(p.Name()); err != nil {
		t.Fatalf("DecodeZBase32(Name()): %v", err)
	}
	if _, err := p.Msg(); err != nil {
		t.Fatalf("Msg() of an accepted packet: %v", err)
	}
	_, _ = p.Records("example.")
}
