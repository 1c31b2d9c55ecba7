package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// The browser console (docs/spec/handlers.md §HTTP, Console) driven by a
// headless Chromium.
//
// Chromium offers no Ed25519 among its TLS signature algorithms, so a node
// in the default raw-key mode shows it its browser certificate (ECDSA
// P-256, the key derived from the node key; `alknet id --browser-pin`).
// The tests run the console against such a node and against one in x509
// mode with an ECDSA certificate made here; either way Chromium trusts
// exactly that certificate's key (--ignore-certificate-errors-spki-list),
// not any certificate.

// chromiumPath is the browser the tests drive (ALKNET_CHROMIUM overrides).
func chromiumPath() string {
	if p := os.Getenv("ALKNET_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// consoleNode is an HTTP node in x509 mode.
type consoleNode struct {
	*httpNode
	// spkiPin is the base64 SHA-256 of the leaf's SubjectPublicKeyInfo,
	// Chromium's pin.
	spkiPin string
}

// startConsoleNode starts a node with diag operations; config is added to
// its alknet.toml. In raw-key mode Chromium pins the node's browser
// certificate; with x509, the node has a certificate for 127.0.0.1 issued
// by a CA made for the test.
func startConsoleNode(t *testing.T, config string, x509Mode bool) *consoleNode {
	t.Helper()
	for _, p := range []string{"alknet-plugin-http", "alknet-plugin-echo"} {
		if _, err := os.Stat(filepath.Join(binDir, p)); err != nil {
			t.Fatalf("%s was not built: %v", p, err)
		}
	}
	if !x509Mode {
		n := startHTTPNode(t, "enable_diag = true\n\n"+config)
		pin := strings.TrimSpace(n.node.ok("", "id", "--browser-pin"))
		if !strings.HasPrefix(pin, "sha256//") {
			t.Fatalf("alknet id --browser-pin: %q", pin)
		}
		return &consoleNode{httpNode: n, spkiPin: strings.TrimPrefix(pin, "sha256//")}
	}
	dir := t.TempDir()
	certFile, keyFile, leaf := consoleCertificate(t, dir)
	toml := fmt.Sprintf("enable_diag = true\n\n[tls]\nmode = \"x509\"\ncert_file = %q\nkey_file = %q\n\n%s\n", certFile, keyFile, config)
	n := &httpNode{t: t, node: newCLI(t, nil)}
	n.node.ok("", "init", "--show-mnemonic-once")
	path := writeFile(t, filepath.Join(dir, "alknet.toml"), toml, 0o600)
	n.srv = startServe(t, n.node, "--config", path)
	n.base = "https://" + n.srv.Addr
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	pin := base64.StdEncoding.EncodeToString(sum[:])
	n.pin = "sha256//" + pin
	n.client = pinnedClient(leaf.RawSubjectPublicKeyInfo)
	n.waitReady()
	return &consoleNode{httpNode: n, spkiPin: pin}
}

// consoleCertificate writes an ECDSA P-256 CA and a leaf for 127.0.0.1 it
// issued: the chain (leaf first) and the leaf's key (PKCS#8, 0600).
func consoleCertificate(t *testing.T, dir string) (certFile, keyFile string, leaf *x509.Certificate) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "alknet console test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(leafDER)
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	pkcs8, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, filepath.Join(dir, "node.crt"), string(chain), 0o644)
	keyFile = writeFile(t, filepath.Join(dir, "node.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})), 0o600)
	return certFile, keyFile, leaf
}

// browserPage is one tab of a headless Chromium that trusts the node's
// certificate, with what the page requested and logged.
type browserPage struct {
	ctx context.Context

	mu       sync.Mutex
	requests []string // URLs the page requested, WebSockets included
	console  []string // console messages and exceptions
	problems []string // exceptions and Content-Security-Policy violations
}

// newBrowserPage starts Chromium and opens a tab. Without Chromium the
// test fails: .ci/run installs Debian's chromium.
func newBrowserPage(t *testing.T, n *consoleNode) *browserPage {
	t.Helper()
	path := chromiumPath()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no Chromium at %s: install it (Debian: apt-get install chromium) or set ALKNET_CHROMIUM: %v", path, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// Chromium's own connections (updates, sync, field trials) are
		// refused on a closed network and only slow it down.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
		// Trust the node's key only: a pin, not every certificate.
		chromedp.Flag("ignore-certificate-errors-spki-list", n.spkiPin),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTime := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	b := &browserPage{ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.requests = append(b.requests, ev.Request.URL)
		case *network.EventWebSocketCreated:
			b.requests = append(b.requests, ev.URL)
		}
	})
	if err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() { // ends with the tab's context
		for m, err := range messages {
			if err != nil {
				return
			}
			line := fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m.Text)
			b.mu.Lock()
			b.console = append(b.console, line)
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				b.problems = append(b.problems, line)
			}
			b.mu.Unlock()
		}
	}()
	return b
}

// do runs actions, failing the test with what the page logged.
func (b *browserPage) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.log())
	}
}

func (b *browserPage) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return "console:\n  " + strings.Join(b.console, "\n  ")
}

// text is the text of the element with id.
func (b *browserPage) text(t *testing.T, id string) string {
	t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.ID(id)))
	if err != nil {
		t.Fatalf("text of #%s: %v\n%s", id, err, b.log())
	}
	return s
}

// eval evaluates a JavaScript expression (a promise is awaited) and
// decodes its value into v.
func (b *browserPage) eval(t *testing.T, what, expr string, v any) {
	t.Helper()
	raw, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, b.log())
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s: %s: %v", what, raw, err)
		}
	}
}

// wait polls expr in the page until it is truthy, for at most 30 s, and
// decodes that value into v. (chromedp.Poll compiles its predicate with
// new Function, which the console's Content-Security-Policy forbids.)
func (b *browserPage) wait(t *testing.T, what, expr string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	js := `new Promise((resolve) => {
		const tick = () => {
			let v;
			try { v = (` + expr + `); } catch (e) { v = undefined; }
			if (v) { resolve(v); } else { setTimeout(tick, 20); }
		};
		tick();
	})`
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js, chromedp.EvalAwaitPromise))
	if err != nil {
		page, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		t.Fatalf("waiting for %s: %v\npage:\n%s\n%s", what, err, page, b.log())
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s: %s: %v", what, raw, err)
		}
	}
}

// artifactDir is where screenshots go: $ALKNET_TEST_ARTIFACTS, else a
// directory of the test.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("ALKNET_TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// httpStat reads one counter of http/stats.
func httpStat(t *testing.T, n *consoleNode, token, name string) int64 {
	t.Helper()
	resp, body := n.do(http.MethodPost, "/call", token, strings.NewReader(`{"operation":"http/stats"}`))
	var out struct {
		Output map[string]int64 `json:"output"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil {
		t.Fatalf("http/stats: %d %s", resp.StatusCode, body)
	}
	return out.Output[name]
}

// TestHTTPConsoleRawKey: the console in Chromium, from a node with its own
// certificate (raw-key mode; the browser gets the ECDSA one).
func TestHTTPConsoleRawKey(t *testing.T) { testConsole(t, startConsoleNode(t, "", false)) }

// TestHTTPConsoleX509: the console from a node with a CA-issued certificate.
func TestHTTPConsoleX509(t *testing.T) { testConsole(t, startConsoleNode(t, "", true)) }

func testConsole(t *testing.T, n *consoleNode) {
	token := n.token("node:read")
	admin := n.token("admin")

	// The page and its assets carry the policy; the Go client checks the
	// headers the browser then enforces.
	resp, body := n.do(http.MethodGet, "/", "", nil)
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="node-id"`) ||
		!strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "connect-src 'self' wss://"+n.srv.Addr) {
		t.Fatalf("GET /: %d CSP %q\n%s", resp.StatusCode, csp, body)
	}

	b := newBrowserPage(t, n)
	b.do(t, "open the console", chromedp.Navigate(n.base+"/"), chromedp.WaitVisible(chromedp.ID("token")))

	t.Run("shows the node id and its plugins", func(t *testing.T) {
		// Anonymous: the id, and a note where the plugins would be.
		b.wait(t, "the node id", `document.getElementById("node-id").textContent === `+jsString(n.srv.FP), nil)
		b.wait(t, "the note about node:read", `!document.getElementById("plugins-note").hidden`, nil)
		b.do(t, "use a token", chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.ID("token-save")))
		var plugins map[string]string
		b.wait(t, "the plugins", `(() => {
			const rows = [...document.querySelectorAll("#plugins-body tr")];
			const m = Object.fromEntries(rows.map((r) => [r.dataset.plugin, r.children[2].textContent]));
			return !document.getElementById("plugins").hidden && m.http && m.echo ? m : null;
		})()`, &plugins)
		if plugins["http"] != "ready" || plugins["echo"] != "ready" {
			t.Fatalf("plugins shown: %v", plugins)
		}
		if id := b.text(t, "node-id"); id != n.srv.FP {
			t.Fatalf("node id shown %q, want %q", id, n.srv.FP)
		}
		if v := b.text(t, "node-version"); !strings.HasPrefix(v, "version ") {
			t.Fatalf("version shown: %q", v)
		}
		var stored string
		b.eval(t, "the token's place", `sessionStorage.getItem("alknet.console.token") + "|" + (localStorage.length === 0) + "|" + document.cookie`, &stored)
		if stored != token+"|true|" {
			t.Fatalf("the token is kept as %q: want sessionStorage only", stored)
		}
	})

	t.Run("lists operations and shows a schema", func(t *testing.T) {
		var names []string
		b.wait(t, "echo/say in the list", `(() => {
			const names = [...document.querySelectorAll("#op-list button.op")].map((e) => e.dataset.name);
			return names.includes("echo/say") && names.includes("echo/ticks") ? names : null;
		})()`, &names)
		b.do(t, "filter", chromedp.SendKeys(chromedp.ID("op-filter"), "ticks"))
		b.wait(t, "the filtered list", `(() => {
			const names = [...document.querySelectorAll("#op-list button.op")].map((e) => e.dataset.name);
			return names.length > 0 && names.every((n) => n.includes("ticks"));
		})()`, nil)
		b.do(t, "open echo/ticks", chromedp.Click(chromedp.CSS(`#op-list button[data-name="echo/ticks"]`)))
		b.wait(t, "the schema of echo/ticks", `!document.getElementById("op-detail").hidden && document.getElementById("op-name").textContent === "echo/ticks"`, nil)
		var schema struct {
			Required   []string                   `json:"required"`
			Properties map[string]json.RawMessage `json:"properties"`
		}
		b.eval(t, "the input schema shown", `JSON.parse(document.getElementById("op-input-schema").textContent)`, &schema)
		if _, ok := schema.Properties["interval_ms"]; !ok || len(schema.Required) != 1 || schema.Required[0] != "count" {
			t.Fatalf("input schema shown: %+v", schema)
		}
		if typ := b.text(t, "op-type"); typ != "subscription" {
			t.Fatalf("op type shown: %q", typ)
		}
		if op, _ := chromedp.Run(b.ctx, chromedp.Value(chromedp.ID("call-op"))); op != "echo/ticks" {
			t.Fatalf("the form names %q", op)
		}
		b.eval(t, "clear the filter", `(() => {
			const f = document.getElementById("op-filter");
			f.value = "";
			f.dispatchEvent(new Event("input"));
			return true;
		})()`, nil)
		b.wait(t, "the whole list", `!!document.querySelector('#op-list button[data-name="echo/say"]')`, nil)
	})

	t.Run("calls an operation from the form", func(t *testing.T) {
		b.do(t, "call echo/say",
			chromedp.SetValue(chromedp.ID("call-op"), "echo/say"),
			chromedp.SetValue(chromedp.ID("call-input"), `{"hello": "from the console", "n": 7}`),
			chromedp.Click(chromedp.ID("call-run")))
		var out map[string]any
		b.wait(t, "the output", `document.getElementById("call-status").className.includes("ok") && JSON.parse(document.getElementById("call-output").textContent)`, &out)
		if out["hello"] != "from the console" || out["n"] != float64(7) {
			t.Fatalf("output shown: %v", out)
		}
		// A call error is shown with its status and code.
		b.do(t, "call a missing operation",
			chromedp.SetValue(chromedp.ID("call-op"), "echo/nope"),
			chromedp.SetValue(chromedp.ID("call-input"), `{}`),
			chromedp.Click(chromedp.ID("call-run")))
		var status string
		b.wait(t, "the error", `document.getElementById("call-status").className.includes("error") && document.getElementById("call-status").textContent`, &status)
		if !strings.HasPrefix(status, "404 NOT_FOUND") {
			t.Fatalf("error shown: %q", status)
		}
		// Input that is not JSON is refused before any request.
		b.do(t, "call with bad input",
			chromedp.SetValue(chromedp.ID("call-op"), "echo/say"),
			chromedp.SetValue(chromedp.ID("call-input"), `{"a": `),
			chromedp.Click(chromedp.ID("call-run")))
		b.wait(t, "the input error", `document.getElementById("call-status").textContent.startsWith("the input is not JSON")`, nil)
	})

	// subscribe runs echo/ticks from the form over transport and returns
	// the item counts the list went through, as the page saw them.
	subscribe := func(t *testing.T, transport string) []int {
		t.Helper()
		b.eval(t, "watch the items", `(() => {
			window.itemCounts = [];
			const list = document.getElementById("sub-items");
			if (window.itemObserver) {
				window.itemObserver.disconnect();
			}
			window.itemObserver = new MutationObserver(() => window.itemCounts.push(list.children.length));
			window.itemObserver.observe(list, { childList: true });
			return true;
		})()`, nil)
		b.do(t, "subscribe to echo/ticks",
			chromedp.SetValue(chromedp.ID("sub-transport"), transport),
			chromedp.SetValue(chromedp.ID("call-op"), "echo/ticks"),
			chromedp.SetValue(chromedp.ID("call-input"), `{"count": 3, "interval_ms": 200}`),
			chromedp.Click(chromedp.ID("sub-start")))
		var status string
		b.wait(t, "the end of the subscription", `(() => {
			const s = document.getElementById("sub-status").textContent;
			return s.startsWith("completed") || s.startsWith("error") ? s : null;
		})()`, &status)
		if status != "completed · 3 items" {
			t.Fatalf("subscription status: %q", status)
		}
		var items []map[string]int
		b.eval(t, "the items", `[...document.querySelectorAll("#sub-items li")].map((li) => JSON.parse(li.textContent))`, &items)
		if len(items) != 3 || items[0]["n"] != 0 || items[2]["n"] != 2 {
			t.Fatalf("items shown: %v", items)
		}
		var counts []int
		b.eval(t, "the item counts", `window.itemCounts`, &counts)
		return counts
	}

	t.Run("shows a subscription item by item", func(t *testing.T) {
		counts := subscribe(t, "sse")
		// The list was cleared, then grew as the items came: it was seen
		// holding some of them before it held all three.
		var grew []int
		for _, c := range counts {
			if c > 0 {
				grew = append(grew, c)
			}
		}
		partial := false
		for i, c := range grew {
			partial = partial || c < 3
			if i > 0 && c <= grew[i-1] {
				partial = false
				break
			}
		}
		if !partial || grew[len(grew)-1] != 3 {
			t.Fatalf("the list went through %v: want the items as they arrive", counts)
		}
		t.Logf("the list held %v items as they arrived", grew)
	})

	t.Run("stops a subscription", func(t *testing.T) {
		b.do(t, "subscribe to a long echo/ticks",
			chromedp.SetValue(chromedp.ID("sub-transport"), "sse"),
			chromedp.SetValue(chromedp.ID("call-op"), "echo/ticks"),
			chromedp.SetValue(chromedp.ID("call-input"), `{"count": 100000, "interval_ms": 50}`),
			chromedp.Click(chromedp.ID("sub-start")))
		b.wait(t, "two items", `document.querySelectorAll("#sub-items li").length >= 2`, nil)
		if open := httpStat(t, n, admin, "sse_open"); open != 1 {
			t.Fatalf("sse_open while subscribed = %d", open)
		}
		b.do(t, "stop", chromedp.Click(chromedp.ID("sub-stop")))
		b.wait(t, "stopped", `document.getElementById("sub-status").textContent.startsWith("stopped") && !document.getElementById("sub-start").disabled`, nil)
		// The node saw the client go away and ended the subscription.
		deadline := time.Now().Add(10 * time.Second)
		for httpStat(t, n, admin, "sse_open") != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the SSE stream is still open on the node after stop")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("shows a subscription over the WebSocket", func(t *testing.T) {
		subscribe(t, "ws")
	})

	t.Run("WebSocket: JavaScript in the browser calls an operation and serves one that the node calls back", func(t *testing.T) {
		var got struct {
			Protocol string         `json:"protocol"`
			Said     map[string]any `json:"said"`
			Back     map[string]any `json:"back"`
			Seen     []any          `json:"seen"`
			Missing  struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"missing"`
			Failed struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"failed"`
			Items []map[string]int `json:"items"`
			How   string           `json:"how"`
		}
		b.eval(t, "a call session from the page", `(async () => {
			const alknet = await import("/console/alknet.js");
			const c = alknet.connect(alknet.defaultURL(), `+jsString(token)+`);
			await c.ready;
			const said = await c.call("echo/say", { from: "the browser" });
			const seen = [];
			c.serve("page/hello", async (input) => {
				seen.push(input);
				return { hello: input.name, served_by: "page" };
			});
			c.serve("page/fails", () => {
				throw Object.assign(new Error("the page says no"), { code: "INVALID_INPUT" });
			});
			const back = await c.call("diag/callback", { name: "page/hello", input: { name: "node" } });
			const failure = async (op) => {
				try {
					await c.call("diag/callback", { name: op, input: null });
					return null;
				} catch (e) {
					return { code: e.code, message: e.message };
				}
			};
			const missing = await failure("page/none");
			const failed = await failure("page/fails");
			const items = [];
			const how = await c.subscribe("echo/ticks", { count: 3 }, (item) => items.push(item)).done;
			const protocol = c.socket.protocol;
			c.close();
			return { protocol, said, back, seen, missing, failed, items, how };
		})()`, &got)
		if got.Protocol != "alknet.call" {
			t.Fatalf("subprotocol selected: %q", got.Protocol)
		}
		if got.Said["from"] != "the browser" {
			t.Fatalf("echo/say over the WebSocket: %v", got.Said)
		}
		if got.Back["hello"] != "node" || got.Back["served_by"] != "page" || len(got.Seen) != 1 {
			t.Fatalf("diag/callback → page/hello: %v (the page saw %v)", got.Back, got.Seen)
		}
		if got.Missing.Code == "" || !strings.Contains(got.Missing.Message, "page/none") {
			t.Fatalf("calling back an operation the page does not serve: %+v", got.Missing)
		}
		if got.Failed.Code == "" {
			t.Fatalf("calling back an operation that throws: %+v", got.Failed)
		}
		if len(got.Items) != 3 || got.Items[2]["n"] != 2 || got.How != "completed" {
			t.Fatalf("echo/ticks over the WebSocket: %v %q", got.Items, got.How)
		}

		// A token the node does not accept: no session.
		var refused string
		b.eval(t, "a session with a bad token", `(async () => {
			const alknet = await import("/console/alknet.js");
			const c = alknet.connect(alknet.defaultURL(), "alk_NOTAREALTOKEN");
			try {
				await c.ready;
				return "opened";
			} catch (e) {
				try {
					await c.call("echo/say", 1);
					return "called";
				} catch (e2) {
					return e.code + " " + e2.code;
				}
			}
		})()`, &refused)
		if refused != "INTERNAL INTERNAL" {
			t.Fatalf("a session with a bad token: %q", refused)
		}
	})

	t.Run("loads nothing from anywhere but the node", func(t *testing.T) {
		b.mu.Lock()
		defer b.mu.Unlock()
		wss := "wss://" + n.srv.Addr + "/"
		var sawWS bool
		for _, u := range b.requests {
			switch {
			case strings.HasPrefix(u, n.base+"/"), strings.HasPrefix(u, "data:"):
			case strings.HasPrefix(u, wss):
				sawWS = true
			default:
				t.Errorf("the page requested %s", u)
			}
		}
		if !sawWS || len(b.requests) < 5 {
			t.Errorf("requests seen: %v", b.requests)
		}
		if len(b.problems) > 0 {
			t.Errorf("exceptions or policy violations:\n  %s", strings.Join(b.problems, "\n  "))
		}
	})

	// A screenshot of the console with the last call and subscription.
	b.do(t, "show the say call",
		chromedp.SetValue(chromedp.ID("call-op"), "echo/say"),
		chromedp.SetValue(chromedp.ID("call-input"), `{"hello": "from the console"}`),
		chromedp.Click(chromedp.ID("call-run")))
	b.wait(t, "the output", `document.getElementById("call-status").className.includes("ok")`, nil)
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(artifactDir(t), strings.ToLower(strings.TrimPrefix(t.Name(), "TestHTTP"))+".png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
}

// jsString is s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
