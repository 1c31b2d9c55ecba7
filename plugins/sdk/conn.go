package sdk

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"

	"alknet.dev/alknet/proto/pluginpb"
)

// Identity is who the node resolved a peer, caller or credential to. Only
// the node states identities; a plugin reads them to decide its own work.
type Identity struct {
	ID        string
	Scopes    []string
	Resources map[string][]string
}

// HasScope reports whether the identity carries scope s.
func (i *Identity) HasScope(s string) bool {
	return i != nil && slices.Contains(i.Scopes, s)
}

// Allows reports whether the identity may do action on resource type typ:
// resources[typ] contains action (or is not empty when action is "").
func (i *Identity) Allows(typ, action string) bool {
	if i == nil {
		return false
	}
	actions := i.Resources[typ]
	if action == "" {
		return len(actions) > 0
	}
	return slices.Contains(actions, action)
}

func identityFrom(p *pluginpb.Identity) *Identity {
	if p == nil || p.GetId() == "" {
		return nil
	}
	id := &Identity{ID: p.GetId(), Scopes: p.GetScopes()}
	if len(p.GetResources()) > 0 {
		id.Resources = make(map[string][]string, len(p.GetResources()))
		for k, v := range p.GetResources() {
			id.Resources[k] = v.GetActions()
		}
	}
	return id
}

// Auth describes a connection: the identity the node resolved the peer to
// (nil: anonymous), its TLS fingerprint ("" without a client
// certificate), the ALPN, its address and the transport (quic, tcp-tls,
// tcp, internal).
type Auth struct {
	Identity    *Identity
	Fingerprint string
	ALPN        string
	RemoteAddr  string
	Transport   string
}

// addr is a net.Addr for a textual address.
type addr struct{ network, s string }

func (a addr) Network() string { return a.network }
func (a addr) String() string  { return a.s }

// Conn is a connection the node routed to the plugin, or one the plugin
// dialed with Host.DialInternal. Streams of the peer arrive through
// AcceptStream; OpenStream opens one to it.
type Conn struct {
	id     uint64
	auth   Auth
	caps   Capabilities
	host   *Host
	ctx    context.Context
	cancel context.CancelFunc

	// The connection's streams, for its end (endStreams).
	smu     sync.Mutex
	streams map[*Stream]struct{}
	ended   bool
}

// newConn makes the Conn of connection id; its streams end with ctx.
func newConn(id uint64, host *Host, a Auth, caps Capabilities) *Conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{id: id, host: host, auth: a, caps: caps, ctx: ctx, cancel: cancel}
	context.AfterFunc(ctx, c.endStreams)
	return c
}

// endStreams ends the streams of a connection that closed. A stream whose
// write side has finished (its FIN or reset handed to the node) is let
// finish as Close does: its last bytes may still be on their way through
// the node to the peer, and cancelling its RPC now would cut them off —
// a handler that writes its last words, closes the stream and returns
// must have them delivered. Any other stream is reset at once.
func (c *Conn) endStreams() {
	c.smu.Lock()
	c.ended = true
	streams := c.streams
	c.streams = nil
	c.smu.Unlock()
	for s := range streams {
		if s.writeEnded() {
			_ = s.Close()
		} else {
			s.cancel()
		}
	}
}

// track adds s to the connection's streams (false: the connection ended).
func (c *Conn) track(s *Stream) bool {
	c.smu.Lock()
	defer c.smu.Unlock()
	if c.ended {
		return false
	}
	if c.streams == nil {
		c.streams = map[*Stream]struct{}{}
	}
	c.streams[s] = struct{}{}
	return true
}

func (c *Conn) untrack(s *Stream) {
	c.smu.Lock()
	delete(c.streams, s)
	c.smu.Unlock()
}

// Auth returns who is on the other end.
func (c *Conn) Auth() Auth { return c.auth }

// Capabilities are the secrets granted to this plugin for this connection.
func (c *Conn) Capabilities() Capabilities { return c.caps }

// Context is done when the connection is closed.
func (c *Conn) Context() context.Context { return c.ctx }

// Host is the node, for nested calls and internal dials as this
// connection (pass the connection as the Actor).
func (c *Conn) Host() *Host { return c.host }

func (c *Conn) actorHandle() uint64 { return c.id }

// AcceptStream waits for the peer's next stream. It fails when the
// connection closes or the node drains: return from ServeConn then.
func (c *Conn) AcceptStream(ctx context.Context) (*Stream, error) {
	s, err := c.stream(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("accept stream: %w", err)
	}
	return s, nil
}

// EachStream serves a connection whose streams are independent requests:
// it runs serve on a goroutine of its own for each stream the peer opens,
// until AcceptStream fails (the connection closed or drains), then waits
// for every serve to return.
func (c *Conn) EachStream(ctx context.Context, serve func(*Stream)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() { // owned by EachStream, which waits for it
			defer wg.Done()
			serve(s)
		}()
	}
}

// OpenStream opens a stream to the peer (QUIC and internal connections;
// a TCP connection carries the one stream the peer opened).
func (c *Conn) OpenStream(ctx context.Context) (*Stream, error) {
	s, err := c.stream(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return s, nil
}

// stream starts the one Host.Stream RPC a stream costs: its first message
// names the connection, and the node answers once the stream exists. The
// RPC lives until the stream is closed and done, or the connection ends
// (endStreams); ctx bounds only the wait.
func (c *Conn) stream(ctx context.Context, accept bool) (*Stream, error) {
	if c.ctx.Err() != nil {
		return nil, net.ErrClosed
	}
	// Not derived from the connection's context: a closed stream's RPC
	// outlives the connection's end until it has delivered its last bytes.
	sctx, cancelRPC := context.WithCancel(context.Background())
	cs, err := c.host.c.Stream(sctx)
	if err != nil {
		cancelRPC()
		return nil, err
	}
	if err := cs.Send(&pluginpb.Chunk{Open: &pluginpb.StreamOpen{Conn: c.id, Accept: accept}}); err != nil {
		cancelRPC()
		return nil, err
	}
	var s *Stream
	cancel := func() {
		cancelRPC()
		c.untrack(s)
	}
	s = newStream(cs, cancel, addr{"alknet", "node"}, addr{"alknet", c.auth.RemoteAddr})
	if !c.track(s) {
		cancel()
		<-s.finished
		return nil, net.ErrClosed
	}
	select {
	case <-s.opened:
		return s, nil
	case <-s.finished:
		select {
		case <-s.opened:
			return s, nil // opened, and already ended by the peer
		default:
		}
		cancel()
		return nil, hostError(s.endErr)
	case <-ctx.Done():
		cancel()
		<-s.finished
		return nil, ctx.Err()
	}
}

// Close closes the connection with an application code (0 normal) and a
// reason the peer sees.
func (c *Conn) Close(code uint64, reason string) error {
	_, err := c.host.c.CloseConnection(context.Background(), &pluginpb.CloseConnectionRequest{Conn: c.id, Code: code, Reason: reason})
	c.cancel()
	return err
}

// NetConn adapts a Stream for libraries that want a net.Conn (it is one).
func NetConn(s *Stream) net.Conn { return s }
