package pkarr

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// readFields reads a testdata file of key=value lines ('#' starts a comment).
func readFields(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q has no '='", path, line)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

// TestPkarrVector checks the signed packet published in pkarr's repository
// (testdata/README.md): the key of the seed, the exact bytes Ed25519 gives
// for it, and how it parses and is served.
func TestPkarrVector(t *testing.T) {
	v := readFields(t, "testdata/pkarr_js_signed_packet.txt")
	priv := ed25519.NewKeyFromSeed(mustHex(t, v["seed"]))
	pub := priv.Public().(ed25519.PublicKey)
	if got := EncodeZBase32(pub); got != v["name"] {
		t.Fatalf("name of the seed's key = %q, want %q", got, v["name"])
	}
	ts, err := strconv.ParseUint(v["timestamp"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	payload := mustHex(t, v["payload"])
	packet := append(bytes.Clone(pub), payload...)
	dnsPart := payload[ed25519.SignatureSize+8:]

	p, err := Parse(packet)
	if err != nil {
		t.Fatalf("Parse(vector): %v", err)
	}
	if p.Timestamp != ts {
		t.Errorf("Timestamp = %d, want %d", p.Timestamp, ts)
	}
	if hex.EncodeToString(p.Signature) != v["signature"] {
		t.Errorf("Signature = %x, want %s", p.Signature, v["signature"])
	}
	if p.Name() != v["name"] {
		t.Errorf("Name() = %q, want %q", p.Name(), v["name"])
	}
	if !bytes.Equal(p.Bytes(), packet) {
		t.Error("Bytes() differs from the vector")
	}

	// Ed25519 is deterministic: signing the same DNS part under the same
	// timestamp gives the published bytes.
	s, err := SignWire(priv, ts, dnsPart)
	if err != nil {
		t.Fatalf("SignWire: %v", err)
	}
	if !bytes.Equal(s.Bytes(), packet) {
		t.Errorf("SignWire(vector's dns part) =\n%x\nwant\n%x", s.Bytes(), packet)
	}

	m, err := p.Msg()
	if err != nil {
		t.Fatal(err)
	}
	name := v["name"]
	want := []string{
		name + ".\t0\tIN\tA\t1.1.1.1",
		"foo." + name + ".\t30\tIN\tTXT\t\"bar\"",
	}
	checkRRs(t, "Msg().Answer", m.Answer, want)

	rrs, err := p.Records("example.")
	if err != nil {
		t.Fatal(err)
	}
	checkRRs(t, "Records(example.)", rrs, []string{
		name + ".example.\t0\tIN\tA\t1.1.1.1",
		"foo." + name + ".example.\t30\tIN\tTXT\t\"bar\"",
	})
}

func checkRRs(t *testing.T, what string, got []dns.RR, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s has %d records, want %d: %v", what, len(got), len(want), got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("%s[%d] = %q, want %q", what, i, got[i].String(), want[i])
		}
	}
}

// TestDerivedVector builds a compressed packet byte by byte from the
// published layout (DNS header, names, the pointer to the key's name, the
// bencoded signable) and checks that Sign produces exactly those bytes.
func TestDerivedVector(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	pub := priv.Public().(ed25519.PublicKey)
	const name = "8pinxxgqs41n4aididenw5apqp1urfmzdztr8jt4abrkdn435ewo"
	const ts uint64 = 1_700_000_000_000_000

	var d []byte
	d = append(d, 0, 0, 0x80, 0, 0, 0, 0, 2, 0, 0, 0, 0) // id 0, QR, 2 answers
	// Answer 1: <name>. 300 IN A 192.0.2.1, the name at offset 12.
	d = append(d, byte(len(name)))
	d = append(d, name...)
	d = append(d, 0, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 1)
	// Answer 2: _foo.<name>. 30 IN TXT "bar", the key's name compressed to
	// a pointer to offset 12.
	d = append(d, 4, '_', 'f', 'o', 'o', 0xc0, 12)
	d = append(d, 0, 16, 0, 1, 0, 0, 0, 30, 0, 4, 3, 'b', 'a', 'r')

	signable := []byte("3:seqi1700000000000000e1:v" + strconv.Itoa(len(d)) + ":")
	signable = append(signable, d...)
	var want []byte
	want = append(want, pub...)
	want = append(want, ed25519.Sign(priv, signable)...)
	want = binary.BigEndian.AppendUint64(want, ts)
	want = append(want, d...)

	m := new(dns.Msg)
	m.Response = true
	for _, s := range []string{name + ". 300 IN A 192.0.2.1", "_foo." + name + ". 30 IN TXT bar"} {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	p, err := Sign(priv, ts, m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Bytes(), want) {
		t.Errorf("Sign =\n%x\nwant\n%x", p.Bytes(), want)
	}
	if _, err := Parse(want); err != nil {
		t.Errorf("Parse(derived vector): %v", err)
	}
}
