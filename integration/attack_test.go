package integration

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

// The attack suite: a real node, attacked from loopback as an anonymous
// client would, with small bounded programs (docs/architecture.md D14).
// Throughout, a monitor connection keeps calling node/info and a
// subscription keeps streaming; neither may see an error.
func TestAttackSuite(t *testing.T) {
	node := newCLI(t, nil)
	node.ok("", "init", "--show-mnemonic-once")
	token := adminToken(t, node, "echo:caps")
	// The echo plugin alone: the other bundled plugins' background work
	// would count in the node's CPU time the attacks are measured by.
	cfg := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), "[limits]\nidle_timeout = \"3s\"\n"+
		"[plugins.ssh]\ndisabled = true\n[plugins.sftp]\ndisabled = true\n[plugins.fs]\ndisabled = true\n[plugins.git]\ndisabled = true\n", 0o600)
	srv := startServe(t, node, "--config", cfg, "--enable-diag")
	op := operatorConn(t, srv)
	corePid := srv.cmd.Process.Pid
	_, plugins := nodeInfo(t, op)
	echoPid := plugins["echo"].Pid
	if echoPid == 0 {
		t.Fatalf("the echo plugin does not run: %+v", plugins)
	}

	mon := startMonitor(t, srv)
	baseCore, baseEcho := rssMiB(t, corePid), rssMiB(t, echoPid)
	t.Logf("baseline RSS: core %.0f MiB, echo plugin %.0f MiB", baseCore, baseEcho)

	t.Run("frame headers announcing more than arrives", func(t *testing.T) {
		var conns []endpoint.Conn
		for range 10 {
			c, err := dial.Dial(tctx(t, 10*time.Second), srv.Addr, dial.Options{ALPN: call.ALPN, Peer: srv.FP})
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			for i := range 100 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				st, err := c.OpenStream(ctx)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				var hdr [4]byte
				announce := uint32(16 << 20) // limits.max_frame_bytes: read, growing with what arrives
				if i%2 == 0 {
					announce = 64 << 20 // the protocol's maximum: refused by the header
				}
				binary.BigEndian.PutUint32(hdr[:], announce)
				_, _ = st.Write(hdr[:])
				_, _ = st.Write(make([]byte, 1024))
			}
		}
		peak := rssMiB(t, corePid)
		if peak > 200 {
			t.Fatalf("node RSS %.0f MiB with 1,000 streams holding 1 KiB each (limit 200 MiB)", peak)
		}
		for _, c := range conns {
			_ = c.CloseWithError(0, "")
		}
		waitRSS(t, "core", corePid, baseCore+50)
		t.Logf("core RSS while attacked: %.0f MiB", peak)
	})

	t.Run("a huge number literal", func(t *testing.T) {
		huge := `{"count":` + strings.Repeat("7", 1_000_000) + `,"pad":"` + strings.Repeat("x", 900_000) + `"}`
		anon := callConn(t, srv, nil)
		// A benign request of the same size first: the node's first 2 MB
		// request grows its heap and its stream windows, which is not
		// what this measures.
		benign := `{"count":7,"pad":"` + strings.Repeat("x", 1_900_000) + `"}`
		if _, err := anon.Call(tctx(t, 30*time.Second), "diag/say", json.RawMessage(benign)); err != nil {
			t.Fatal(err)
		}
		// What receiving 2 MB costs the node on this machine, now (the
		// race detector and a busy machine make it vary): the huge literal
		// may cost that and 100 ms more, not the seconds a big-number
		// parse of a million digits takes.
		before := cpuMillis(t, corePid)
		if _, err := anon.Call(tctx(t, 30*time.Second), "diag/say", json.RawMessage(benign)); err != nil {
			t.Fatal(err)
		}
		limit := cpuMillis(t, corePid) - before + 100
		for _, c := range []struct{ op, code string }{
			{"diag/invoke", call.CodeForbidden},   // admin only: refused before the input is read
			{"echo/ticks", call.CodeInvalidInput}, // open: the literal is refused by its length
		} {
			before := cpuMillis(t, corePid)
			var ce *call.Error
			var err error
			if c.op == "echo/ticks" {
				var sub *call.Sub
				if sub, err = anon.Subscribe(tctx(t, 30*time.Second), c.op, json.RawMessage(huge)); err == nil {
					err = sub.Err()
				}
			} else {
				_, err = anon.Call(tctx(t, 30*time.Second), c.op, json.RawMessage(huge))
			}
			if !asCallError(err, &ce) || ce.Code != c.code {
				t.Fatalf("%s with a 10^6-digit literal: %v, want %s", c.op, err, c.code)
			}
			if used := cpuMillis(t, corePid) - before; used > limit {
				t.Fatalf("%s with a 10^6-digit literal cost the node %d ms of CPU (limit %d: a benign request of its size and 100 ms)", c.op, used, limit)
			}
		}
	})

	t.Run("subscriptions flooding one TCP connection", func(t *testing.T) {
		connsBefore := nodeConnections(t, op)
		for round := range 3 {
			c, err := dial.Dial(tctx(t, 10*time.Second), srv.Addr, dial.Options{ALPN: call.ALPN, Peer: srv.FP, TCP: true})
			if err != nil {
				t.Fatal(err)
			}
			st, err := c.OpenStream(tctx(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			w := bufio.NewWriterSize(st, 256<<10)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := range 20_000 {
					b, _ := call.Encode(call.EventRequested, fmt.Sprintf("r%d-%d", round, i),
						json.RawMessage(`{"operationId":"/echo/ticks","input":{"count":100000,"interval_ms":50}}`))
					if call.WriteFrame(w, b) != nil {
						return
					}
				}
				_ = w.Flush()
			}()
			// Some are served, most wait to be read; then the client goes.
			waitCalls(t, op, 50)
			_ = c.CloseWithError(0, "")
			<-done
			waitRSS(t, "core", corePid, baseCore+50)
			waitRSS(t, "echo plugin", echoPid, baseEcho+50)
			waitFor(t, "no CLOSE-WAIT socket on the node's port", func() bool { return closeWait(t, srv.Addr) == 0 })
			waitFor(t, "the connection's slot to be freed", func() bool { return nodeConnections(t, op) <= connsBefore })
		}
	})

	t.Run("idle TCP+TLS connections", func(t *testing.T) {
		var wg sync.WaitGroup
		var closed atomic.Int32
		for range 20 {
			c, err := dial.Dial(tctx(t, 10*time.Second), srv.Addr, dial.Options{ALPN: call.ALPN, Peer: srv.FP, TCP: true})
			if err != nil {
				t.Fatal(err)
			}
			st, err := c.OpenStream(tctx(t, 10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, err := st.Read(make([]byte, 1)); err != nil && !strings.Contains(err.Error(), "timeout") {
					closed.Add(1)
				}
			}()
		}
		wg.Wait()
		if closed.Load() != 20 {
			t.Fatalf("%d of 20 idle TCP+TLS connections were closed by the 3 s idle timeout within 20 s", closed.Load())
		}
	})

	t.Run("guessing tokens", func(t *testing.T) {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		cert, _ := identity.RawKeyTLSCertificate(k)
		guesser, err := call.New(nil).Connect(tctx(t, 10*time.Second), srv.Addr, call.Credentials{TLS: &cert, Peer: srv.FP, AuthToken: "alk_not-a-real-token"})
		if err != nil {
			t.Fatal(err)
		}
		defer guesser.Close()
		var forbidden, failed atomic.Int32
		var wg sync.WaitGroup
		for range 2000 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := guesser.Call(tctx(t, 30*time.Second), "echo/say", "guess")
				var ce *call.Error
				switch {
				case asCallError(err, &ce) && ce.Code == call.CodeForbidden:
					forbidden.Add(1)
				case err != nil:
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		if forbidden.Load() == 0 || forbidden.Load()+failed.Load() != 2000 {
			t.Fatalf("2,000 wrong tokens: %d refused, %d failed otherwise", forbidden.Load(), failed.Load())
		}
		select {
		case <-guesser.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the guessing connection is still open")
		}
		srv.waitLog("method=token", "result=reject", "too many rejected tokens")
		// The right token from another address works at once.
		_, k2, _ := ed25519.GenerateKey(rand.Reader)
		cert2, _ := identity.RawKeyTLSCertificate(k2)
		other, err := call.New(nil).Connect(tctx(t, 10*time.Second), srv.Addr, call.Credentials{TLS: &cert2, Peer: srv.FP, AuthToken: token, LocalIP: net.ParseIP("127.0.0.2")})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		start := time.Now()
		if _, err := other.Call(tctx(t, 10*time.Second), "echo/caps", nil); err != nil {
			t.Fatalf("the right token from 127.0.0.2: %v", err)
		}
		t.Logf("the right token from another address answered in %v", time.Since(start))
	})

	mon.stop(t)
}

// monitor keeps calling node/info and reading a subscription.
type monitor struct {
	sub    *call.Sub
	stopCh chan struct{}
	wg     sync.WaitGroup
	calls  atomic.Int64
	items  atomic.Int64
	mu     sync.Mutex
	errs   []string
}

func startMonitor(t *testing.T, srv *server) *monitor {
	m := &monitor{stopCh: make(chan struct{})}
	conn := callConn(t, srv, nil)
	sub, err := conn.Subscribe(context.Background(), "echo/ticks", map[string]int{"count": 1_000_000, "interval_ms": 20})
	if err != nil {
		t.Fatal(err)
	}
	fail := func(s string) {
		m.mu.Lock()
		m.errs = append(m.errs, s)
		m.mu.Unlock()
	}
	m.wg.Add(2)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.stopCh:
				return
			case <-time.After(20 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if _, err := conn.Call(ctx, "node/info", nil); err != nil {
				fail("node/info: " + err.Error())
			} else {
				m.calls.Add(1)
			}
			cancel()
		}
	}()
	go func() {
		defer m.wg.Done()
		for range sub.Items {
			m.items.Add(1)
		}
		select {
		case <-m.stopCh:
		default:
			fail(fmt.Sprintf("the subscription ended: %v", sub.Err()))
		}
	}()
	t.Cleanup(func() { sub.Close() })
	m.sub = sub
	return m
}

func (m *monitor) stop(t *testing.T) {
	t.Helper()
	close(m.stopCh)
	m.sub.Close()
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.errs) > 0 {
		t.Fatalf("the monitor saw %d errors during the attacks, the first: %s", len(m.errs), m.errs[0])
	}
	if m.calls.Load() < 10 || m.items.Load() < 10 {
		t.Fatalf("the monitor made %d calls and read %d items", m.calls.Load(), m.items.Load())
	}
	t.Logf("monitor: %d node/info calls and %d subscription items, no error", m.calls.Load(), m.items.Load())
}

// rssMiB is VmRSS of pid in MiB.
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// waitRSS waits until pid's RSS is at most limit MiB.
func waitRSS(t *testing.T, what string, pid int, limit float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rss := rssMiB(t, pid)
		if rss <= limit {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s RSS is %.0f MiB, above %.0f MiB, 30 s after the attack", what, rss, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cpuMillis is the CPU time pid has used (user + system), in ms.
func cpuMillis(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (in parentheses): utime and stime
	// are the 14th and 15th fields of the whole line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return (u + s) * 10 // clock ticks of 10 ms (USER_HZ = 100)
}

// closeWait counts sockets in CLOSE-WAIT on addr's port.
func closeWait(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	n := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			local := f[1]
			lp, _ := strconv.ParseInt(local[strings.LastIndexByte(local, ':')+1:], 16, 32)
			if int(lp) == p && f[3] == "08" {
				n++
			}
		}
	}
	return n
}

type nodeStats struct {
	Connections int `json:"connections"`
	Calls       []struct {
		InFlight int `json:"requests_in_flight"`
	} `json:"call_connections"`
	Plugins []struct {
		Name        string `json:"name"`
		CallsActive int    `json:"calls_in_flight"`
	} `json:"plugins"`
}

func stats(t *testing.T, op *call.Connection) nodeStats {
	t.Helper()
	out, err := op.Call(tctx(t, 10*time.Second), "node/stats", nil)
	if err != nil {
		t.Fatalf("node/stats: %v", err)
	}
	var s nodeStats
	if err := json.Unmarshal(out, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func nodeConnections(t *testing.T, op *call.Connection) int { return stats(t, op).Connections }

// waitCalls waits until the echo plugin serves at least n calls.
func waitCalls(t *testing.T, op *call.Connection, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d calls in the echo plugin", n), func() bool {
		for _, p := range stats(t, op).Plugins {
			if p.Name == "echo" && p.CallsActive >= n {
				return true
			}
		}
		return false
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
