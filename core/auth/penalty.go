package auth

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultIPv6Prefix is how many leading bits of an IPv6 address name one
// source: a host usually owns a whole /64, so limits and penalties that
// counted single addresses would be no limit at all.
const DefaultIPv6Prefix = 64

// Source is the source a remote address counts against: the IPv4 address,
// or the IPv6 prefix of v6Bits bits (an IPv4-mapped IPv6 address counts as
// IPv4). The zero Prefix means the address has no IP (internal
// connections, pipes).
func Source(a net.Addr, v6Bits int) netip.Prefix {
	var ip netip.Addr
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(v.IP)
	case nil:
		return netip.Prefix{}
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Prefix{}
		}
		ip = ap.Addr()
	}
	return SourceOf(ip, v6Bits)
}

// SourceOf is Source for an IP.
func SourceOf(ip netip.Addr, v6Bits int) netip.Prefix {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return netip.Prefix{}
	}
	bits := 32
	if ip.Is6() {
		bits = v6Bits
		if bits <= 0 || bits > 128 {
			bits = DefaultIPv6Prefix
		}
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Penalties counts failed authentications per source and says how long
// the next answer to that source waits: a delay that grows with each
// failure (Step per failure, at most Max), forgotten Window after the
// last failure. The table holds at most MaxSources entries; when it is
// full the entry whose failure is oldest gives way. Safe for concurrent use.
type Penalties struct {
	Step, Max, Window time.Duration
	MaxSources        int

	mu    sync.Mutex
	bySrc map[netip.Prefix]*penalty
}

type penalty struct {
	fails int
	last  time.Time
}

// NewPenalties returns a table with the node's defaults: 100 ms per
// failure, at most 5 s, forgotten after 10 minutes, 65,536 sources.
func NewPenalties() *Penalties {
	return &Penalties{Step: 100 * time.Millisecond, Max: 5 * time.Second, Window: 10 * time.Minute, MaxSources: 1 << 16}
}

// Fail records a failed authentication from src and returns how long its
// answer should wait. A zero src (no IP) is not counted.
func (p *Penalties) Fail(src netip.Prefix, now time.Time) time.Duration {
	if p == nil || !src.IsValid() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bySrc == nil {
		p.bySrc = map[netip.Prefix]*penalty{}
	}
	e := p.bySrc[src]
	if e == nil || now.Sub(e.last) > p.Window {
		if e == nil && len(p.bySrc) >= p.MaxSources {
			p.evict(now)
		}
		e = &penalty{}
		p.bySrc[src] = e
	}
	e.fails++
	e.last = now
	return min(time.Duration(e.fails)*p.Step, p.Max)
}

// Failures is how many recent failures src has.
func (p *Penalties) Failures(src netip.Prefix, now time.Time) int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.bySrc[src]; e != nil && now.Sub(e.last) <= p.Window {
		return e.fails
	}
	return 0
}

// evict drops expired entries, or the oldest one. Called with mu held.
func (p *Penalties) evict(now time.Time) {
	var oldest netip.Prefix
	var at time.Time
	for k, e := range p.bySrc {
		if now.Sub(e.last) > p.Window {
			delete(p.bySrc, k)
			continue
		}
		if at.IsZero() || e.last.Before(at) {
			oldest, at = k, e.last
		}
	}
	if len(p.bySrc) >= p.MaxSources {
		delete(p.bySrc, oldest)
	}
}

// Len is how many sources the table holds.
func (p *Penalties) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.bySrc)
}
