package endpoint

import (
	"fmt"
	"net"

	"alknet.dev/alknet/core/auth"
)

// admit applies the connection limits to an accepted QUIC connection.
func (e *Endpoint) admit(c Conn) bool {
	if !e.reserve(c.RemoteAddr(), c.Transport()) {
		_ = c.CloseWithError(CodeForbidden, "too many connections")
		return false
	}
	return true
}

// reserve counts a connection against its source's limit and the node's;
// false = refused (and logged). Every true must be paired with release.
// Sources are IPv4 addresses or IPv6 prefixes (limits.ipv6_prefix_len),
// and a source's entry is removed when its count drops to zero, so the
// table holds only sources with connections.
func (e *Endpoint) reserve(remote net.Addr, transport string) bool {
	if e.closed.Load() {
		return false
	}
	l := e.opts.Limits()
	src := auth.Source(remote, l.IPv6PrefixLen)
	e.srcMu.Lock()
	defer e.srcMu.Unlock()
	if l.MaxConnections > 0 && e.total >= l.MaxConnections {
		e.log.Info("connection rejected", "remote_addr", remote.String(), "transport", transport, "reason", fmt.Sprintf("the node has %d connections (limits.max_connections)", l.MaxConnections))
		return false
	}
	if l.MaxConnectionsPerIP > 0 && e.perSrc[src] >= l.MaxConnectionsPerIP {
		e.log.Info("connection rejected", "remote_addr", remote.String(), "transport", transport, "reason", fmt.Sprintf("too many connections from %s (max_connections_per_ip = %d)", src, l.MaxConnectionsPerIP))
		return false
	}
	e.perSrc[src]++
	e.total++
	return true
}

func (e *Endpoint) release(remote net.Addr) {
	src := auth.Source(remote, e.opts.Limits().IPv6PrefixLen)
	e.srcMu.Lock()
	defer e.srcMu.Unlock()
	if n, ok := e.perSrc[src]; ok {
		if n <= 1 {
			delete(e.perSrc, src)
		} else {
			e.perSrc[src] = n - 1
		}
		e.total--
	}
}

// Counts is how many connections the node holds, and from how many
// sources.
func (e *Endpoint) Counts() (connections, sources int) {
	e.srcMu.Lock()
	defer e.srcMu.Unlock()
	return e.total, len(e.perSrc)
}
