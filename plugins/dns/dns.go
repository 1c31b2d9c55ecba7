// Package dnsplugin is the DNS plugin (docs/spec/handlers.md, DNS): one
// port number, DNS over QUIC (RFC 9250, ALPN doq), over TLS (RFC 7858,
// ALPN dot on the node's TCP+TLS listener) and over HTTPS (RFC 8484,
// /dns-query of the HTTP plugin, which calls dns/query), plus an optional
// classic UDP/TCP listener. The DNS logic exists once (answer): every
// transport hands it a parsed query and the identity of who asked.
//
// It answers with authority for the zones of its settings, for the node's
// own names, and for self-certifying record sets (pkarr-compatible signed
// packets) published with dns/publish and replicated between nodes on
// ALPN alknet/dns. Names outside them are forwarded only for identities
// with scope dns:recurse (never an open resolver). The names clients ask
// for are never logged (docs/architecture.md D10): counters only.
package dnsplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"

	"alknet.dev/alknet/plugins/sdk"
)

// Version of the plugin (-ldflags "-X alknet.dev/alknet/plugins/dns.Version=…").
var Version = "0.1.0"

// ALPNs served by the plugin: DoQ on QUIC, DoT on TCP+TLS, and the
// replication of signed packets between nodes.
const (
	ALPNDoQ         = "doq"
	ALPNDoT         = "dot"
	ALPNReplication = "alknet/dns"
)

// Scopes the plugin checks (docs/spec/handlers.md, DNS).
const (
	ScopePublish = "dns:publish"
	ScopeRecurse = "dns:recurse"
)

// Plugin is the DNS plugin.
type Plugin struct {
	// Logger replaces sdk.Logger().
	Logger hclog.Logger

	cfg     atomic.Pointer[config]
	host    *sdk.Host
	signed  *signedStore
	fwd     atomic.Pointer[forwarder]
	classic atomic.Pointer[classic]
	stats   counters

	mu sync.Mutex // Configure and Close
}

var (
	_ sdk.ConnServer        = (*Plugin)(nil)
	_ sdk.OperationSet      = (*Plugin)(nil)
	_ sdk.Configurer        = (*Plugin)(nil)
	_ sdk.SettingsValidator = (*Plugin)(nil)
)

// Info describes the DNS plugin.
func (p *Plugin) Info() sdk.Info {
	return sdk.Info{Name: "dns", Version: Version, ALPNs: []string{ALPNDoQ, ALPNDoT, ALPNReplication},
		Description: "DNS over QUIC, TLS and HTTPS on the node's port: authoritative zones, self-certifying records, forwarding for dns:recurse"}
}

func (p *Plugin) logger() hclog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return sdk.Logger()
}

// ValidateSettings checks [plugins.dns] without applying it: the zones
// are read and parsed.
func (p *Plugin) ValidateSettings(settings json.RawMessage) error {
	_, err := parseSettings(settings, "")
	return err
}

// Configure applies the settings: zones are reloaded on every reload; the
// classic listener and the forwarder are restarted when their settings
// change.
func (p *Plugin) Configure(_ context.Context, settings json.RawMessage, host *sdk.Host) error {
	cfg, err := parseSettings(settings, host.NodeID())
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.host = host
	if p.signed == nil {
		st, err := openSignedStore(host.StateDir(), cfg.maxSigned)
		if err != nil {
			return err
		}
		p.signed = st
	}
	p.signed.setMax(cfg.maxSigned)
	old := p.cfg.Load()
	if old == nil || !equalJSON(old.forward, cfg.forward) {
		f, err := newForwarder(p.logger().Named("forward"), cfg.forward)
		if err != nil {
			return fmt.Errorf("dns settings: forward: %w", err)
		}
		if prev := p.fwd.Swap(f); prev != nil {
			_ = prev.Close()
		}
	}
	if old == nil || !equalJSON(old.classic, cfg.classic) {
		if prev := p.classic.Swap(nil); prev != nil {
			_ = prev.Close()
		}
		if cfg.classic.Listen != "" {
			c, err := startClassic(p.logger().Named("classic"), cfg.classic, p.answer)
			if err != nil {
				return fmt.Errorf("dns settings: classic: %w", err)
			}
			p.classic.Store(c)
		}
	}
	p.cfg.Store(cfg)
	p.logger().Info("dns configured", "zones", len(cfg.zones), "signed_zone", cfg.signedZone, "peers", len(cfg.peers),
		"classic", cfg.classic.Listen, "forward_upstreams", len(cfg.forward.Upstreams))
	return nil
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// ServeConn serves one connection by its ALPN.
func (p *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	if p.cfg.Load() == nil {
		_ = c.Close(doqInternalError, "the DNS plugin is not configured yet")
		return nil
	}
	switch a := c.Auth(); a.ALPN {
	case ALPNDoQ:
		if a.Transport != "quic" {
			_ = c.Close(doqProtocolError, "doq is DNS over QUIC: use dot on TCP+TLS")
			return nil
		}
		return p.serveDoQ(ctx, c)
	case ALPNDoT:
		if a.Transport != "tcp-tls" {
			_ = c.Close(doqProtocolError, "dot is DNS over TLS on TCP: use doq on QUIC")
			return nil
		}
		return p.serveDoT(ctx, c)
	case ALPNReplication:
		return p.serveReplication(ctx, c)
	}
	return nil
}

// source says where a query came from.
type source struct {
	transport string        // "doq", "dot", "call" (dns/query, which DoH uses), "udp", "tcp"
	identity  *sdk.Identity // nil: anonymous
	remote    string        // the client's address (never logged with the name it asked)
}

// answerFunc answers one query (never nil; it sets Rcode itself).
type answerFunc func(ctx context.Context, req *dns.Msg, src source) *dns.Msg

// ednsUDPSize is the EDNS buffer size the node advertises (DNS flag day
// 2020's recommendation).
const ednsUDPSize = 1232

// answer is the node's DNS logic, whatever the transport: a query in, the
// answer out. Authoritative data first (zones, the node's names, signed
// packets), then — only for dns:recurse — the forwarder; anyone else gets
// REFUSED for other names.
func (p *Plugin) answer(ctx context.Context, req *dns.Msg, src source) *dns.Msg {
	p.stats.query(src.transport)
	m := p.answerQuery(ctx, req, src)
	p.stats.rcode(m.Rcode)
	return m
}

func (p *Plugin) answerQuery(ctx context.Context, req *dns.Msg, src source) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = false
	if opt := req.IsEdns0(); opt != nil {
		if opt.Version() != 0 {
			m.SetRcode(req, dns.RcodeBadVers)
			m.SetEdns0(ednsUDPSize, false)
			return m
		}
		m.SetEdns0(ednsUDPSize, opt.Do())
	}
	if req.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(req.Question) != 1 || req.Response {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := req.Question[0]
	qname := canonical(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	cfg := p.cfg.Load()
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		p.transfer(m, cfg, qname, src)
		return m
	}
	if cfg.signedZone != "" && dns.IsSubDomain(cfg.signedZone, qname) && qname != cfg.signedZone {
		p.signed.lookup(m, cfg, qname, q.Qtype)
		return m
	}
	if z := findZone(cfg.zones, qname); z != nil {
		z.lookup(m, qname, q.Qtype)
		return m
	}
	if f := p.fwd.Load(); f != nil && src.identity.HasScope(ScopeRecurse) {
		r, err := f.Exchange(ctx, req)
		if err != nil {
			p.stats.forwardErrors.Add(1)
			m.Rcode = dns.RcodeServerFailure
			return m
		}
		p.stats.forwarded.Add(1)
		r.Id = req.Id
		return r
	}
	m.Rcode = dns.RcodeRefused
	return m
}

// mayForward reports whether answering req may wait on an upstream: the
// forwarder is on, the client may recurse, and the name is in none of the
// node's zones. Every other answer comes from memory at once.
func (p *Plugin) mayForward(req *dns.Msg, src source) bool {
	if p.fwd.Load() == nil || !src.identity.HasScope(ScopeRecurse) || len(req.Question) != 1 {
		return false
	}
	cfg := p.cfg.Load()
	return findZone(cfg.zones, canonical(req.Question[0].Name)) == nil
}

// transfer answers AXFR for identities the zone allows (the zone's
// records between two SOAs, which packLengthPrefixed splits into messages
// on the stream transports); IXFR is answered as AXFR (RFC 1995 allows
// it). UDP never carries a transfer.
func (p *Plugin) transfer(m *dns.Msg, cfg *config, qname string, src source) {
	z := findZone(cfg.zones, qname)
	switch {
	case z == nil || z.origin != qname:
		m.Rcode = dns.RcodeNotAuth
	case src.transport == "udp" || src.identity == nil || !z.allowTransfer[src.identity.ID]:
		p.stats.transfersRefused.Add(1)
		m.Rcode = dns.RcodeRefused
	default:
		m.Authoritative = true
		m.Answer = z.transfer()
	}
}

// counters are the plugin's statistics (dns/stats): never names.
type counters struct {
	doq, dot, call, udp, tcp               atomic.Int64
	noError, nxDomain, refused, servFail   atomic.Int64
	formErr, otherRcode                    atomic.Int64
	forwarded, forwardErrors               atomic.Int64
	transfersRefused, protocolErrors       atomic.Int64
	published, publishRefused, replicated  atomic.Int64
	replicationFailed, replicationReceived atomic.Int64
}

func (c *counters) query(transport string) {
	switch transport {
	case "doq":
		c.doq.Add(1)
	case "dot":
		c.dot.Add(1)
	case "call":
		c.call.Add(1)
	case "udp":
		c.udp.Add(1)
	case "tcp":
		c.tcp.Add(1)
	}
}

func (c *counters) rcode(rc int) {
	switch rc {
	case dns.RcodeSuccess:
		c.noError.Add(1)
	case dns.RcodeNameError:
		c.nxDomain.Add(1)
	case dns.RcodeRefused:
		c.refused.Add(1)
	case dns.RcodeServerFailure:
		c.servFail.Add(1)
	case dns.RcodeFormatError:
		c.formErr.Add(1)
	default:
		c.otherRcode.Add(1)
	}
}

// errNotConfigured answers calls that arrive before Configure.
var errNotConfigured = sdk.Errorf(sdk.CodeInternal, "the DNS plugin is not configured yet")

// idOf names an identity in logs ("anonymous" for none).
func idOf(id *sdk.Identity) string {
	if id == nil {
		return "anonymous"
	}
	return id.ID
}
