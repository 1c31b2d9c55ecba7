package dnsplugin

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"

	"alknet.dev/alknet/plugins/sdk"
)

// FuzzFraming feeds DoQ/DoT bytes (a 2-byte length and a message) to the
// reader the transports share: it never panics, and what it accepts is a
// message answered with a well-formed reply.
func FuzzFraming(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("www.example.net.", dns.TypeA)
	b, _ := q.Pack()
	f.Add(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
	f.Add([]byte{0, 3, 1, 2, 3})
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{0, 12, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	p := fuzzPlugin(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := readQuery(bytes.NewReader(data))
		if err != nil {
			return
		}
		answerPacks(t, p, req)
	})
}

// FuzzAnswer feeds any message to the DNS logic, as any identity: the
// answer always packs, keeps the ID and is a response.
func FuzzAnswer(f *testing.F) {
	for _, t := range []uint16{dns.TypeA, dns.TypeAXFR, dns.TypeANY, dns.TypeCNAME, dns.TypeNS} {
		q := new(dns.Msg)
		q.SetQuestion("alias.example.net.", t)
		q.SetEdns0(4096, true)
		b, _ := q.Pack()
		f.Add(b)
	}
	p := fuzzPlugin(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := unpackQuery(data)
		if err != nil {
			return
		}
		answerPacks(t, p, req)
	})
}

func fuzzPlugin(f *testing.F) *Plugin {
	cfg, err := parseSettings([]byte(zoneSettings()), "")
	if err != nil {
		f.Fatal(err)
	}
	p := &Plugin{}
	p.signed, _ = openSignedStore("", cfg.maxSigned)
	p.cfg.Store(cfg)
	return p
}

func answerPacks(t *testing.T, p *Plugin, req *dns.Msg) {
	for _, id := range []*sdk.Identity{nil, {ID: "xfr", Scopes: []string{ScopeRecurse}}} {
		m := p.answer(context.Background(), req, source{transport: "doq", identity: id})
		if m == nil || !m.Response || m.Id != req.Id {
			t.Fatalf("answer to %v: %v", req, m)
		}
		if _, err := packLengthPrefixed(m); err != nil { // as DoQ and DoT send it
			t.Fatalf("answer does not pack: %v\n%v", err, m)
		}
	}
}
