package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strconv"

	"google.golang.org/grpc/metadata"

	"alknet.dev/alknet/proto/pluginpb"
)

// Identity is who the core resolved the remote peer (or caller) to.
type Identity struct {
	ID        string              `json:"id"`
	Scopes    []string            `json:"scopes,omitempty"`
	Resources map[string][]string `json:"resources,omitempty"`
}

// HasScope reports whether the identity carries scope s.
func (i *Identity) HasScope(s string) bool {
	if i == nil {
		return false
	}
	for _, x := range i.Scopes {
		if x == s {
			return true
		}
	}
	return false
}

func identityFrom(b []byte) *Identity {
	if len(b) == 0 {
		return nil
	}
	var id Identity
	if json.Unmarshal(b, &id) != nil || id.ID == "" {
		return nil
	}
	return &id
}

// Auth describes a connection: resolved identity (nil if anonymous), the
// client's TLS fingerprint, the ALPN, the remote address and transport.
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

// Conn is a connection the core routed to this plugin. Streams of the
// remote peer arrive through AcceptStream; OpenStream opens one to it.
type Conn struct {
	id     uint64
	auth   Auth
	caps   Capabilities
	host   pluginpb.HostClient
	ctx    context.Context
	cancel context.CancelFunc
}

// Auth returns who is on the other end.
func (c *Conn) Auth() Auth { return c.auth }

// Capabilities are the secrets granted to this plugin for this connection.
func (c *Conn) Capabilities() Capabilities { return c.caps }

// Context is done when the core closed the connection.
func (c *Conn) Context() context.Context { return c.ctx }

// AcceptStream waits for the remote peer's next stream. It fails when the
// connection closes or the node drains: return from ServeConn then.
func (c *Conn) AcceptStream(ctx context.Context) (*Stream, error) {
	ref, err := c.host.AcceptStream(ctx, &pluginpb.ConnRef{ConnId: c.id})
	if err != nil {
		return nil, fmt.Errorf("accept stream: %w", err)
	}
	return c.attach(ref)
}

// OpenStream opens a stream to the remote peer (QUIC connections only).
func (c *Conn) OpenStream(ctx context.Context) (*Stream, error) {
	ref, err := c.host.OpenStream(ctx, &pluginpb.ConnRef{ConnId: c.id})
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	return c.attach(ref)
}

func (c *Conn) attach(ref *pluginpb.StreamRef) (*Stream, error) {
	return attachStream(c.ctx, c.host, ref, c.auth.RemoteAddr)
}

func attachStream(parent context.Context, host pluginpb.HostClient, ref *pluginpb.StreamRef, remote string) (*Stream, error) {
	ctx, cancel := context.WithCancel(parent)
	ctx = metadata.AppendToOutgoingContext(ctx,
		pluginpb.MetaConnID, strconv.FormatUint(ref.GetConnId(), 10),
		pluginpb.MetaStreamID, strconv.FormatUint(ref.GetStreamId(), 10))
	cs, err := host.Stream(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("attach stream: %w", err)
	}
	return newStream(cs, cancel, addr{"alknet", "node"}, addr{"alknet", remote}), nil
}

// Close closes the connection with an application code (0 normal).
func (c *Conn) Close(code uint64, reason string) error {
	_, err := c.host.CloseConnection(context.Background(), &pluginpb.CloseConnectionRequest{ConnId: c.id, Code: code, Reason: reason})
	c.cancel()
	return err
}

// NetConn adapts a Stream for libraries that want a net.Conn (it is one).
func NetConn(s *Stream) net.Conn { return s }
