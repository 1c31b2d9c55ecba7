package dnsplugin

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"alknet.dev/alknet/plugins/sdk"
)

// Settings are the keys of [plugins.dns] (README.md lists them).
type Settings struct {
	// Zones the node answers for with authority.
	Zones []ZoneSettings `json:"zones,omitempty"`
	// Node publishes the node's own names: A/AAAA records of Name and
	// the _alknet._udp SRV and TXT records of its dial string.
	Node *NodeSettings `json:"node,omitempty"`
	// SignedZone is where self-certifying record sets are served: the
	// records of key K under <z-base-32 of K>.<signed_zone>. It is one of
	// the zones or a name inside one (its SOA answers for it). Empty:
	// dns/publish is off.
	SignedZone string `json:"signed_zone,omitempty"`
	// Peers are the nodes ("FINGERPRINT@host:port", or a known peer's
	// host:port) an accepted signed packet is sent to.
	Peers []string `json:"peers,omitempty"`
	// MaxSignedPackets bounds the keys whose packets are kept (default
	// 10000).
	MaxSignedPackets int `json:"max_signed_packets,omitempty"`
	// MaxQueriesPerConnection bounds the queries of one DoQ or DoT
	// connection answered at once (default 64); more wait.
	MaxQueriesPerConnection int `json:"max_queries_per_connection,omitempty"`
	// ReadTimeout bounds the wait for a query's bytes once a DoQ stream is
	// open or a DoT message has begun (default "2s").
	ReadTimeout string `json:"read_timeout,omitempty"`
	// IdleTimeout closes a DoT connection with no query for that long
	// (default "30s").
	IdleTimeout string `json:"idle_timeout,omitempty"`
	// Classic is the plain UDP/TCP listener (off unless listen is set).
	Classic ClassicSettings `json:"classic,omitempty"`
	// Forward is the forwarding resolver for names outside the zones,
	// for identities with scope dns:recurse only (off without upstreams).
	Forward ForwardSettings `json:"forward,omitempty"`
}

// ZoneSettings is one [[plugins.dns.zones]].
type ZoneSettings struct {
	// Origin is the zone's apex ("example.net.").
	Origin string `json:"origin"`
	// File is a zone file (RFC 1035 master format).
	File string `json:"file,omitempty"`
	// Records are zone-file lines, relative to Origin, added to File's.
	Records []string `json:"records,omitempty"`
	// AllowTransfer lists the identities (their ids) allowed AXFR.
	AllowTransfer []string `json:"allow_transfer,omitempty"`
}

// NodeSettings names the node in one of its zones.
type NodeSettings struct {
	// Name is the node's name, inside one of the zones.
	Name string `json:"name"`
	// Addresses are its IPv4 and IPv6 addresses (A and AAAA records).
	Addresses []string `json:"addresses,omitempty"`
	// Port is the node's port (default 4433).
	Port int `json:"port,omitempty"`
	// TTL of the records (default 300).
	TTL uint32 `json:"ttl,omitempty"`
}

// Defaults of the bounds (docs/architecture.md D14).
const (
	defaultMaxSignedPackets = 10000
	defaultQueriesPerConn   = 64
	defaultReadTimeout      = 2 * time.Second
	defaultIdleTimeout      = 30 * time.Second
	defaultNodePort         = 4433
	defaultNodeTTL          = 300
)

// config is Settings checked, with defaults in place and zones loaded.
type config struct {
	zones          []*zone
	signedZone     string
	peers          []string
	maxSigned      int
	queriesPerConn int
	readTimeout    time.Duration
	idleTimeout    time.Duration
	classic        ClassicSettings
	forward        ForwardSettings
}

// parseSettings checks settings and loads the zones; nodeID is the node's
// fingerprint for its _alknet._udp TXT record.
func parseSettings(raw json.RawMessage, nodeID string) (*config, error) {
	var s Settings
	if err := sdk.DecodeSettings("dns", raw, &s); err != nil {
		return nil, err
	}
	c := &config{maxSigned: s.MaxSignedPackets, queriesPerConn: s.MaxQueriesPerConnection,
		peers: s.Peers, classic: s.Classic, forward: s.Forward}
	if c.maxSigned == 0 {
		c.maxSigned = defaultMaxSignedPackets
	}
	if c.queriesPerConn == 0 {
		c.queriesPerConn = defaultQueriesPerConn
	}
	if c.maxSigned < 0 || c.queriesPerConn < 0 {
		return nil, fmt.Errorf("dns settings: max_signed_packets and max_queries_per_connection must be positive")
	}
	var err error
	if c.readTimeout, err = duration("read_timeout", s.ReadTimeout, defaultReadTimeout); err != nil {
		return nil, err
	}
	if c.idleTimeout, err = duration("idle_timeout", s.IdleTimeout, defaultIdleTimeout); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, zs := range s.Zones {
		z, err := loadZone(zs)
		if err != nil {
			return nil, fmt.Errorf("dns settings: zones[%d]: %w", i, err)
		}
		if seen[z.origin] {
			return nil, fmt.Errorf("dns settings: zone %s is configured twice", z.origin)
		}
		seen[z.origin] = true
		c.zones = append(c.zones, z)
	}
	if s.Node != nil {
		if err := addNodeRecords(c.zones, *s.Node, nodeID); err != nil {
			return nil, fmt.Errorf("dns settings: node: %w", err)
		}
	}
	if s.SignedZone != "" {
		c.signedZone = canonical(s.SignedZone)
		if _, ok := dns.IsDomainName(c.signedZone); !ok {
			return nil, fmt.Errorf("dns settings: signed_zone %q is not a domain name", s.SignedZone)
		}
		if findZone(c.zones, c.signedZone) == nil {
			return nil, fmt.Errorf("dns settings: signed_zone %s is in none of the zones: add a zone that contains it (its SOA answers for it)", c.signedZone)
		}
	} else if len(s.Peers) > 0 {
		return nil, fmt.Errorf("dns settings: peers are set but signed_zone is not: peers receive signed packets, which need a signed_zone")
	}
	for _, p := range s.Peers {
		if p == "" || strings.ContainsAny(p, " \t") {
			return nil, fmt.Errorf("dns settings: peer %q: want FINGERPRINT@host:port or the host:port of a known peer", p)
		}
	}
	if err := s.Classic.check(); err != nil {
		return nil, fmt.Errorf("dns settings: classic: %w", err)
	}
	if err := s.Forward.check(); err != nil {
		return nil, fmt.Errorf("dns settings: forward: %w", err)
	}
	return c, nil
}

func duration(key, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("dns settings: %s %q: want a positive duration such as \"5s\"", key, s)
	}
	return d, nil
}

// addNodeRecords adds the node's A/AAAA records and its _alknet._udp SRV
// and TXT records to the zone that contains its name
// (docs/spec/handlers.md, DNS).
func addNodeRecords(zones []*zone, n NodeSettings, nodeID string) error {
	name := canonical(n.Name)
	z := findZone(zones, name)
	if z == nil {
		return fmt.Errorf("name %q is in none of the zones", n.Name)
	}
	port, ttl := n.Port, n.TTL
	if port == 0 {
		port = defaultNodePort
	}
	if port < 0 || port > 65535 {
		return fmt.Errorf("port %d: want 1-65535", n.Port)
	}
	if ttl == 0 {
		ttl = defaultNodeTTL
	}
	hdr := func(owner string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: owner, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	var rrs []dns.RR
	for _, a := range n.Addresses {
		ip := net.ParseIP(a)
		switch {
		case ip == nil:
			return fmt.Errorf("address %q is not an IP address", a)
		case ip.To4() != nil:
			rrs = append(rrs, &dns.A{Hdr: hdr(name, dns.TypeA), A: ip.To4()})
		default:
			rrs = append(rrs, &dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: ip})
		}
	}
	srvName := "_alknet._udp." + name
	rrs = append(rrs, &dns.SRV{Hdr: hdr(srvName, dns.TypeSRV), Port: uint16(port), Target: name})
	if nodeID != "" {
		dial := fmt.Sprintf("%s@%s:%d", nodeID, strings.TrimSuffix(name, "."), port)
		rrs = append(rrs, &dns.TXT{Hdr: hdr(srvName, dns.TypeTXT), Txt: []string{"alknet=" + dial}})
	}
	for _, rr := range rrs {
		z.add(rr)
	}
	return nil
}
