package integration

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsConfig enables the diag/* operations (diag/callback, diag/sleep) and
// sets the WebSocket bounds the tests reach.
const wsConfig = `enable_diag = true

[plugins.http]
allowed_origins = ["https://console.example"]
max_streams_per_identity = 2
`

// wsEnvelope is an EventEnvelope (docs/spec/call.md §2).
type wsEnvelope struct {
	Type    string          `json:"type"`
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

// wsClient is an HTTP/1.1 client pinned to the node's key: the WebSocket
// upgrade needs HTTP/1.1. net/http sends no ALPN on an upgrade request,
// and the node routes by ALPN, so the client dials TLS itself, offering
// http/1.1.
func wsClient(t *testing.T, n *httpNode) *http.Client {
	t.Helper()
	key, err := hex.DecodeString(strings.TrimPrefix(n.srv.FP, "ed25519:"))
	if err != nil || len(key) != 32 {
		t.Fatalf("node fingerprint %q is not an ed25519 key", n.srv.FP)
	}
	spki := append([]byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}, key...)
	c := pinnedClient(spki)
	tr := c.Transport.(*http.Transport)
	tr.ForceAttemptHTTP2 = false
	cfg := tr.TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
	}
	return c
}

// wsDialer opens call sessions to one node.
type wsDialer struct {
	n      *httpNode
	client *http.Client
}

func newWSDialer(t *testing.T, n *httpNode) *wsDialer {
	return &wsDialer{n: n, client: wsClient(t, n)}
}

// dial opens /alknet/call; header and subprotocols are optional.
func (d *wsDialer) dial(header http.Header, subprotocols ...string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return websocket.Dial(ctx, "wss://"+d.n.srv.Addr+"/alknet/call", &websocket.DialOptions{
		HTTPClient: d.client, HTTPHeader: header, Subprotocols: subprotocols})
}

// open dials and fails the test unless the socket opens.
func (d *wsDialer) open(t *testing.T, header http.Header, subprotocols ...string) *websocket.Conn {
	t.Helper()
	c, resp, err := d.dial(header, subprotocols...)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("open the WebSocket: %v (status %d)\n%s", err, status, d.n.srv.logs)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// refused dials and returns the status of the refusal.
func (d *wsDialer) refused(t *testing.T, header http.Header, subprotocols ...string) *http.Response {
	t.Helper()
	c, resp, err := d.dial(header, subprotocols...)
	if err == nil {
		_ = c.CloseNow()
		t.Fatalf("the WebSocket opened; want a refusal")
	}
	if resp == nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	return resp
}

func wsBearer(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

func wsSend(t *testing.T, c *websocket.Conn, typ, id string, payload any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"type": typ, "id": id, "payload": payload})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(tctx(t, 10*time.Second), websocket.MessageBinary, b); err != nil {
		t.Fatalf("send %s: %v", typ, err)
	}
}

func wsRecv(t *testing.T, c *websocket.Conn) wsEnvelope {
	t.Helper()
	typ, b, err := c.Read(tctx(t, 30*time.Second))
	if err != nil {
		t.Fatalf("read an envelope: %v", err)
	}
	if typ != websocket.MessageBinary {
		t.Fatalf("a %v message; want binary", typ)
	}
	var e wsEnvelope
	if err := json.Unmarshal(b, &e); err != nil || e.Type == "" {
		t.Fatalf("not an envelope: %q (%v)", b, err)
	}
	return e
}

// wsCall sends one request and returns its single answer.
func wsCall(t *testing.T, c *websocket.Conn, id, op string, input any) wsEnvelope {
	t.Helper()
	wsSend(t, c, "call.requested", id, map[string]any{"operationId": op, "input": input})
	e := wsRecv(t, c)
	if e.ID != id {
		t.Fatalf("an answer for %q; want %q: %+v", e.ID, id, e)
	}
	return e
}

// wsOutput is the output of a call.responded envelope.
func wsOutput(t *testing.T, e wsEnvelope) string {
	t.Helper()
	if e.Type != "call.responded" {
		t.Fatalf("%s %s; want call.responded", e.Type, e.Payload)
	}
	var p struct {
		Output json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(e.Payload, &p); err != nil {
		t.Fatal(err)
	}
	return string(p.Output)
}

// wsCallHTTP calls op through /call and decodes its output into v.
func wsCallHTTP(t *testing.T, n *httpNode, token, op string, input any, v any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"operation": op, "input": input})
	resp, b := n.do("POST", "/call", token, strings.NewReader(string(body)))
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", op, resp.StatusCode, b)
	}
	var r struct {
		Output json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(r.Output, v); err != nil {
		t.Fatalf("%s: %s: %v", op, r.Output, err)
	}
}

// wsOpen is http/stats' websockets_open.
func wsOpen(t *testing.T, n *httpNode, statsToken string) int64 {
	var s struct {
		WebSocketsOpen int64 `json:"websockets_open"`
	}
	wsCallHTTP(t, n, statsToken, "http/stats", nil, &s)
	return s.WebSocketsOpen
}

func TestHTTPWebSocket(t *testing.T) {
	n := startHTTPNode(t, wsConfig)
	d := newWSDialer(t, n)
	statsToken := n.token("http:stats")
	allClosed := func(t *testing.T) {
		t.Helper()
		waitFor(t, "every WebSocket closed (http/stats)", func() bool { return wsOpen(t, n, statsToken) == 0 })
	}

	t.Run("call", func(t *testing.T) {
		c := d.open(t, wsBearer(n.token("echo:caps")))
		in := map[string]any{"hello": "websocket", "n": []int{1, 2, 3}}
		if out := wsOutput(t, wsCall(t, c, "1", "/echo/say", in)); out != `{"hello":"websocket","n":[1,2,3]}` {
			t.Fatalf("echo/say answered %s", out)
		}
		// A text message carries the same JSON; answers are binary.
		req := `{"type":"call.requested","id":"t","payload":{"operationId":"echo/say","input":"text"}}`
		if err := c.Write(tctx(t, 10*time.Second), websocket.MessageText, []byte(req)); err != nil {
			t.Fatal(err)
		}
		if e := wsRecv(t, c); e.ID != "t" || wsOutput(t, e) != `"text"` {
			t.Fatalf("a text message: %+v", e)
		}
		// A subscription: N call.responded, then call.completed.
		wsSend(t, c, "call.requested", "s", map[string]any{"operationId": "/echo/ticks", "input": map[string]int{"count": 3}})
		for i := range 3 {
			if e := wsRecv(t, c); e.ID != "s" || wsOutput(t, e) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("tick %d: %+v", i, e)
			}
		}
		if e := wsRecv(t, c); e.ID != "s" || e.Type != "call.completed" {
			t.Fatalf("after the ticks: %+v", e)
		}
		if e := wsCall(t, c, "nf", "/no/such", nil); e.Type != "call.error" || !strings.Contains(string(e.Payload), `"NOT_FOUND"`) {
			t.Fatalf("an unknown operation: %+v", e)
		}
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Fatalf("close: %v", err)
		}
		allClosed(t)
	})

	t.Run("callback", func(t *testing.T) {
		c := d.open(t, wsBearer(n.token("echo:caps")))
		wsSend(t, c, "call.requested", "cb", map[string]any{"operationId": "/diag/callback",
			"input": map[string]any{"name": "client/double", "input": 21}})
		served := false
		for {
			e := wsRecv(t, c)
			if e.Type == "call.requested" {
				// The node calls the client on the socket: serve it.
				var p struct {
					OperationID string `json:"operationId"`
					Input       int    `json:"input"`
				}
				if err := json.Unmarshal(e.Payload, &p); err != nil || strings.TrimPrefix(p.OperationID, "/") != "client/double" || e.ID == "" {
					t.Fatalf("the node's request: %+v (%v)", e, err)
				}
				wsSend(t, c, "call.responded", e.ID, map[string]int{"output": p.Input * 2})
				served = true
				continue
			}
			if e.ID != "cb" {
				t.Fatalf("an envelope for %q: %+v", e.ID, e)
			}
			if out := wsOutput(t, e); out != "42" || !served {
				t.Fatalf("diag/callback answered %s (the client served the call: %v)", out, served)
			}
			break
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		allClosed(t)
	})

	t.Run("auth", func(t *testing.T) {
		resp := d.refused(t, wsBearer("alk_notavalidtoken0000000000000000"))
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Fatalf("a bad token in Authorization: %d %v", resp.StatusCode, resp.Header)
		}
		resp = d.refused(t, nil, "alknet.call", "alknet.bearer.alk_notavalidtoken0000000000000000")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a bad token in a subprotocol: %d", resp.StatusCode)
		}
		resp = d.refused(t, nil, "alknet.bearer.")
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("a bearer subprotocol without alknet.call: %d", resp.StatusCode)
		}
		resp = d.refused(t, nil, "alknet.call", "alknet.bearer.")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("an empty token in a subprotocol: %d", resp.StatusCode)
		}

		// Anonymous: echo/caps needs scope echo:caps.
		c := d.open(t, nil)
		if e := wsCall(t, c, "a", "/echo/caps", nil); e.Type != "call.error" || !strings.Contains(string(e.Payload), `"FORBIDDEN"`) {
			t.Fatalf("echo/caps without a token: %+v", e)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")

		// The token as a subprotocol acts as its identity, and the answer
		// names alknet.call, never the token.
		token := n.token("echo:caps")
		c, resp, err := d.dial(nil, "alknet.call", "alknet.bearer."+token)
		if err != nil {
			t.Fatalf("a token in a subprotocol: %v", err)
		}
		defer c.CloseNow()
		if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "alknet.call" {
			t.Fatalf("the answer's subprotocol: %q", got)
		}
		for k, vs := range resp.Header {
			for _, v := range vs {
				if strings.Contains(v, token) || strings.Contains(v, "alknet.bearer") {
					t.Fatalf("the answer's header %s carries the token: %q", k, v)
				}
			}
		}
		if c.Subprotocol() != "alknet.call" {
			t.Fatalf("negotiated subprotocol %q", c.Subprotocol())
		}
		if out := wsOutput(t, wsCall(t, c, "c", "/echo/caps", nil)); !strings.Contains(out, `"calls"`) {
			t.Fatalf("echo/caps with the token: %s", out)
		}
		if strings.Contains(n.srv.logs.String(), token) {
			t.Fatalf("the node's log carries the token")
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		allClosed(t)
	})

	t.Run("origin", func(t *testing.T) {
		token := n.token("echo:caps")
		h := wsBearer(token)
		h.Set("Origin", "https://evil.example")
		if resp := d.refused(t, h); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("a foreign Origin: %d", resp.StatusCode)
		}
		for _, origin := range []string{"https://console.example", "https://" + n.srv.Addr} {
			h.Set("Origin", origin)
			c := d.open(t, h)
			if out := wsOutput(t, wsCall(t, c, "o", "echo/say", origin)); out != fmt.Sprintf("%q", origin) {
				t.Fatalf("Origin %s: %s", origin, out)
			}
			_ = c.Close(websocket.StatusNormalClosure, "")
		}
		allClosed(t)
	})

	t.Run("close aborts calls", func(t *testing.T) {
		admin := n.token("admin")
		type diagStats struct {
			Cancelled int64 `json:"cancelled"`
			Running   int64 `json:"running"`
		}
		diag := func() diagStats {
			var s diagStats
			wsCallHTTP(t, n, "", "diag/stats", nil, &s)
			return s
		}
		echoInFlight := func() int {
			var s nodeStats
			wsCallHTTP(t, n, admin, "node/stats", nil, &s)
			for _, p := range s.Plugins {
				if p.Name == "echo" {
					return p.CallsActive
				}
			}
			t.Fatalf("node/stats lists no echo plugin: %+v", s)
			return 0
		}
		before := diag()
		c := d.open(t, wsBearer(n.token("echo:caps")))
		wsSend(t, c, "call.requested", "sleep", map[string]any{"operationId": "/diag/sleep", "input": map[string]int{"ms": 600000}})
		wsSend(t, c, "call.requested", "ticks", map[string]any{"operationId": "/echo/ticks",
			"input": map[string]int{"count": 1000000, "interval_ms": 60000}})
		waitFor(t, "diag/sleep and echo/ticks running", func() bool {
			return diag().Running == before.Running+1 && echoInFlight() == 1
		})
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close: %v", err)
		}
		waitFor(t, "both calls aborted", func() bool {
			s := diag()
			return s.Running == before.Running && s.Cancelled == before.Cancelled+1 && echoInFlight() == 0
		})
		allClosed(t)

		// Dropped without a close handshake, the same.
		before = diag()
		c = d.open(t, wsBearer(n.token("echo:caps")))
		wsSend(t, c, "call.requested", "sleep", map[string]any{"operationId": "/diag/sleep", "input": map[string]int{"ms": 600000}})
		waitFor(t, "diag/sleep running", func() bool { return diag().Running == before.Running+1 })
		_ = c.CloseNow()
		waitFor(t, "diag/sleep aborted", func() bool {
			s := diag()
			return s.Running == before.Running && s.Cancelled == before.Cancelled+1
		})
		allClosed(t)
	})

	t.Run("bound per identity", func(t *testing.T) {
		token := n.token("echo:caps")
		a := d.open(t, wsBearer(token))
		b := d.open(t, nil, "alknet.call", "alknet.bearer."+token)
		if got := wsOpen(t, n, statsToken); got != 2 {
			t.Fatalf("http/stats: %d WebSockets open; want 2", got)
		}
		resp := d.refused(t, wsBearer(token))
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("a third WebSocket: %d %v", resp.StatusCode, resp.Header)
		}
		// Another identity is not held back.
		other := d.open(t, wsBearer(n.token("echo:caps")))
		_ = other.Close(websocket.StatusNormalClosure, "")
		// Closing one makes room.
		_ = a.Close(websocket.StatusNormalClosure, "")
		var c *websocket.Conn
		waitFor(t, "room for another WebSocket", func() bool {
			var err error
			c, _, err = d.dial(wsBearer(token))
			return err == nil
		})
		if out := wsOutput(t, wsCall(t, c, "1", "echo/say", 1)); out != "1" {
			t.Fatalf("echo/say: %s", out)
		}
		_ = c.Close(websocket.StatusNormalClosure, "")
		_ = b.Close(websocket.StatusNormalClosure, "")
		allClosed(t)
	})

	t.Run("malformed input closes the socket", func(t *testing.T) {
		token := n.token("echo:caps")
		// Not JSON: refused by the plugin with 1007.
		c := d.open(t, wsBearer(token))
		if err := c.Write(tctx(t, 10*time.Second), websocket.MessageBinary, []byte("not json")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(tctx(t, 30*time.Second)); websocket.CloseStatus(err) != websocket.StatusInvalidFramePayloadData {
			t.Fatalf("after a message that is not JSON: %v", err)
		}
		// JSON but not an envelope: the node ends the call session
		// (docs/spec/call.md §1), and the socket closes with it.
		c = d.open(t, wsBearer(token))
		if err := c.Write(tctx(t, 10*time.Second), websocket.MessageBinary, []byte("[1,2]")); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(tctx(t, 30*time.Second)); websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Fatalf("after a message that is not an envelope: %v", err)
		}
		allClosed(t)
	})

	t.Run("not a websocket", func(t *testing.T) {
		resp, _ := n.do("GET", "/alknet/call", "", nil) // HTTP/2, no upgrade
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("GET without an upgrade: %d", resp.StatusCode)
		}
		resp, _ = n.do("POST", "/alknet/call", "", strings.NewReader("{}"))
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("POST: %d", resp.StatusCode)
		}
	})
}
