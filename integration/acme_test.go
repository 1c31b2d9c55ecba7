package integration

import (
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"alknet.dev/alknet/core/identity/acmetest"
)

// freePort returns a port number free on both UDP and TCP of 127.0.0.1.
func freePort(t *testing.T) int {
	for range 20 {
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		p := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		u.Close()
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Fatal("no port free on both UDP and TCP")
	return 0
}

// TestServeACMEWithPebble: `alknet serve` in acme mode obtains a certificate
// from a real ACME CA (pebble on loopback) through TLS-ALPN-01 answered on
// its own port, then a client verifying against pebble's root (no pin)
// reaches alknet/echo over QUIC and over TCP+TLS.
func TestServeACMEWithPebble(t *testing.T) {
	const domain = "node.alknet.test"
	port := freePort(t)
	ca := acmetest.Start(t, domain, port)
	dir := t.TempDir()
	dirCA := writeFile(t, filepath.Join(dir, "directory-ca.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.DirectoryCert.Raw})), 0o600)
	rootPEM := writeFile(t, filepath.Join(dir, "pebble-root.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})), 0o600)

	node := newCLI(t, nil)
	srv := startServe(t, node, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--tls-mode", "acme", "--acme-domain", domain, "--acme-directory", ca.DirectoryURL,
		"--acme-email", "ops@alknet.test", "--acme-ca-file", dirCA)
	if srv.FP != "acme:"+domain {
		t.Fatalf("dial string identity %q", srv.FP)
	}
	srv.waitLog("acme certificate ready: domain=" + domain)
	client := newCLI(t, nil)
	for _, transport := range [][]string{nil, {"--tcp"}} {
		args := append([]string{"--alpn", "alknet/echo", "--ca-file", rootPEM, "--server-name", domain}, transport...)
		out, stderr, code := runPipe(t, client, []byte("acme!"), append(args, srv.Addr)...)
		if code != 0 || string(out) != "acme!" {
			t.Fatalf("pipe %v verifying against pebble's root: exit %d: %s\nnode logs:\n%s", transport, code, stderr, srv.logs)
		}
	}
	// Without pebble's root the same node is not trusted (fail closed).
	_, stderr, code := runPipe(t, client, []byte("x"), "--alpn", "alknet/echo", "--server-name", domain, srv.Addr)
	if code != 1 || !strings.Contains(stderr, "cannot verify") {
		t.Fatalf("untrusted CA: %d %s", code, stderr)
	}
}
