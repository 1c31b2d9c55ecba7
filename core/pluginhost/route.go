package pluginhost

import (
	"context"
	"time"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
)

// route is the endpoint handler of a plugin's ALPNs: it hands each
// connection to the plugin's current instance and waits until either side
// closes it.
type route struct{ s *supervisor }

func (r route) ServeConn(ctx context.Context, c endpoint.Conn, ac auth.AuthContext) error {
	s := r.s
	in := s.current()
	if in == nil {
		return c.CloseWithError(endpoint.CodeUnavailable, "handler unavailable")
	}
	caps, err := s.h.capabilities(s.name, in.manifest)
	if err != nil {
		s.log.Error("cannot resolve capabilities; connection refused", "error", err)
		return c.CloseWithError(endpoint.CodeInternal, "internal")
	}
	ch := &connHandle{conn: c, identity: ac.Identity, drain: ctx, done: make(chan struct{})}
	id := in.addConn(ch)
	remote := ""
	if ac.RemoteAddr != nil {
		remote = ac.RemoteAddr.String()
	}
	octx, cancel := context.WithTimeout(in.ctx, 5*time.Second)
	_, err = in.pc.OpenConnection(octx, &pluginpb.OpenConnectionRequest{Conn: id, Capabilities: caps, Auth: &pluginpb.AuthContext{
		Identity: identityProto(ac.Identity), Alpn: ac.ALPN, RemoteAddr: remote, Fingerprint: ac.Fingerprint, Transport: ac.Transport}})
	cancel()
	if err != nil {
		return c.CloseWithError(endpoint.CodeUnavailable, "handler unavailable")
	}
	select {
	case <-ch.done:
		if ch.code != 0 {
			return c.CloseWithError(endpoint.CloseCode(ch.code), ch.reason)
		}
	case <-c.Context().Done():
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = in.pc.CloseConnection(cctx, &pluginpb.CloseConnectionRequest{Conn: id})
		cancel()
	case <-in.ctx.Done():
		return c.CloseWithError(endpoint.CodeUnavailable, "handler unavailable")
	}
	return nil
}
