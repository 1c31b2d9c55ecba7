package httpplugin

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// Bounds of the per-connection token cache.
const (
	// sessionTTL is how long a token stays resolved on one connection
	// before the node is asked again (a revoked token stops working
	// within it).
	sessionTTL = 30 * time.Second
	// maxSessionsPerConn bounds the tokens one connection keeps resolved.
	maxSessionsPerConn = 8
)

// connInfo is what the plugin keeps for one node connection: the tokens
// presented on it, resolved to sessions, so HTTP/2 requests on one
// connection do not each ask the node.
type connInfo struct {
	conn     *sdk.Conn
	mu       sync.Mutex
	sessions map[[32]byte]*sessionRef
}

// sessionRef is a resolved token, counted by the requests using it: one
// that expired or was evicted is ended when the last of them finishes.
type sessionRef struct {
	s    *sdk.Session
	at   time.Time
	refs int
	dead bool
}

func (ci *connInfo) closeSessions() {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	for k, r := range ci.sessions {
		ci.retireLocked(k, r)
	}
}

// retireLocked drops r from the cache, ending it now or when its last
// request finishes.
func (ci *connInfo) retireLocked(k [32]byte, r *sessionRef) {
	delete(ci.sessions, k)
	r.dead = true
	if r.refs == 0 {
		go r.s.Close() // an RPC to the node; nothing waits for it
	}
}

func (ci *connInfo) release(r *sessionRef) {
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if r.refs--; r.refs == 0 && r.dead {
		go r.s.Close()
	}
}

// session resolves token on the connection (nil: the node accepts nobody
// with it). The caller calls ci.release(ref) when its request is done.
func (ci *connInfo) session(ctx context.Context, host *sdk.Host, token string) (*sessionRef, error) {
	key := sha256.Sum256([]byte(token))
	ci.mu.Lock()
	if r, ok := ci.sessions[key]; ok {
		if time.Since(r.at) < sessionTTL {
			r.refs++
			ci.mu.Unlock()
			return r, nil
		}
		ci.retireLocked(key, r)
	}
	ci.mu.Unlock()
	s, err := host.Authenticate(ctx, ci.conn, sdk.CredentialToken, token)
	if err != nil || s == nil {
		return nil, err
	}
	ci.mu.Lock()
	defer ci.mu.Unlock()
	if ci.sessions == nil {
		ci.sessions = map[[32]byte]*sessionRef{}
	}
	if old, ok := ci.sessions[key]; ok { // resolved twice at once
		ci.retireLocked(key, old)
	}
	for len(ci.sessions) >= maxSessionsPerConn {
		var oldestKey [32]byte
		var oldest *sessionRef
		for k, r := range ci.sessions {
			if oldest == nil || r.at.Before(oldest.at) {
				oldestKey, oldest = k, r
			}
		}
		ci.retireLocked(oldestKey, oldest)
	}
	r := &sessionRef{s: s, at: time.Now(), refs: 1}
	ci.sessions[key] = r
	return r, nil
}

// caller is who a request acts as.
type caller struct {
	actor sdk.Actor
	// id is the identity (nil: anonymous).
	id *sdk.Identity
	// key names the caller for the per-identity bounds: its identity, or
	// its remote address when anonymous.
	key string
	// token: the caller presented a bearer token.
	token bool
	// done releases the caller's session; call it when the request ends.
	done func()
}

// errUnauthorized is a credential the node did not accept.
var errUnauthorized = &sdk.Error{Code: sdk.CodeForbidden, Message: "token not accepted"}

// callerOf resolves the request's credentials: a bearer token in the
// Authorization header (or token, when the caller passed one from another
// place, such as a WebSocket subprotocol), else the connection's identity.
func (p *Plugin) callerOf(r *http.Request, token string) (*caller, *sdk.Error) {
	ci, _ := r.Context().Value(connKey{}).(*connInfo)
	if ci == nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "request without a node connection")
	}
	if h := r.Header.Get("Authorization"); h != "" && token == "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(rest) == "" {
			return nil, &sdk.Error{Code: sdk.CodeForbidden, Message: "Authorization: use \"Bearer <token>\" (an alk_… API key or a peer token)"}
		}
		token = strings.TrimSpace(rest)
	}
	if token == "" {
		id := ci.conn.Auth().Identity
		c := &caller{actor: ci.conn, id: id, key: "id:" + idString(id), done: func() {}}
		if id == nil {
			c.key = "addr:" + hostOf(ci.conn.Auth().RemoteAddr)
		}
		return c, nil
	}
	ref, err := ci.session(r.Context(), p.host, token)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "resolve the token: %v", err)
	}
	if ref == nil {
		return nil, errUnauthorized
	}
	return &caller{actor: ref.s, id: ref.s.Identity, key: "id:" + ref.s.Identity.ID, token: true,
		done: func() { ci.release(ref) }}, nil
}

func idString(id *sdk.Identity) string {
	if id == nil {
		return ""
	}
	return id.ID
}

func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// limiter counts what each caller holds open, against a bound.
type limiter struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *limiter) acquire(key string, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	if l.n[key] >= max {
		return false
	}
	l.n[key]++
	return true
}

func (l *limiter) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key]--; l.n[key] <= 0 {
		delete(l.n, key)
	}
}

// errorStatuses remembers the http_status an operation declares for its
// own error codes (from services/schema), briefly.
type errorStatuses struct {
	mu sync.Mutex
	m  map[string]declared
}

type declared struct {
	status map[string]int
	at     time.Time
}

const (
	errorStatusTTL    = time.Minute
	maxErrorStatusOps = 1024
)

// status is the HTTP status for a domain error code of op, asked of the
// node as the caller (who could call op, so can see its schema).
func (e *errorStatuses) status(ctx context.Context, p *Plugin, c *caller, op, code string) int {
	op = strings.TrimPrefix(op, "/")
	e.mu.Lock()
	d, ok := e.m[op]
	e.mu.Unlock()
	if !ok || time.Since(d.at) > errorStatusTTL {
		d = declared{status: map[string]int{}, at: time.Now()}
		out, err := p.host.Invoke(ctx, c.actor, "services/schema", map[string]string{"name": op})
		if err == nil {
			var spec struct {
				ErrorSchemas []struct {
					Code       string `json:"code"`
					HTTPStatus int    `json:"http_status"`
				} `json:"error_schemas"`
			}
			if json.Unmarshal(out, &spec) == nil {
				for _, es := range spec.ErrorSchemas {
					d.status[es.Code] = es.HTTPStatus
				}
			}
		}
		e.mu.Lock()
		if e.m == nil || len(e.m) >= maxErrorStatusOps {
			e.m = map[string]declared{}
		}
		e.m[op] = d
		e.mu.Unlock()
	}
	if s := d.status[code]; s >= 400 && s <= 599 {
		return s
	}
	return http.StatusInternalServerError
}
