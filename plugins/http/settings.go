package httpplugin

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// Settings are the keys of [plugins.http] (README.md lists them).
type Settings struct {
	// MaxBodyBytes bounds a request body (default "4MiB"); a larger one
	// is answered 413 without being read.
	MaxBodyBytes *sdk.ByteSize `json:"max_body_bytes,omitempty"`
	// HeaderTimeout bounds the wait for a request's headers (default
	// "10s"): a slowloris client is closed at it.
	HeaderTimeout string `json:"header_timeout,omitempty"`
	// IdleTimeout closes a connection with no request for that long
	// (default "2m").
	IdleTimeout string `json:"idle_timeout,omitempty"`
	// CallTimeout bounds a /call or /batch item (default: the node's call
	// deadline, 30 s).
	CallTimeout string `json:"call_timeout,omitempty"`
	// MaxStreamsPerConnection bounds concurrent requests on one HTTP/2
	// connection (default 100).
	MaxStreamsPerConnection int `json:"max_streams_per_connection,omitempty"`
	// MaxRequestsPerIdentity bounds concurrent requests of one identity
	// (anonymous callers: of one remote address) (default 256); past it,
	// 429.
	MaxRequestsPerIdentity int `json:"max_requests_per_identity,omitempty"`
	// MaxStreamsPerIdentity bounds open SSE subscriptions and WebSockets
	// of one identity, each (default 16); past it, 429.
	MaxStreamsPerIdentity int `json:"max_streams_per_identity,omitempty"`
	// MaxBatch bounds the calls in one /batch (default 256).
	MaxBatch int `json:"max_batch,omitempty"`
	// AllowedOrigins are the Origin values (scheme://host[:port]) a browser
	// may send to /alknet/call and /mcp besides the node's own ("*": any).
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// DecoyDir serves unknown paths from a static directory instead of a
	// plain 404.
	DecoyDir string `json:"decoy_dir,omitempty"`
	// DecoyRedirect answers unknown paths with a 302 to this URL.
	DecoyRedirect string `json:"decoy_redirect,omitempty"`
	// Console serves the browser console at / (default true).
	Console *bool `json:"console,omitempty"`
	// MCP serves the Model Context Protocol at /mcp (default true).
	MCP *bool `json:"mcp,omitempty"`
	// DoH serves DNS over HTTPS (RFC 8484) at /dns-query, answered by
	// the operation dns/query (default true).
	DoH *bool `json:"doh,omitempty"`
}

// Defaults of the bounds (docs/architecture.md D14).
const (
	defaultMaxBody            = 4 << 20
	defaultHeaderTimeout      = 10 * time.Second
	defaultIdleTimeout        = 2 * time.Minute
	defaultCallTimeout        = 30 * time.Second
	defaultStreamsPerConn     = 100
	defaultRequestsPerID      = 256
	defaultStreamsPerIdentity = 16
	defaultMaxBatch           = 256
	maxHeaderBytes            = 64 << 10
)

// config is Settings checked, with defaults in place.
type config struct {
	maxBody        int64
	headerTimeout  time.Duration
	idleTimeout    time.Duration
	callTimeout    time.Duration
	streamsPerConn int
	requestsPerID  int
	streamsPerID   int
	maxBatch       int
	origins        []string
	decoyDir       string
	decoyRedirect  string
	console, mcp   bool
	doh            bool
	anyOrigin      bool
}

func parseSettings(raw json.RawMessage) (*config, error) {
	var s Settings
	if err := sdk.DecodeSettings("http", raw, &s); err != nil {
		return nil, err
	}
	c := &config{maxBody: defaultMaxBody, headerTimeout: defaultHeaderTimeout, idleTimeout: defaultIdleTimeout,
		callTimeout: defaultCallTimeout, streamsPerConn: defaultStreamsPerConn, requestsPerID: defaultRequestsPerID,
		streamsPerID: defaultStreamsPerIdentity, maxBatch: defaultMaxBatch, console: true, mcp: true, doh: true}
	if s.MaxBodyBytes != nil {
		if *s.MaxBodyBytes <= 0 {
			return nil, fmt.Errorf("http settings: max_body_bytes must be positive")
		}
		c.maxBody = int64(*s.MaxBodyBytes)
	}
	for _, d := range []struct {
		key string
		s   string
		to  *time.Duration
	}{{"header_timeout", s.HeaderTimeout, &c.headerTimeout}, {"idle_timeout", s.IdleTimeout, &c.idleTimeout}, {"call_timeout", s.CallTimeout, &c.callTimeout}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("http settings: %s = %q: want a positive Go duration such as \"10s\"", d.key, d.s)
		}
		*d.to = v
	}
	for _, n := range []struct {
		key string
		v   int
		to  *int
	}{{"max_streams_per_connection", s.MaxStreamsPerConnection, &c.streamsPerConn}, {"max_requests_per_identity", s.MaxRequestsPerIdentity, &c.requestsPerID},
		{"max_streams_per_identity", s.MaxStreamsPerIdentity, &c.streamsPerID}, {"max_batch", s.MaxBatch, &c.maxBatch}} {
		if n.v < 0 {
			return nil, fmt.Errorf("http settings: %s must not be negative", n.key)
		}
		if n.v > 0 {
			*n.to = n.v
		}
	}
	for _, o := range s.AllowedOrigins {
		if o == "*" {
			c.anyOrigin = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("http settings: allowed_origins entry %q: want scheme://host[:port], such as \"https://console.example\"", o)
		}
		c.origins = append(c.origins, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	if s.DecoyDir != "" && s.DecoyRedirect != "" {
		return nil, fmt.Errorf("http settings: decoy_dir and decoy_redirect are both set; keep one")
	}
	if s.DecoyDir != "" {
		if fi, err := os.Stat(s.DecoyDir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("http settings: decoy_dir %q is not a directory the plugin can read", s.DecoyDir)
		}
		c.decoyDir = s.DecoyDir
	}
	if s.DecoyRedirect != "" {
		u, err := url.Parse(s.DecoyRedirect)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("http settings: decoy_redirect %q: want an absolute http(s) URL", s.DecoyRedirect)
		}
		c.decoyRedirect = s.DecoyRedirect
	}
	if s.Console != nil {
		c.console = *s.Console
	}
	if s.MCP != nil {
		c.mcp = *s.MCP
	}
	if s.DoH != nil {
		c.doh = *s.DoH
	}
	return c, nil
}

const configSchema = `{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "max_body_bytes": {"type": ["integer", "string"]},
    "header_timeout": {"type": "string"},
    "idle_timeout": {"type": "string"},
    "call_timeout": {"type": "string"},
    "max_streams_per_connection": {"type": "integer", "minimum": 0},
    "max_requests_per_identity": {"type": "integer", "minimum": 0},
    "max_streams_per_identity": {"type": "integer", "minimum": 0},
    "max_batch": {"type": "integer", "minimum": 0},
    "allowed_origins": {"type": "array", "items": {"type": "string"}},
    "decoy_dir": {"type": "string"},
    "decoy_redirect": {"type": "string"},
    "console": {"type": "boolean"},
    "mcp": {"type": "boolean"},
    "doh": {"type": "boolean"}
  }
}`
