package main

import (
	"strings"
	"testing"
)

func TestGitNode(t *testing.T) {
	const fp = "ed25519:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	var f callFlags
	addr, err := gitNode(&f, fp+"@node.example")
	if err != nil || addr != "node.example:4433" || f.o.Peer != fp {
		t.Fatalf("FINGERPRINT@HOST: %q %q %v", addr, f.o.Peer, err)
	}
	f = callFlags{}
	f.o.Peer = "ed25519:" + strings.Repeat("ff", 32)
	if _, err := gitNode(&f, fp+"@node.example:5000"); err == nil || !strings.Contains(err.Error(), "--peer says") {
		t.Fatalf("a fingerprint that --peer contradicts: %v", err)
	}
	f = callFlags{}
	if addr, err := gitNode(&f, "[::1]:5000"); err != nil || addr != "[::1]:5000" || f.o.Peer != "" {
		t.Fatalf("HOST:PORT: %q %q %v", addr, f.o.Peer, err)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 48213: "47.1 KiB", 100 << 20: "100.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
