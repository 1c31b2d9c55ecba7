package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dns: the DNS plugin's authoritative answers on a real `bin/alknet serve`
// with the dns plugin alone (bin/alknet-plugin-dns; every other plugin
// disabled), serving the zone dnsZone from a zone file, over DNS over QUIC
// (RFC 9250, ALPN doq, on the node's QUIC port) and DNS over TLS (RFC
// 7858, ALPN dot, on its TCP+TLS listener, the same port number). The
// anchor is CoreDNS (corednsVersion, built with `go install`; a process
// of its own as the node is) serving the same zone file with its file
// plugin on quic:// and tls:// on 127.0.0.1, with a certificate of the
// kind the node presents (the bench's Ed25519 key, self-signed), and no
// other plugin: no log, no cache.
//
// The clients are the bench's own (dnsload.go), the same against both:
// quic-go and crypto/tls, TLS 1.3, the server pinned by its key. Each
// asks www.example.net. A, one query after the other on a connection of
// its own (DoQ: a stream per query, ID 0; DoT: the connection reused,
// IDs in sequence), and checks the answer: NOERROR, one A record. cN is
// N clients at once, N connections. CoreDNS's file plugin also puts the
// zone's NS set in the authority section of a positive answer (the
// progress log shows both servers' answer sizes).
//
// dns-doq-vs-dot-c64 puts the node's two transports side by side.
var m13 = []benchmark{
	dnsBench("dns-doq-c1", dnsDoQ, 1),
	dnsBench("dns-doq-c64", dnsDoQ, dnsWorkers),
	dnsBench("dns-dot-c1", dnsDoT, 1),
	dnsBench("dns-dot-c64", dnsDoT, dnsWorkers),
	{
		Name: "dns-doq-vs-dot-c64", Area: "dns", Unit: "queries/s", HigherIsBetter: true, Goal: 1.0, Informational: true,
		Description: fmt.Sprintf("%d concurrent clients, each on a connection of its own asking %s A one query after the other: the DNS plugin over DoQ vs the same plugin over DoT (a node for each)",
			dnsWorkers, dnsQueryName),
		Rounds: 5, ShortRounds: 3,
		Subject: variant{Label: dnsDoQ.nodeLabel + ", 64 connections", Start: startDNSNodeLoad(dnsDoQ, dnsWorkers)},
		Anchor:  variant{Label: dnsDoT.nodeLabel + ", 64 connections", Start: startDNSNodeLoad(dnsDoT, dnsWorkers)},
	},
}

// dnsBench is the row of clients clients of the DNS plugin against
// CoreDNS over transport t.
func dnsBench(name string, t dnsTransport, clients int) benchmark {
	who, conns := "one client asking", "1 connection"
	if clients > 1 {
		who = fmt.Sprintf("%d concurrent clients, each on a connection of its own asking", clients)
		conns = fmt.Sprintf("%d connections", clients)
	}
	return benchmark{
		Name: name, Area: "dns", Unit: "queries/s", HigherIsBetter: true, Goal: 1.0,
		Description: fmt.Sprintf("%s %s A one query after the other over %s (TLS 1.3, the server pinned), each answer checked: the DNS plugin vs CoreDNS %s (file plugin, the same zone file)",
			who, dnsQueryName, t.name, corednsVersion),
		Rounds: 5, ShortRounds: 3,
		Subject: variant{Label: t.nodeLabel + ", " + conns, Start: startDNSNodeLoad(t, clients)},
		Anchor:  variant{Label: t.corednsLabel + ", " + conns, Start: startCoreDNSLoad(t, clients)},
	}
}

const (
	// dnsWorkers is the clients of the c64 rows.
	dnsWorkers = 64
	// corednsVersion is the anchor's release: the rows use no other.
	corednsVersion = "1.15.0"
	// dnsOrigin is the zone both servers serve.
	dnsOrigin = "example.net."
)

// dnsZone is the zone file both servers load (RFC 1035 master format).
const dnsZone = `$ORIGIN example.net.
$TTL 300
@       IN SOA  ns1.example.net. hostmaster.example.net. 2025010101 7200 3600 1209600 300
@       IN NS   ns1.example.net.
@       IN MX   10 mail.example.net.
@       IN TXT  "v=alknet-bench zone for the dns rows"
ns1     IN A    192.0.2.1
mail    IN A    192.0.2.25
www 300 IN A    ` + dnsQueryAnswer + `
www 300 IN AAAA 2001:db8::10
`

// dnsTransport is DoQ or DoT: how a client connects, and the labels of
// the servers.
type dnsTransport struct {
	name, alpn              string
	dial                    dnsDial
	nodeLabel, corednsLabel string
}

var (
	dnsDoQ = dnsTransport{name: "DoQ", alpn: "doq", dial: dialDoQ,
		nodeLabel:    "bin/alknet serve + dns plugin, DoQ (ALPN doq) on the node's QUIC port",
		corednsLabel: "CoreDNS " + corednsVersion + " file plugin, quic://127.0.0.1, child process"}
	dnsDoT = dnsTransport{name: "DoT", alpn: "dot", dial: dialDoT,
		nodeLabel:    "bin/alknet serve + dns plugin, DoT (ALPN dot) on the node's TCP+TLS port",
		corednsLabel: "CoreDNS " + corednsVersion + " file plugin, tls://127.0.0.1, child process"}
)

// --- the node ---

// startDNSNodeLoad starts a node serving dnsZone with the dns plugin and
// measures clients clients of it over t.
func startDNSNodeLoad(t dnsTransport, clients int) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		n, err := startDNSNode(ctx)
		if err != nil {
			return nil, err
		}
		target := dnsTarget{addr: n.addr, fp: n.fp, alpn: t.alpn}
		return dnsLoad(e, target, t.dial, clients, "alknet "+t.name, n.close), nil
	}
}

// startDNSNode starts `alknet serve` with the dns plugin alone (every
// other plugin in ./bin disabled, echo too), serving dnsZone from a zone
// file in the node's home, and waits until the plugin is ready.
func startDNSNode(ctx context.Context) (*node, error) {
	h, err := makeNodeHome()
	if err != nil {
		return nil, err
	}
	zone := filepath.Join(h.root, "example.net.zone")
	err = os.WriteFile(zone, []byte(dnsZone), 0o600)
	if err == nil {
		err = h.writeConfig(fmt.Sprintf("[plugins.echo]\ndisabled = true\n\n"+
			"[plugins.dns]\n\n[[plugins.dns.zones]]\norigin = %q\nfile = %q\n", dnsOrigin, zone), "dns")
	}
	if err != nil {
		h.remove()
		return nil, err
	}
	return startNodeIn(ctx, h, "dns")
}

// --- the CoreDNS anchor ---

// startCoreDNSLoad starts CoreDNS serving dnsZone on quic:// and tls://
// and measures clients clients of it over t.
func startCoreDNSLoad(t dnsTransport, clients int) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		s, err := startCoreDNS(ctx, e)
		if err != nil {
			return nil, err
		}
		// CoreDNS's DoT server selects no ALPN (server_tls.go sets no
		// NextProtos); its DoQ server selects doq (server_quic.go).
		target := dnsTarget{addr: s.addr, fp: e.fingerprint, alpn: t.alpn, alpnOptional: t.alpn == "dot"}
		return dnsLoad(e, target, t.dial, clients, "CoreDNS "+t.name, s.stop), nil
	}
}

// coreDNSBinary finds CoreDNS corednsVersion: in PATH, then where `go
// install` puts it ($(go env GOBIN), $(go env GOPATH)/bin).
var coreDNSBinary = sync.OnceValues(func() (string, error) {
	install := "go install github.com/coredns/coredns@v" + corednsVersion
	var candidates []string
	if p, err := exec.LookPath("coredns"); err == nil {
		candidates = append(candidates, p)
	}
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(string(out), "\n")
		if len(lines) > 0 && strings.TrimSpace(lines[0]) != "" {
			candidates = append(candidates, filepath.Join(strings.TrimSpace(lines[0]), "coredns"))
		}
		if len(lines) > 1 && strings.TrimSpace(lines[1]) != "" {
			gopath := filepath.SplitList(strings.TrimSpace(lines[1]))[0]
			candidates = append(candidates, filepath.Join(gopath, "bin", "coredns"))
		}
	} else if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "go", "bin", "coredns"))
	}
	var found []string
	for i, p := range candidates {
		if slices.Contains(candidates[:i], p) {
			continue
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, p, "-version").Output()
		cancel()
		version, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if err == nil && version == "CoreDNS-"+corednsVersion {
			return p, nil
		}
		found = append(found, fmt.Sprintf("%s (%s)", p, strings.TrimSpace(version)))
	}
	if len(found) > 0 {
		return "", fmt.Errorf("the dns rows' anchor is CoreDNS %s; found only %s: install it with `%s` (it builds all of CoreDNS's plugins: minutes)",
			corednsVersion, strings.Join(found, ", "), install)
	}
	return "", fmt.Errorf("coredns not found in PATH nor in $(go env GOPATH)/bin: install it with `%s` for the dns rows' anchor (it builds all of CoreDNS's plugins: minutes)", install)
})

// coreDNS is a running CoreDNS serving dnsZone over DoQ and DoT on addr
// (UDP and TCP, one port number, as the node).
type coreDNS struct {
	addr string
	stop func()
}

// startCoreDNS runs CoreDNS in the foreground on a Corefile in a
// temporary directory: the zone file, and the bench's certificate (e.cert,
// the anchors' certificate) and key as PEM files for its tls plugin. It
// returns once CoreDNS answers on both transports.
func startCoreDNS(ctx context.Context, e *env) (*coreDNS, error) {
	bin, err := coreDNSBinary()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "alknet-bench-coredns-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*coreDNS, error) {
		_ = os.RemoveAll(root)
		return nil, err
	}
	certFile, keyFile, zone := filepath.Join(root, "cert.pem"), filepath.Join(root, "key.pem"), filepath.Join(root, "example.net.zone")
	if err := writeCertPEM(e, certFile, keyFile); err != nil {
		return fail(err)
	}
	port, err := freeLoopbackPortBoth()
	if err != nil {
		return fail(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var corefile strings.Builder
	for _, scheme := range []string{"quic", "tls"} {
		fmt.Fprintf(&corefile, "%s://%s:%d {\n\tbind 127.0.0.1\n\ttls %s %s\n\tfile %s\n}\n", scheme, dnsOrigin, port, certFile, keyFile, zone)
	}
	conf := filepath.Join(root, "Corefile")
	err = os.WriteFile(zone, []byte(dnsZone), 0o600)
	if err == nil {
		err = os.WriteFile(conf, []byte(corefile.String()), 0o600)
	}
	if err != nil {
		return fail(err)
	}

	cmd := exec.Command(bin, "-conf", conf)
	cmd.Dir = root
	// If the bench dies, so does CoreDNS.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	logs := &logTail{}
	cmd.Stdout = &lineWriter{tail: logs}
	cmd.Stderr = &lineWriter{tail: logs}
	proc, err := startProcess(cmd)
	if err != nil {
		return fail(err)
	}
	stop := func() {
		proc.stop()
		_ = os.RemoveAll(root)
	}

	// Ready once a query is answered over each transport.
	deadline := time.Now().Add(20 * time.Second)
	for _, t := range []dnsTransport{dnsDoQ, dnsDoT} {
		target := dnsTarget{addr: addr, fp: e.fingerprint, alpn: t.alpn, alpnOptional: t.alpn == "dot"}
		for {
			err := probeDNS(ctx, t, target)
			if err == nil {
				break
			}
			select {
			case <-proc.exited:
				stop()
				return nil, fmt.Errorf("coredns exited: %v\n%s", proc.err, logs)
			default:
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				stop()
				return nil, fmt.Errorf("coredns did not answer over %s on %s in 20 s: %v\n%s", t.name, addr, err, logs)
			}
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				stop()
				return nil, err
			}
		}
	}
	return &coreDNS{addr: addr, stop: stop}, nil
}

// probeDNS asks one query over a connection of its own.
func probeDNS(ctx context.Context, t dnsTransport, target dnsTarget) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := t.dial(ctx, target)
	if err != nil {
		return err
	}
	defer c.close()
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	return c.query(ctx)
}

// writeCertPEM writes the bench's certificate (self-signed, Ed25519) and
// its key as PEM files.
func writeCertPEM(e *env, certFile, keyFile string) error {
	if len(e.cert.Certificate) == 0 {
		return errors.New("the bench has no certificate")
	}
	der, err := x509.MarshalPKCS8PrivateKey(e.cert.PrivateKey)
	if err != nil {
		return err
	}
	var certPEM bytes.Buffer
	for _, c := range e.cert.Certificate {
		if err := pem.Encode(&certPEM, &pem.Block{Type: "CERTIFICATE", Bytes: c}); err != nil {
			return err
		}
	}
	if err := os.WriteFile(certFile, certPEM.Bytes(), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// freeLoopbackPortBoth is a port of 127.0.0.1 that was free a moment ago
// for both TCP and UDP.
func freeLoopbackPortBoth() (int, error) {
	var last error
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port, nil
		}
		last = err
	}
	return 0, fmt.Errorf("no loopback port free for both TCP and UDP: %v", last)
}
