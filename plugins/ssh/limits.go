package ssh

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds on what a client can make the plugin hold (docs/architecture.md
// D14), modelled on OpenSSH's sshd so operators meet settings they know:
//
//   - max_startups (MaxStartups): connections that have not finished
//     authenticating, across the plugin process. Past `start`, a new
//     connection is dropped with a probability rising from `rate`% to
//     100% at `full`, before the plugin sends a byte — a flood of
//     handshakes cannot starve the people who authenticate.
//   - penalty_* (PerSourcePenalties): a source — an IPv4 address, or an
//     IPv6 /64, since one host usually holds a whole /64 — whose
//     connections end without authenticating after trying accrues
//     penalty_authfail per connection, capped at penalty_max; once its
//     penalty reaches penalty_min its new connections are refused before
//     the handshake until the penalty runs out. A single failed
//     connection costs nothing; a password-guessing bot gets three
//     connections (with the defaults) per penalty it then waits out. The
//     table of sources is bounded by penalty_max_sources.
//   - max_sessions (MaxSessions) and max_forward_channels: channels open
//     at once on one SSH connection.
//
// Each refusal affects only the connection or channel that went past the
// bound. Refused connections are logged one line each (remote_addr,
// reason), which is what fail2ban reads; refused channels once per SSH
// connection, with a count when the connection closes.

// startups is max_startups: below start unauthenticated connections
// nobody is dropped; from start, a new one is dropped with probability
// rate% rising linearly to 100% at full.
type startups struct{ start, rate, full int }

// parseStartups parses "start:rate:full", or "n" for start = full = n.
// The constraints are OpenSSH's.
func parseStartups(v string) (startups, error) {
	const form = `want "start:rate:full" (e.g. "10:30:100": from 10 unauthenticated connections drop 30% of new ones, rising to all at 100) or one number`
	parts := strings.Split(strings.TrimSpace(v), ":")
	var n []int
	for _, p := range parts {
		i, err := strconv.Atoi(p)
		if err != nil {
			return startups{}, fmt.Errorf("%q: %s", v, form)
		}
		n = append(n, i)
	}
	var s startups
	switch len(n) {
	case 1:
		s = startups{start: n[0], rate: 100, full: n[0]}
	case 3:
		s = startups{start: n[0], rate: n[1], full: n[2]}
	default:
		return startups{}, fmt.Errorf("%q: %s", v, form)
	}
	switch {
	case s.start < 1:
		return startups{}, fmt.Errorf("%q: start must be 1 or more", v)
	case s.full < s.start:
		return startups{}, fmt.Errorf("%q: full (%d) must not be below start (%d)", v, s.full, s.start)
	case s.rate < 1 || s.rate > 100:
		return startups{}, fmt.Errorf("%q: rate must be a percentage from 1 to 100", v)
	}
	return s, nil
}

// drop decides for a new connection while pending connections have not
// finished authenticating; roll(100) draws a number in [0, 100).
func (s startups) drop(pending int, roll func(int) int) bool {
	switch {
	case pending < s.start:
		return false
	case pending >= s.full:
		return true
	}
	p := s.rate + (100-s.rate)*(pending-s.start)/(s.full-s.start)
	return roll(100) < p
}

// penaltyPolicy is the penalty_* settings.
type penaltyPolicy struct {
	authFail   time.Duration // per connection that tried and failed; 0: off
	min        time.Duration // accrued penalty from which a source is refused
	max        time.Duration // cap of the accrued penalty
	maxSources int           // sources remembered
}

// sourceOf is the penalty key of a remote address the node reports as
// "ip:port" (or a bare IP): the IPv4 address, or the IPv6 /64. Internal
// connections ("internal") and other transports have no IP, and no
// source.
func sourceOf(remote string) (netip.Prefix, bool) {
	var a netip.Addr
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		a = ap.Addr()
	} else if a, err = netip.ParseAddr(remote); err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	return p, err == nil
}

// penalty is one source's accrued penalty.
type penalty struct {
	source netip.Prefix
	expiry time.Time // the penalty runs out
	active bool      // it reached penalty_min: the source is refused until expiry
	index  int       // in penaltyTable.byExpiry
}

// penaltyTable holds the sources under penalty, bounded: expired entries
// go first, then, when full, the one whose penalty ends soonest — the
// worst offenders are the last forgotten.
type penaltyTable struct {
	bySource map[netip.Prefix]*penalty
	byExpiry expiryHeap
}

// expire removes every penalty that ran out by now.
func (t *penaltyTable) expire(now time.Time) {
	for len(t.byExpiry) > 0 && !t.byExpiry[0].expiry.After(now) {
		p := heap.Pop(&t.byExpiry).(*penalty)
		delete(t.bySource, p.source)
	}
}

// refused reports how long src is still refused for, if it is.
func (t *penaltyTable) refused(src netip.Prefix, now time.Time) (time.Duration, bool) {
	t.expire(now)
	p, ok := t.bySource[src]
	if !ok || !p.active {
		return 0, false
	}
	return p.expiry.Sub(now), true
}

// add accrues pol.authFail for src. It reports whether this made the
// source refused (it was not before), and its penalty left.
func (t *penaltyTable) add(src netip.Prefix, pol penaltyPolicy, now time.Time) (bool, time.Duration) {
	t.expire(now)
	p, ok := t.bySource[src]
	if !ok {
		if t.bySource == nil {
			t.bySource = map[netip.Prefix]*penalty{}
		}
		for len(t.byExpiry) >= max(pol.maxSources, 1) {
			old := heap.Pop(&t.byExpiry).(*penalty)
			delete(t.bySource, old.source)
		}
		p = &penalty{source: src, expiry: now}
		t.bySource[src] = p
		heap.Push(&t.byExpiry, p)
	}
	p.expiry = p.expiry.Add(pol.authFail)
	if p.expiry.Sub(now) > pol.max {
		p.expiry = now.Add(pol.max)
	}
	heap.Fix(&t.byExpiry, p.index)
	left := p.expiry.Sub(now)
	if !p.active && left >= pol.min {
		p.active = true
		return true, left
	}
	return false, left
}

// expiryHeap orders penalties by expiry, soonest first.
type expiryHeap []*penalty

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *expiryHeap) Push(x any) {
	p := x.(*penalty)
	p.index = len(*h)
	*h = append(*h, p)
}
func (h *expiryHeap) Pop() any {
	old := *h
	p := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return p
}

// gate is the plugin-wide state of the bounds on connections: how many
// have not finished authenticating, and the sources under penalty.
type gate struct {
	mu        sync.Mutex
	pending   int
	penalties penaltyTable
}

func (h *Plugin) now() time.Time {
	if now := h.clock.Load(); now != nil {
		return (*now)()
	}
	return time.Now()
}

// admit decides whether a new SSH connection from remote may begin its
// handshake, and logs the refusal if not. When it may, done is to be
// called once the connection authenticated or ended.
func (h *Plugin) admit(cfg *config, remote string) (done func(), ok bool) {
	g := &h.gate
	src, hasSource := sourceOf(remote)
	g.mu.Lock()
	if hasSource {
		if left, refused := g.penalties.refused(src, h.now()); refused {
			g.mu.Unlock()
			h.logger().Info("connection refused", "remote_addr", remote, "reason", "penalty",
				"source", src.String(), "penalty_secs", ceilSecs(left))
			return nil, false
		}
	}
	pending := g.pending
	if cfg.startups.drop(pending, rand.IntN) {
		g.mu.Unlock()
		h.logger().Info("connection refused", "remote_addr", remote, "reason", "max_startups", "unauthenticated", pending)
		return nil, false
	}
	g.pending++
	g.mu.Unlock()
	return sync.OnceFunc(func() {
		g.mu.Lock()
		g.pending--
		g.mu.Unlock()
	}), true
}

// penalise records a connection from remote that ended without
// authenticating after trying.
func (h *Plugin) penalise(cfg *config, remote string) {
	src, ok := sourceOf(remote)
	if !ok || cfg.penalty.authFail == 0 {
		return
	}
	h.gate.mu.Lock()
	refused, left := h.gate.penalties.add(src, cfg.penalty, h.now())
	h.gate.mu.Unlock()
	if refused {
		h.logger().Info("source penalised", "remote_addr", remote, "source", src.String(), "reason", "authfail", "penalty_secs", ceilSecs(left))
	}
}

func ceilSecs(d time.Duration) int64 { return int64(math.Ceil(d.Seconds())) }

// channelLimit bounds the channels of one kind open at once on one SSH
// connection (max_sessions, max_forward_channels).
type channelLimit struct {
	what    string // "session", "forward": the log's type
	setting string // the setting's key
	max     int

	mu      sync.Mutex
	open    int
	closing int           // server side closed; the client's close is on its way
	freed   chan struct{} // closed (and replaced) when a slot frees
	refused int           // channels refused for this limit
}

// closingWait bounds how long a channel open at the limit waits for a
// channel the server already closed to be released. The client's close
// arrives before its next open (one connection delivers in order), so the
// slot frees within moments; the wait only covers handing the close from
// gossh's reader to the goroutine that owns the channel. A client that
// never answers a close keeps its slot, and waits this long for nothing.
const closingWait = time.Second

// slot is one channel's place under a channelLimit.
type slot struct {
	l        *channelLimit
	closing  bool
	released bool
}

// acquire takes a slot, or reports that the limit is reached. Only when
// a channel the server closed is about to free its slot does it wait, at
// most closingWait.
func (l *channelLimit) acquire(ctx context.Context) (*slot, bool) {
	var timeout <-chan time.Time
	l.mu.Lock()
	for l.open >= l.max {
		if l.closing == 0 {
			l.mu.Unlock()
			return nil, false
		}
		if l.freed == nil {
			l.freed = make(chan struct{})
		}
		freed := l.freed
		l.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(closingWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-freed:
		case <-timeout:
			return nil, false
		case <-ctx.Done():
			return nil, false
		}
		l.mu.Lock()
	}
	l.open++
	l.mu.Unlock()
	return &slot{l: l}, true
}

// serverClosed marks the channel closed on the server's side, before the
// close is sent: the slot is then as good as free.
func (s *slot) serverClosed() {
	if s == nil {
		return
	}
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	if !s.closing && !s.released {
		s.closing = true
		s.l.closing++
	}
}

// release frees the slot (once; nil is fine).
func (s *slot) release() {
	if s == nil {
		return
	}
	l := s.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if s.released {
		return
	}
	s.released = true
	l.open--
	if s.closing {
		l.closing--
	}
	if l.freed != nil {
		close(l.freed)
		l.freed = nil
	}
}

// message is the refusal the client gets (OpenSSH's ssh prints it).
func (l *channelLimit) message() string {
	return fmt.Sprintf("too many %s channels open on this connection (%s = %d); close one first", l.what, l.setting, l.max)
}

// noteRefused counts a channel refused at the limit and returns the count
// so far (1: the first, which is logged).
func (l *channelLimit) noteRefused() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused++
	return l.refused
}

// refusedCount is how many channels the limit refused.
func (l *channelLimit) refusedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refused
}
