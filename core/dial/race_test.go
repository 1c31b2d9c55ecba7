package dial_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/internal/testnet"
)

func TestNormalizeAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":         "127.0.0.1:4433",
		"127.0.0.1:5000":    "127.0.0.1:5000",
		"node.example":      "node.example:4433",
		"node.example:1":    "node.example:1",
		" node.example ":    "node.example:4433",
		"[::1]":             "[::1]:4433",
		"[::1]:5000":        "[::1]:5000",
		"::1":               "[::1]:4433",
		"2001:db8::7":       "[2001:db8::7]:4433",
		"fe80::1%eth0":      "[fe80::1%eth0]:4433",
		"[fe80::1%eth0]:70": "[fe80::1%eth0]:70",
	} {
		got, err := dial.NormalizeAddr(in)
		if err != nil || got != want {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, wantErr := range map[string]string{
		"":                  "empty address",
		"node.example:":     "port",
		"node.example:0":    "port",
		"node.example:http": "port",
		"node:70000":        "port",
		":4433":             "bad host",
		"[::1]:":            "port",
		"[::1":              "brackets",
		"a b":               "bad host",
	} {
		got, err := dial.NormalizeAddr(in)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want an error about %q", in, got, err, wantErr)
		}
	}
}

func TestAddrFromArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"::1", "47434"}, "[::1]:47434"},
		{[]string{"[::1]", "47434"}, "[::1]:47434"},
		{[]string{"node.example", "22"}, "node.example:22"},
		{[]string{"127.0.0.1:9"}, "127.0.0.1:9"},
		{[]string{"::1"}, "[::1]:4433"},
	} {
		got, err := dial.AddrFromArgs(c.args)
		if err != nil || got != c.want {
			t.Errorf("AddrFromArgs(%q) = %q, %v; want %q", c.args, got, err, c.want)
		}
	}
	for _, args := range [][]string{{"::1", "x"}, {"", "1"}, {"a", "b", "c"}, {}} {
		if got, err := dial.AddrFromArgs(args); err == nil {
			t.Errorf("AddrFromArgs(%q) = %q; want an error", args, got)
		}
	}
}

// TestRaceQUICWins: with UDP reachable the race ends on QUIC.
func TestRaceQUICWins(t *testing.T) {
	ep, fp := rawKeyNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dial.Dial(ctx, ep.UDPAddr().String(), dial.Options{ALPN: endpoint.EchoALPN, Peer: fp})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	if c.Transport() != auth.TransportQUIC {
		t.Fatalf("transport %s, want QUIC", c.Transport())
	}
}

// TestRaceFallsBackToTCP: with UDP dropped the TCP+TLS attempt, started
// after the head start, connects — with the same pinning — in well under
// a second.
func TestRaceFallsBackToTCP(t *testing.T) {
	ep, fp := rawKeyNode(t)
	addr := testnet.UDPDroppedT(t, ep.TCPAddr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	c, err := dial.Dial(ctx, addr, dial.Options{ALPN: endpoint.EchoALPN, Peer: fp})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	c.CloseWithError(0, "")
	if c.Transport() != auth.TransportTCPTLS || took < dial.TCPHeadStart || took > time.Second {
		t.Fatalf("transport %s after %v; want TCP+TLS after the %v head start, within 1s", c.Transport(), took, dial.TCPHeadStart)
	}
	// A wrong pin still fails closed over the fallback.
	err = try(t, addr, dial.Options{Peer: "ed25519:" + strings.Repeat("0", 64)})
	var me *dial.MismatchError
	if !errors.As(err, &me) {
		t.Fatalf("wrong pin over TCP fallback: %v", err)
	}
}

// TestDeadPortFailsFast: nothing on either transport fails within 2 s
// (not after QUIC's handshake timeout), naming both transports and what
// to check.
func TestDeadPortFailsFast(t *testing.T) {
	addr := deadPort(t)
	_, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	_, err := dial.Dial(ctx, addr, dial.Options{ALPN: endpoint.EchoALPN, Peer: "ed25519:" + strings.Repeat("0", 64)})
	took := time.Since(start)
	if err == nil {
		t.Fatal("dial to a dead port succeeded")
	}
	var ce *dial.ConnectError
	msg := err.Error()
	if !errors.As(err, &ce) || !strings.Contains(msg, "QUIC: no answer within") || !strings.Contains(msg, "TCP: connection refused") ||
		!strings.Contains(msg, "port "+port+" open (UDP and TCP)") || !strings.Contains(msg, addr) {
		t.Fatalf("error %q", msg)
	}
	if took > 2*time.Second || took < dial.QUICGrace {
		t.Fatalf("failed after %v; want between %v and 2s", took, dial.QUICGrace)
	}
	// Forced TCP fails at once and says so.
	start = time.Now()
	_, err = dial.Dial(ctx, addr, dial.Options{ALPN: endpoint.EchoALPN, TCP: true})
	if err == nil || time.Since(start) > time.Second || !strings.Contains(err.Error(), "TCP: connection refused") || strings.Contains(err.Error(), "QUIC:") ||
		!strings.Contains(err.Error(), "TCP port "+port) {
		t.Fatalf("--tcp to a dead port: %v after %v", err, time.Since(start))
	}
	if _, err := dial.Dial(ctx, addr, dial.Options{ALPN: endpoint.EchoALPN, TCP: true, QUIC: true}); err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("--tcp with --quic: %v", err)
	}
}

// deadPort is a loopback address whose UDP and TCP ports were just bound
// and closed: nothing answers there.
func deadPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if u, err := net.ListenPacket("udp", addr); err == nil {
		u.Close()
	}
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	if _, err := strconv.Atoi(port); err != nil {
		t.Fatal(err)
	}
	return addr
}
