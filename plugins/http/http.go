// Package httpplugin is the HTTP plugin (docs/spec/handlers.md §HTTP): the
// node's door for curl, browsers, scripts and LLM tools, on ALPNs h2 and
// http/1.1 of the node's TCP+TLS listener (the port number QUIC uses).
//
// The node terminates TLS and routes a connection here by its ALPN like any
// other; each stream arrives as a net.Conn and one net/http server serves
// them all, HTTP/2 with prior knowledge (the ALPN already chose it) or
// HTTP/1.1. Every operation call goes through the node's registry as the
// caller (Host.Invoke), so the node's gates apply unchanged: a bearer token
// becomes an identity through Host.Authenticate, no token is the
// connection's identity (anonymous without a client certificate), and a
// token the node does not accept is 401, never an anonymous call.
package httpplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/sdk"
)

// Version of the plugin (-ldflags "-X alknet.dev/alknet/plugins/http.Version=…").
var Version = "0.1.0"

// ALPNs served by the plugin.
var ALPNs = []string{"h2", "http/1.1"}

// Plugin is the HTTP plugin.
type Plugin struct {
	// Logger replaces sdk.Logger().
	Logger hclog.Logger

	cfg   atomic.Pointer[config]
	host  *sdk.Host
	ln    *listener
	srv   *http.Server
	stats counters

	requests limiter // concurrent requests per identity
	streams  limiter // SSE subscriptions and WebSockets per identity
	errs     errorStatuses

	mu      sync.Mutex // Configure
	started bool
}

var (
	_ sdk.ConnServer        = (*Plugin)(nil)
	_ sdk.OperationSet      = (*Plugin)(nil)
	_ sdk.Configurer        = (*Plugin)(nil)
	_ sdk.SettingsValidator = (*Plugin)(nil)
)

// Info describes the plugin.
func (p *Plugin) Info() sdk.Info {
	return sdk.Info{Name: "http", Version: Version, ALPNs: ALPNs,
		Description:  "HTTP gateway: JSON calls, SSE, OpenAPI, MCP, WebSocket call sessions, DNS over HTTPS and a browser console",
		ConfigSchema: json.RawMessage(configSchema)}
}

func (p *Plugin) log() hclog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return sdk.Logger()
}

// ValidateSettings checks [plugins.http] without applying it.
func (p *Plugin) ValidateSettings(settings json.RawMessage) error {
	_, err := parseSettings(settings)
	return err
}

// Configure applies the settings. The server's own timeouts and HTTP/2
// stream bound take a restart; everything else applies to the next
// request.
func (p *Plugin) Configure(_ context.Context, settings json.RawMessage, host *sdk.Host) error {
	c, err := parseSettings(settings)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started {
		old := p.cfg.Load()
		if old.headerTimeout != c.headerTimeout || old.idleTimeout != c.idleTimeout || old.streamsPerConn != c.streamsPerConn {
			return sdk.ErrRestartRequired
		}
		p.cfg.Store(c)
		return nil
	}
	p.cfg.Store(c)
	p.host = host
	p.ln = newListener()
	p.srv = p.newServer(c)
	p.started = true
	go func() { // owned by the plugin process: serves until it exits
		if err := p.srv.Serve(p.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log().Error("http server stopped", "error", err)
		}
	}()
	return nil
}

func (p *Plugin) newServer(c *config) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	// The node terminated TLS and the ALPN chose h2: the stream starts
	// with the HTTP/2 preface (prior knowledge), which net/http serves
	// as "unencrypted HTTP/2".
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           p.routes(),
		Protocols:         &protos,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: c.streamsPerConn, MaxReadFrameSize: 1 << 20},
		ReadHeaderTimeout: c.headerTimeout,
		IdleTimeout:       c.idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext: func(ctx context.Context, nc net.Conn) context.Context {
			if sc, ok := nc.(*streamConn); ok {
				return context.WithValue(ctx, connKey{}, sc.info)
			}
			return ctx
		},
		// net/http logs malformed requests from the network here: they are
		// the client's, counted, not the operator's to read per request.
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// ServeConn hands each stream of a connection the node routed here to
// the HTTP server, and returns once they are all closed.
func (p *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	if p.ln == nil {
		return fmt.Errorf("http plugin not configured")
	}
	ci := &connInfo{conn: c}
	defer ci.closeSessions()
	var wg sync.WaitGroup
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			break
		}
		p.stats.connections.Add(1)
		wg.Add(1)
		sc := &streamConn{Stream: s, info: ci, closed: wg.Done}
		if !p.ln.deliver(ctx, sc) {
			_ = sc.Close()
		}
	}
	wg.Wait()
	return nil
}

// connKey keys the connection's *connInfo in a request's context.
type connKey struct{}

// streamConn is one stream of a node connection as the net.Conn the HTTP
// server serves.
type streamConn struct {
	*sdk.Stream
	info   *connInfo
	once   sync.Once
	closed func()
}

func (s *streamConn) Close() error {
	err := s.Stream.Close()
	s.once.Do(s.closed)
	return err
}

// listener is the net.Listener the HTTP server accepts streams from.
type listener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newListener() *listener {
	return &listener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *listener) deliver(ctx context.Context, c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-ctx.Done():
		return false
	case <-l.done:
		return false
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *listener) Addr() net.Addr { return nodeAddr{} }

// nodeAddr is the listener's address: the node's, which the plugin does not
// see (TLS ends in the node).
type nodeAddr struct{}

func (nodeAddr) Network() string { return "alknet" }
func (nodeAddr) String() string  { return "node" }

// counters are what http/stats reports: no paths, no names (D10).
type counters struct {
	connections, requests, decoy, bodyTooLarge, throttled atomic.Int64
	status4xx, status5xx                                  atomic.Int64
	sseOpen, sseItems, wsOpen, mcpRequests                atomic.Int64
}

// Stats is the output of http/stats.
type Stats struct {
	Connections    int64 `json:"connections"`
	Requests       int64 `json:"requests"`
	DecoyRequests  int64 `json:"decoy_requests"`
	BodyTooLarge   int64 `json:"body_too_large"`
	Throttled      int64 `json:"throttled"`
	Status4xx      int64 `json:"status_4xx"`
	Status5xx      int64 `json:"status_5xx"`
	SSEOpen        int64 `json:"sse_open"`
	SSEItems       int64 `json:"sse_items"`
	WebSocketsOpen int64 `json:"websockets_open"`
	MCPRequests    int64 `json:"mcp_requests"`
}

// Operations: http/stats.
func (p *Plugin) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Query("http/stats", func(context.Context, *sdk.Call, struct{}) (Stats, error) {
			s := &p.stats
			return Stats{Connections: s.connections.Load(), Requests: s.requests.Load(), DecoyRequests: s.decoy.Load(),
				BodyTooLarge: s.bodyTooLarge.Load(), Throttled: s.throttled.Load(), Status4xx: s.status4xx.Load(),
				Status5xx: s.status5xx.Load(), SSEOpen: s.sseOpen.Load(), SSEItems: s.sseItems.Load(),
				WebSocketsOpen: s.wsOpen.Load(), MCPRequests: s.mcpRequests.Load()}, nil
		}).RequireAnyScope("http:stats", "admin").Describe("request counters of the HTTP plugin (no paths, no names)"),
	}
}
