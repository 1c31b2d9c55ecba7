package integration

import (
	"net"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/internal/testnet"
)

// TestDialFallsBackToTCPWhenUDPDropped: a node whose UDP port is silent is
// reached over TCP+TLS by the plain command (no --tcp), pinned, within a
// second; --quic alone does not reach it.
func TestDialFallsBackToTCPWhenUDPDropped(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	addr := testnet.UDPDroppedT(t, srv.Addr)
	client := newCLI(t, nil)
	start := time.Now()
	out := client.ok("", "call", "--peer", srv.FP, addr, "/node/info")
	took := time.Since(start)
	t.Logf("alknet call over the TCP fallback: %v", took)
	if took > time.Second {
		t.Fatalf("call over the TCP fallback took %v; want < 1s", took)
	}
	if !strings.Contains(out, srv.FP) {
		t.Fatalf("node/info: %s", out)
	}
	srv.waitLog("transport=tcp-tls alpn=alknet/call")
	// The fallback keeps pinning: a wrong fingerprint is refused.
	wrong := "ed25519:" + strings.Repeat("0", 64)
	if last := client.fail("", "call", "--peer", wrong, addr, "/node/info"); !strings.Contains(last, "HAS CHANGED") || !strings.Contains(last, srv.FP) {
		t.Fatalf("wrong pin over the fallback: %s", last)
	}
	// Forcing QUIC fails with what was tried and what to check.
	if last := client.fail("", "call", "--quic", "--connect-timeout", "1s", "--peer", srv.FP, addr, "/node/info"); !strings.Contains(last, "QUIC: no answer") || strings.Contains(last, "TCP:") {
		t.Fatalf("--quic to a node with UDP dropped: %s", last)
	}
}

// TestDialDeadPortFailsFast: nothing listening on either transport fails
// in under 2 s (not after QUIC's 10 s handshake timeout), naming both
// transports and what to check.
func TestDialDeadPortFailsFast(t *testing.T) {
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
	client := newCLI(t, nil)
	start := time.Now()
	last := client.fail("", "call", "--peer", "ed25519:"+strings.Repeat("0", 64), addr, "/node/info")
	took := time.Since(start)
	t.Logf("dead port: failed after %v: %s", took, last)
	if took > 2*time.Second {
		t.Fatalf("dial to a dead port took %v; want < 2s (%s)", took, last)
	}
	for _, want := range []string{"dial " + addr, "QUIC: no answer within", "TCP: connection refused", "is the node running", "port " + port + " open (UDP and TCP)"} {
		if !strings.Contains(last, want) {
			t.Fatalf("error lacks %q: %s", want, last)
		}
	}
}
