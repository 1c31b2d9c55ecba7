package ssh_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
	"alknet.dev/alknet/plugins/ssh"
)

// fakeClock is the clock of the plugin's per-source penalties, moved by
// the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// source is a client address: each stream it opens is on a connection of
// its own, as each `ssh` through its ProxyCommand makes one (the plugin
// ends a connection once no SSH connection runs on it).
type source struct {
	f    *fixture
	auth sdk.Auth
}

// OpenStream opens a stream on a new connection from s.
func (s *source) OpenStream(ctx context.Context) (*sdktest.Stream, error) {
	conn, err := s.f.h.Connect(ctx, s.auth)
	if err != nil {
		return nil, err
	}
	s.f.t.Cleanup(conn.Close)
	return conn.OpenStream(ctx)
}

// connectFrom is another client address, as if from remote.
func (f *fixture) connectFrom(remote, transport string) *source {
	return &source{f: f, auth: sdk.Auth{ALPN: ssh.ALPN, RemoteAddr: remote, Transport: transport}}
}

// dialOn runs an SSH client handshake on a new stream of conn; edit may
// change the client's configuration.
func (f *fixture) dialOn(conn *source, edit func(*gossh.ClientConfig), signers ...gossh.Signer) (*gossh.Client, error) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	cfg := &gossh.ClientConfig{User: "anyone", Auth: []gossh.AuthMethod{gossh.PublicKeys(signers...)},
		HostKeyCallback: gossh.InsecureIgnoreHostKey()}
	if edit != nil {
		edit(cfg)
	}
	c, chans, reqs, err := gossh.NewClientConn(streamConn{st}, "node:4433", cfg)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	client := gossh.NewClient(c, chans, reqs)
	f.t.Cleanup(func() { _ = client.Close() })
	return client, nil
}

// failAuth makes one connection on conn that offers an unknown key and
// ends without authenticating, and waits until the plugin has finished
// with it (penalties are recorded before "ssh handshake failed").
func (f *fixture) failAuth(conn *source) {
	f.t.Helper()
	before := len(f.logs.lines("ssh handshake failed"))
	if _, err := f.dialOn(conn, nil, newSigner(f.t)); err == nil {
		f.t.Fatal("an unknown key authenticated")
	}
	waitFor(f.t, "the failed connection to end", func() bool { return len(f.logs.lines("ssh handshake failed")) > before })
}

// refusedBeforeHandshake reports whether a new stream on conn is closed
// by the plugin without a byte of SSH.
func refusedBeforeHandshake(t *testing.T, conn *source) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	_ = st.SetReadDeadline(time.Now().Add(10 * time.Second))
	// An admitted connection gets the server's identification line at
	// once; a refused one is closed without it.
	n, err := st.Read(make([]byte, 1))
	if n == 0 && isTimeout(err) {
		t.Fatalf("the plugin neither answered nor closed the stream: %v", err)
	}
	return n == 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// echoServer serves TCP echo on loopback until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() { // owned by the test's cleanup, which waits for it
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(conn, conn)
				_ = conn.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// refusals returns the "connection refused" log lines with reason.
func (f *fixture) refusals(reason string) []map[string]any {
	var out []map[string]any
	for _, l := range f.logs.lines("connection refused") {
		if l["reason"] == reason {
			out = append(out, l)
		}
	}
	return out
}

func TestLimitSettingsErrors(t *testing.T) {
	for _, tc := range []struct {
		settings map[string]any
		want     string
	}{
		{map[string]any{"kex_algorithms": []string{}}, "kex_algorithms: empty"},
		{map[string]any{"kex_algorithms": []string{"curve25519-sha256", "sntrup761x25519-sha512@openssh.com"}}, `kex_algorithms: "sntrup761x25519-sha512@openssh.com" is not supported`},
		{map[string]any{"macs": []string{}}, "macs: empty"},
		{map[string]any{"macs": []string{"hmac-md5"}}, `macs: "hmac-md5" is not supported`},
		{map[string]any{"max_startups": "10:30"}, "max_startups"},
		{map[string]any{"max_startups": "10:30:5"}, "max_startups"},
		{map[string]any{"max_startups": "10:0:100"}, "max_startups"},
		{map[string]any{"max_startups": "0"}, "max_startups"},
		{map[string]any{"max_startups": true}, "max_startups"},
		{map[string]any{"penalty_authfail": "soon"}, "penalty_authfail"},
		{map[string]any{"penalty_authfail": "-5s"}, "penalty_authfail"},
		{map[string]any{"penalty_max": "0s"}, "penalty_max"},
		{map[string]any{"penalty_min": "20m"}, "penalty_min"},
		{map[string]any{"penalty_max_sources": 0}, "penalty_max_sources"},
		{map[string]any{"max_sessions": 0}, "max_sessions"},
		{map[string]any{"max_forward_channels": -1}, "max_forward_channels"},
		{map[string]any{"max_session": 3}, `"max_session"`},
	} {
		_, err := sdktest.New(&ssh.Plugin{}, sdktest.Options{Settings: tc.settings, Capabilities: hostKeyGrant()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("settings %v: error %v; want one naming %s", tc.settings, err, tc.want)
		}
	}
	for _, ok := range []map[string]any{
		{"max_startups": 10}, {"max_startups": "10:30:100"}, {"penalty_authfail": "0s"},
		{"kex_algorithms": []string{"diffie-hellman-group14-sha1"}, "macs": []string{"hmac-sha1"}},
	} {
		h, err := sdktest.New(&ssh.Plugin{}, sdktest.Options{Settings: ok, Capabilities: hostKeyGrant()})
		if err != nil {
			t.Errorf("settings %v: %v", ok, err)
			continue
		}
		h.Close()
	}
}

// By default no SHA-1 key exchange or MAC is offered: a client that has
// nothing else is refused in the key exchange. Naming them in the
// settings brings them back (with a warning), for an old client.
func TestSHA1AlgorithmsRefused(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) { s["penalty_min"] = "0s" })
	kexSHA1 := func(cfg *gossh.ClientConfig) { cfg.KeyExchanges = []string{gossh.InsecureKeyExchangeDH14SHA1} }
	macSHA1 := func(cfg *gossh.ClientConfig) {
		cfg.Ciphers, cfg.MACs = []string{gossh.CipherAES128CTR}, []string{gossh.HMACSHA1, gossh.InsecureHMACSHA196}
	}
	if _, err := f.dialOn(f.conn, kexSHA1, f.alice); err == nil || !strings.Contains(err.Error(), "no common algorithm for key exchange") {
		t.Fatalf("a client offering only diffie-hellman-group14-sha1: %v; want no common key exchange", err)
	}
	if _, err := f.dialOn(f.conn, macSHA1, f.alice); err == nil || !strings.Contains(err.Error(), "no common algorithm for client to server MAC") {
		t.Fatalf("a client offering only hmac-sha1 (with AES-CTR): %v; want no common MAC", err)
	}
	// SHA-2 key exchanges and MACs work; the AEAD ciphers need no MAC.
	for _, edit := range []func(*gossh.ClientConfig){
		func(cfg *gossh.ClientConfig) { cfg.KeyExchanges = []string{gossh.KeyExchangeDH14SHA256} },
		func(cfg *gossh.ClientConfig) { cfg.KeyExchanges = []string{gossh.KeyExchangeDH16SHA512} },
		func(cfg *gossh.ClientConfig) { cfg.KeyExchanges = []string{gossh.KeyExchangeECDHP384} },
		func(cfg *gossh.ClientConfig) { cfg.KeyExchanges = []string{"curve25519-sha256@libssh.org"} },
		func(cfg *gossh.ClientConfig) {
			cfg.Ciphers, cfg.MACs = []string{gossh.CipherAES256CTR}, []string{gossh.HMACSHA512}
		},
		func(cfg *gossh.ClientConfig) {
			cfg.Ciphers, cfg.MACs = []string{gossh.CipherAES128GCM}, []string{gossh.HMACSHA1}
		},
	} {
		c, err := f.dialOn(f.conn, edit, f.alice)
		if err != nil {
			t.Fatalf("a client with SHA-2 algorithms: %v", err)
		}
		if out, _, _ := run(t, c, "echo ok", nil); out != "ok\n" {
			t.Fatalf("exec: %q", out)
		}
	}
	// Failing the key exchange is not failing to authenticate: even with
	// penalty_min = 0s the source is not penalised.
	if len(f.logs.lines("source penalised")) != 0 {
		t.Fatalf("a key exchange failure penalised the source:\n%s", f.logs)
	}

	f = newFixture(t, func(_ string, s map[string]any) {
		s["kex_algorithms"] = []string{gossh.KeyExchangeCurve25519, gossh.InsecureKeyExchangeDH14SHA1}
		s["macs"] = []string{gossh.HMACSHA256ETM, gossh.HMACSHA1}
	})
	for _, edit := range []func(*gossh.ClientConfig){kexSHA1, macSHA1} {
		if _, err := f.dialOn(f.conn, edit, f.alice); err != nil {
			t.Fatalf("a SHA-1 client once the settings name its algorithms: %v", err)
		}
	}
	if w := f.logs.lines("SHA-1 algorithms enabled by the settings; offer them only while a client needs them"); len(w) != 1 ||
		w[0]["algorithms"] != "diffie-hellman-group14-sha1,hmac-sha1" {
		t.Fatalf("no warning naming the SHA-1 algorithms the settings enable:\n%s", f.logs)
	}
}

// More than max_sessions session channels open at once on one SSH
// connection are refused with "resource shortage", logged once; the
// connection, its open sessions and other connections go on working, and
// a client running commands one after another at the limit is not
// refused.
func TestMaxSessions(t *testing.T) {
	f := newFixture(t, nil) // the default, 10
	c := f.mustDial(f.alice)
	type open struct {
		ch   gossh.Channel
		reqs <-chan *gossh.Request
	}
	var sessions []open
	for i := range 10 {
		ch, reqs, err := c.OpenChannel("session", nil)
		if err != nil {
			t.Fatalf("session %d of 10: %v", i+1, err)
		}
		sessions = append(sessions, open{ch, reqs})
	}
	for range 5 {
		_, _, err := c.OpenChannel("session", nil)
		var oce *gossh.OpenChannelError
		if !errors.As(err, &oce) || oce.Reason != gossh.ResourceShortage || !strings.Contains(oce.Message, "max_sessions = 10") {
			t.Fatalf("an 11th session: %v; want a resource shortage naming max_sessions", err)
		}
	}
	// An open session still runs a command; once it ended, the next
	// session opens at once.
	s := sessions[0]
	if ok, err := s.ch.SendRequest("exec", true, gossh.Marshal(struct{ Command string }{"echo still here"})); !ok || err != nil {
		t.Fatalf("exec on an open session: %v %v", ok, err)
	}
	if out, _ := io.ReadAll(s.ch); string(out) != "still here\n" {
		t.Fatalf("exec on an open session: %q", out)
	}
	for range s.reqs { // exit-status, then the close
	}
	for i := range 3 {
		if out, _, status := run(t, c, "echo again", nil); out != "again\n" || status != 0 {
			t.Fatalf("command %d at the limit: %q %d", i+1, out, status)
		}
	}
	// Other connections have their own sessions.
	if out, _, _ := run(t, f.mustDial(f.alice), "echo other", nil); out != "other\n" {
		t.Fatalf("another connection: %q", out)
	}
	_ = c.Close()
	waitFor(t, "the connection to end", func() bool { return len(f.logs.lines("ssh connection closed")) == 1 })
	refused := f.logs.lines("channel refused")
	if len(refused) != 1 || refused[0]["type"] != "session" || refused[0]["reason"] != "max_sessions" || refused[0]["@level"] != "info" {
		t.Fatalf("refused sessions logged %d times; want once:\n%s", len(refused), f.logs)
	}
	var counted bool
	for _, l := range f.logs.lines("ssh connection closed") {
		counted = counted || l["refused_max_sessions"] == float64(5)
	}
	if !counted {
		t.Fatalf("the closing line does not count the 5 refused sessions:\n%s", f.logs)
	}
}

// max_forward_channels bounds -L/-D channels and the connections made to
// an -R port, per SSH connection.
func TestMaxForwardChannels(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) {
		s["max_forward_channels"] = 2
		s["forward_rules"] = []map[string]any{{"target": "127.0.0.1:*", "action": "allow"}}
	})
	target := echoServer(t)
	c := f.mustDial(f.alice)
	var fwd []net.Conn
	for i := range 2 {
		conn, err := c.Dial("tcp", target)
		if err != nil {
			t.Fatalf("-L channel %d of 2: %v", i+1, err)
		}
		fwd = append(fwd, conn)
	}
	if _, err := c.Dial("tcp", target); err == nil || !strings.Contains(err.Error(), "resource shortage") {
		t.Fatalf("a third -L channel: %v; want a resource shortage", err)
	}
	if _, err := fwd[0].Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if b := make([]byte, 4); func() error { _, err := io.ReadFull(fwd[0], b); return err }() != nil || string(b) != "ping" {
		t.Fatalf("an open -L channel at the limit: %q", b)
	}
	for _, conn := range fwd {
		_ = conn.Close()
	}
	waitFor(t, "a -L channel to be allowed again", func() bool {
		conn, err := c.Dial("tcp", target)
		if err == nil {
			_ = conn.Close()
		}
		return err == nil
	})

	// -R: connections to the port past the limit are closed at once.
	r := f.mustDial(f.alice)
	ln, err := r.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, fc)
	}
	third, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	_ = third.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := third.Read(make([]byte, 1)); n != 0 || isTimeout(err) {
		t.Fatalf("a third connection to the -R port: %d bytes, %v; want it closed at once", n, err)
	}
	for _, fc := range held {
		_ = fc.Close()
	}
}

// Past max_startups connections that have not authenticated, new ones are
// closed before the handshake and logged; authenticated connections do
// not count.
func TestMaxStartups(t *testing.T) {
	f := newFixture(t, func(_ string, s map[string]any) { s["max_startups"] = "2" })
	var pending []*sdktest.Stream
	for range 2 {
		st := f.stream()
		// The server's identification line: the connection is admitted.
		b := make([]byte, 4)
		if _, err := io.ReadFull(st, b); err != nil || string(b) != "SSH-" {
			t.Fatalf("an admitted connection: %q %v", b, err)
		}
		pending = append(pending, st)
	}
	if !refusedBeforeHandshake(t, f.conn) {
		t.Fatal("a third unauthenticated connection was served past max_startups = 2")
	}
	if _, _, err := f.dial(f.alice); err == nil {
		t.Fatal("a client authenticated past max_startups = 2")
	}
	r := f.refusals("max_startups")
	if len(r) != 2 || r[0]["remote_addr"] != remoteAddr || r[0]["@level"] != "info" || r[0]["unauthenticated"] != float64(2) {
		t.Fatalf("refusals logged: %v\n%s", r, f.logs)
	}
	// One leaves: there is room again; an authenticated client frees its
	// place as soon as it has authenticated.
	_ = pending[0].CloseWrite()
	waitFor(t, "the abandoned handshake to end", func() bool { return len(f.logs.lines("ssh handshake failed")) == 1 })
	for i := range 3 {
		if out, _, _ := run(t, f.mustDial(f.alice), "echo in", nil); out != "in\n" {
			t.Fatalf("client %d: %q", i+1, out)
		}
	}
	_ = pending[1].CloseWrite()
}

// A source whose connections fail to authenticate accrues a penalty; once
// it reaches penalty_min its connections are refused before the handshake
// until it runs out. One mistake is free; other sources are not affected.
func TestPenaltyAfterFailedAuth(t *testing.T) {
	clock := newFakeClock()
	f := newFixture(t, nil) // 5s a failure, refused from 15s, at most 600s
	ssh.SetClock(f.handler, clock.Now)
	f.failAuth(f.conn)
	if _, err := f.dialOn(f.conn, nil, f.alice); err != nil {
		t.Fatalf("after one failed connection: %v", err)
	}
	f.failAuth(f.conn)
	f.failAuth(f.conn) // 15s accrued
	sameIP := f.connectFrom("192.0.2.7:50123", "tcp")
	for _, conn := range []*source{f.conn, sameIP} {
		if !refusedBeforeHandshake(t, conn) {
			t.Fatal("a penalised source was served")
		}
	}
	if _, err := f.dialOn(f.conn, nil, f.alice); err == nil {
		t.Fatal("a penalised source authenticated")
	}
	pen := f.logs.lines("source penalised")
	if len(pen) != 1 || pen[0]["source"] != "192.0.2.7/32" || pen[0]["penalty_secs"] != float64(15) {
		t.Fatalf("the penalty is not logged once with its source:\n%s", f.logs)
	}
	r := f.refusals("penalty")
	if len(r) != 3 || r[0]["remote_addr"] != remoteAddr || r[1]["remote_addr"] != "192.0.2.7:50123" || r[0]["@level"] != "info" {
		t.Fatalf("refusals logged: %v", r)
	}
	// Another address is not affected.
	if _, err := f.dialOn(f.connectFrom("192.0.2.8:40000", "tcp"), nil, f.alice); err != nil {
		t.Fatalf("another source: %v", err)
	}
	clock.Advance(14 * time.Second)
	if !refusedBeforeHandshake(t, f.conn) {
		t.Fatal("the penalty ended early")
	}
	clock.Advance(2 * time.Second)
	if _, err := f.dialOn(f.conn, nil, f.alice); err != nil {
		t.Fatalf("after the penalty ran out: %v", err)
	}

	// penalty_max caps what accrues (40s here: 30s); exceeding
	// max_auth_attempts is a failure like any other.
	clock = newFakeClock()
	f = newFixture(t, func(_ string, s map[string]any) {
		s["penalty_authfail"], s["penalty_min"], s["penalty_max"], s["max_auth_attempts"] = "20s", "30s", "30s", 1
	})
	ssh.SetClock(f.handler, clock.Now)
	f.failAuth(f.conn)
	f.failAuth(f.conn)
	if pen := f.logs.lines("source penalised"); len(pen) != 1 || pen[0]["penalty_secs"] != float64(30) {
		t.Fatalf("penalty past penalty_max:\n%s", f.logs)
	}
	clock.Advance(29 * time.Second)
	if !refusedBeforeHandshake(t, f.conn) {
		t.Fatal("the penalty ended early")
	}
	clock.Advance(2 * time.Second)
	if _, err := f.dialOn(f.conn, nil, f.alice); err != nil {
		t.Fatalf("after penalty_max: %v", err)
	}
}

// An IPv6 source is its /64; connections without an IP address (internal
// ones) are never penalised; penalty_authfail = 0s turns penalties off.
func TestPenaltySources(t *testing.T) {
	clock := newFakeClock()
	f := newFixture(t, func(_ string, s map[string]any) { s["penalty_min"] = "0s" })
	ssh.SetClock(f.handler, clock.Now)
	f.failAuth(f.connectFrom("[2001:db8:1:2::7]:4000", "quic"))
	if !refusedBeforeHandshake(t, f.connectFrom("[2001:db8:1:2:ffff::1]:5000", "quic")) {
		t.Fatal("another address of a penalised /64 was served")
	}
	if _, err := f.dialOn(f.connectFrom("[2001:db8:1:3::7]:4000", "quic"), nil, f.alice); err != nil {
		t.Fatalf("the next /64: %v", err)
	}
	if _, err := f.dialOn(f.connectFrom("[::ffff:192.0.2.7]:4000", "tcp"), nil, f.alice); err != nil {
		t.Fatalf("IPv4 after an IPv6 penalty: %v", err)
	}
	internal := f.connectFrom("internal", "internal")
	f.failAuth(internal)
	if _, err := f.dialOn(internal, nil, f.alice); err != nil {
		t.Fatalf("an internal connection after a failure: %v", err)
	}

	f = newFixture(t, func(_ string, s map[string]any) { s["penalty_authfail"], s["penalty_min"] = "0s", "0s" })
	for range 3 {
		f.failAuth(f.conn)
	}
	if _, err := f.dialOn(f.conn, nil, f.alice); err != nil {
		t.Fatalf("with penalty_authfail = 0s: %v", err)
	}
}
