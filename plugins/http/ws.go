package httpplugin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"alknet.dev/alknet/plugins/sdk"
)

// WebSocket call sessions (docs/spec/handlers.md §HTTP, "WebSocket call
// sessions"): a WebSocket at /alknet/call is joined to an internal
// alknet/call connection of the node, dialed as the authenticated caller.
// Each binary message is one EventEnvelope of docs/spec/call.md, both
// ways; the internal connection is a single-stream transport, so the node
// sends its own call.requested frames (calls back to the client) on the
// same socket.

const (
	// wsPath is where WebSocket call sessions are served.
	wsPath = "/alknet/call"
	// wsSubprotocol is the subprotocol the server selects when the client
	// offers it; a client that sends its token as a subprotocol offers it
	// too, so that there is one to answer without echoing the token.
	wsSubprotocol = "alknet.call"
	// wsBearerPrefix starts the subprotocol that carries a bearer token
	// (browsers cannot set headers on a WebSocket).
	wsBearerPrefix = "alknet.bearer."
	// wsMaxMessage bounds one envelope in either direction: a message of
	// the client, and a frame of the node. It is the node's default
	// limits.max_frame_bytes.
	wsMaxMessage = 16 << 20
	// wsPingInterval is how often an open socket is pinged, so proxies
	// see it alive and a vanished client is noticed.
	wsPingInterval = 30 * time.Second
	// wsPongTimeout is how long a pong may take before the socket is
	// taken for dead.
	wsPongTimeout = 30 * time.Second
	// wsDialTimeout bounds joining the internal alknet/call connection.
	wsDialTimeout = 10 * time.Second
	// wsKeepBuffer is the largest buffer a socket keeps between messages.
	wsKeepBuffer = 1 << 20
)

func init() {
	extraRoutes = append(extraRoutes, func(p *Plugin, mux *http.ServeMux) {
		mux.HandleFunc(wsPath, p.websocket)
	})
}

// websocket upgrades /alknet/call: the Origin, the credentials and the
// per-identity bound are checked before the upgrade, and the internal
// connection is joined before it too, so that every refusal is an
// ordinary HTTP answer.
func (p *Plugin) websocket(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "", sdk.Errorf(sdk.CodeInvalidInput, "%s %s: open a WebSocket (GET with Upgrade: websocket)", r.Method, wsPath))
		return
	}
	cfg := p.cfg.Load()
	if !p.originAllowed(r) {
		writeError(w, http.StatusForbidden, "", &sdk.Error{Code: sdk.CodeForbidden,
			Message: "a page of this Origin may not open call sessions here (allowed_origins)"})
		return
	}
	token, hasBearer, berr := wsCredentials(r)
	if berr != nil {
		writeError(w, http.StatusBadRequest, "", berr)
		return
	}
	if !wsIsUpgrade(r) {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		writeError(w, http.StatusUpgradeRequired, "", sdk.Errorf(sdk.CodeInvalidInput, "%s is a WebSocket: connect with a WebSocket client over HTTP/1.1", wsPath))
		return
	}
	if hasBearer && token == "" {
		p.writeCallError(w, r, nil, "", "", errUnauthorized)
		return
	}
	c, cerr := p.callerOf(r, token)
	if cerr != nil {
		p.writeCallError(w, r, nil, "", "", cerr)
		return
	}
	defer c.done() // after the socket has finished: wsServe returns only then
	// max_streams_per_identity bounds WebSockets apart from SSE streams.
	key := "ws " + c.key
	if !p.streams.acquire(key, cfg.streamsPerID) {
		p.throttled(w, "open WebSockets")
		return
	}
	defer p.streams.release(key)
	ci, _ := r.Context().Value(connKey{}).(*connInfo) // callerOf found it

	dctx, cancel := context.WithTimeout(r.Context(), wsDialTimeout)
	conn, st, err := p.wsJoin(dctx, c)
	cancel()
	if err != nil {
		p.log().Debug("websocket: join alknet/call", "error", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "", &sdk.Error{Code: sdk.CodeInternal, Retryable: true,
			Message: "the node's call service is not available"})
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{wsSubprotocol},
		// The Origin was checked above against allowed_origins.
		InsecureSkipVerify: true,
	})
	if err != nil { // Accept answered the client
		_ = conn.Close(0, "websocket refused")
		_ = st.Close()
		return
	}
	p.stats.wsOpen.Add(1)
	defer p.stats.wsOpen.Add(-1)
	wsServe(ci.conn.Context(), ws, conn, st)
}

// wsJoin dials the node's alknet/call handler as the caller and opens the
// connection's one stream.
func (p *Plugin) wsJoin(ctx context.Context, c *caller) (*sdk.Conn, *sdk.Stream, error) {
	conn, err := p.host.DialInternal(ctx, c.actor, "alknet/call")
	if err != nil {
		return nil, nil, err
	}
	st, err := conn.OpenStream(ctx)
	if err != nil {
		_ = conn.Close(0, "no stream")
		return nil, nil, err
	}
	return conn, st, nil
}

// wsEnd is how a socket ends: a close code and reason for the client, or
// code -1 to drop the socket without a close handshake.
type wsEnd struct {
	code   websocket.StatusCode
	reason string
}

// wsServe pumps envelopes between the socket and the internal connection
// until either ends or done (the node connection the socket arrived on)
// is. Its goroutines are its own: it returns once they have all ended.
// Closing the internal connection makes the node cancel every handler
// serving a request from it (docs/spec/call.md §5): closing the socket
// aborts its calls.
func wsServe(done context.Context, ws *websocket.Conn, conn *sdk.Conn, st *sdk.Stream) {
	ws.SetReadLimit(wsMaxMessage)
	ctx, cancel := context.WithCancel(done)
	defer cancel()
	var (
		once sync.Once
		how  = wsEnd{websocket.StatusGoingAway, "the node connection closed"}
	)
	end := func(e wsEnd) {
		once.Do(func() { how = e })
		cancel()
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // owned by wsServe: ends when the socket fails or closes
		defer wg.Done()
		end(wsToCall(ws, st))
	}()
	go func() { // owned by wsServe: ends when the stream ends or the socket fails
		defer wg.Done()
		end(wsFromCall(ws, st))
	}()
	go func() { // owned by wsServe: ends with ctx or a missed pong
		defer wg.Done()
		wsPing(ctx, ws, end)
	}()
	<-ctx.Done()
	once.Do(func() {}) // how is settled from here on
	_ = conn.Close(0, "websocket closed")
	_ = st.Close()
	if how.code < 0 {
		_ = ws.CloseNow()
	} else {
		_ = ws.Close(how.code, how.reason)
	}
	wg.Wait()
}

// wsToCall writes each message of the socket to the stream as one frame.
// Text messages are taken like binary ones (the same JSON); a message
// that is empty, not UTF-8 or not JSON closes the socket with 1007.
func wsToCall(ws *websocket.Conn, st *sdk.Stream) wsEnd {
	buf := make([]byte, 4, 4<<10)
	for {
		_, rd, err := ws.Reader(context.Background())
		if err != nil {
			return wsEnd{code: -1} // closed by the client, or broken
		}
		frame, err := wsReadAll(buf[:4], rd)
		if err != nil {
			// Over the read limit the library has closed the socket
			// with 1009.
			return wsEnd{code: -1}
		}
		body := frame[4:]
		if len(body) == 0 || !utf8.Valid(body) || !json.Valid(body) {
			return wsEnd{websocket.StatusInvalidFramePayloadData, "each message is one JSON EventEnvelope"}
		}
		binary.BigEndian.PutUint32(frame[:4], uint32(len(body)))
		if _, err := st.Write(frame); err != nil { // Write copies frame
			return wsEnd{websocket.StatusGoingAway, "the call session ended"}
		}
		if cap(frame) <= wsKeepBuffer {
			buf = frame
		} else {
			buf = make([]byte, 4, 4<<10)
		}
	}
}

// wsReadAll appends what r has to b, growing b as the bytes arrive.
func wsReadAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// wsFromCall sends each frame of the stream to the socket as one binary
// message. A frame over wsMaxMessage closes the socket with 1009.
func wsFromCall(ws *websocket.Conn, st *sdk.Stream) wsEnd {
	br := bufio.NewReaderSize(st, 32<<10)
	var hdr [4]byte
	var body bytes.Buffer
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return wsEnd{websocket.StatusGoingAway, "the call session ended"}
		}
		n := binary.BigEndian.Uint32(hdr[:])
		switch {
		case n == 0:
			return wsEnd{websocket.StatusInternalError, "the node sent an empty frame"}
		case n > wsMaxMessage:
			return wsEnd{websocket.StatusMessageTooBig, "an envelope of the node exceeds 16 MiB"}
		}
		body.Reset()
		// The body grows with the bytes that arrive, never allocated
		// from the announced length (docs/spec/call.md §1).
		if _, err := io.CopyN(&body, br, int64(n)); err != nil {
			return wsEnd{websocket.StatusGoingAway, "the call session ended"}
		}
		if err := ws.Write(context.Background(), websocket.MessageBinary, body.Bytes()); err != nil {
			return wsEnd{code: -1}
		}
		if body.Cap() > wsKeepBuffer {
			body = bytes.Buffer{}
		}
	}
}

// wsPing pings the socket every wsPingInterval until ctx ends; a pong
// missing for wsPongTimeout drops the socket.
func wsPing(ctx context.Context, ws *websocket.Conn, end func(wsEnd)) {
	t := time.NewTicker(wsPingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// Not derived from ctx: a write cut off by its context would drop
		// the socket before its close handshake. Close ends the wait.
		pctx, cancel := context.WithTimeout(context.Background(), wsPongTimeout)
		err := ws.Ping(pctx)
		cancel()
		if err != nil {
			end(wsEnd{code: -1})
			return
		}
	}
}

// wsCredentials finds a bearer token in the offered subprotocols
// ("alknet.bearer.<token>"). A client that offers one must offer
// wsSubprotocol too (the answer names it, never the token), and must not
// also send an Authorization header.
func wsCredentials(r *http.Request) (token string, found bool, _ *sdk.Error) {
	offered := false
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, sp := range strings.Split(h, ",") {
			sp = strings.TrimSpace(sp)
			switch {
			case strings.EqualFold(sp, wsSubprotocol):
				offered = true
			case len(sp) >= len(wsBearerPrefix) && strings.EqualFold(sp[:len(wsBearerPrefix)], wsBearerPrefix):
				if found {
					return "", false, sdk.Errorf(sdk.CodeInvalidInput, "offer one %s<token> subprotocol, not several", wsBearerPrefix)
				}
				token, found = sp[len(wsBearerPrefix):], true
			}
		}
	}
	if !found {
		return "", false, nil
	}
	if !offered {
		return "", false, sdk.Errorf(sdk.CodeInvalidInput, "offer the subprotocol %q beside %s<token>: the server answers with it", wsSubprotocol, wsBearerPrefix)
	}
	if r.Header.Get("Authorization") != "" {
		return "", false, sdk.Errorf(sdk.CodeInvalidInput, "a token in the Authorization header and another in a subprotocol: send one")
	}
	return token, true, nil
}

// wsIsUpgrade reports whether r asks for a WebSocket.
func wsIsUpgrade(r *http.Request) bool {
	has := func(key, token string) bool {
		for _, h := range r.Header.Values(key) {
			for _, v := range strings.Split(h, ",") {
				if strings.EqualFold(strings.TrimSpace(v), token) {
					return true
				}
			}
		}
		return false
	}
	return has("Connection", "upgrade") && has("Upgrade", "websocket")
}
