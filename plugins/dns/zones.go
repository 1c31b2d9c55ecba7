package dnsplugin

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/miekg/dns"
)

// zone is an authoritative zone: its records by owner name, parsed with
// miekg/dns from a zone file and/or inline lines.
type zone struct {
	origin        string
	soa           *dns.SOA
	names         map[string][]dns.RR // owner (canonical) → records
	exists        map[string]bool     // every owner and every name between it and the origin
	order         []dns.RR            // file order, for AXFR
	allowTransfer map[string]bool
}

// maxZoneRecords bounds one zone (D14: a zone file is the operator's, but
// a mistake should fail clearly, not exhaust the plugin's memory).
const maxZoneRecords = 1 << 20

// canonical is name lowercased and fully qualified.
func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }

func loadZone(zs ZoneSettings) (*zone, error) {
	if zs.Origin == "" {
		return nil, fmt.Errorf("origin is empty: set it to the zone's apex, e.g. \"example.net.\"")
	}
	origin := canonical(zs.Origin)
	if _, ok := dns.IsDomainName(origin); !ok {
		return nil, fmt.Errorf("origin %q is not a domain name", zs.Origin)
	}
	if zs.File == "" && len(zs.Records) == 0 {
		return nil, fmt.Errorf("zone %s has neither file nor records", origin)
	}
	z := &zone{origin: origin, names: map[string][]dns.RR{}, exists: map[string]bool{}, allowTransfer: map[string]bool{}}
	for _, id := range zs.AllowTransfer {
		z.allowTransfer[id] = true
	}
	if zs.File != "" {
		f, err := os.Open(zs.File)
		if err != nil {
			return nil, fmt.Errorf("zone %s: %w", origin, err)
		}
		err = z.parse(f, zs.File)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	if len(zs.Records) > 0 {
		if err := z.parse(strings.NewReader(strings.Join(zs.Records, "\n")+"\n"), "records"); err != nil {
			return nil, err
		}
	}
	if z.soa == nil {
		return nil, fmt.Errorf("zone %s has no SOA record at its origin: add one (e.g. \"@ 3600 IN SOA ns1.%s hostmaster.%s 1 7200 3600 1209600 300\")", origin, origin, origin)
	}
	return z, nil
}

func (z *zone) parse(r io.Reader, file string) error {
	zp := dns.NewZoneParser(r, z.origin, file)
	zp.SetDefaultTTL(3600)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if len(z.order) >= maxZoneRecords {
			return fmt.Errorf("zone %s: more than %d records", z.origin, maxZoneRecords)
		}
		owner := canonical(rr.Header().Name)
		if !dns.IsSubDomain(z.origin, owner) {
			return fmt.Errorf("zone %s (%s): record %q is outside the zone", z.origin, file, rr.String())
		}
		if soa, ok := rr.(*dns.SOA); ok {
			if owner != z.origin {
				return fmt.Errorf("zone %s (%s): SOA at %s, not at the origin", z.origin, file, owner)
			}
			if z.soa != nil {
				return fmt.Errorf("zone %s (%s): a second SOA record", z.origin, file)
			}
			z.soa = soa
		}
		z.add(rr)
	}
	if err := zp.Err(); err != nil {
		return fmt.Errorf("zone %s: %w", z.origin, err)
	}
	return nil
}

// add files rr under its owner and marks the names up to the origin as
// existing (empty non-terminals answer NODATA, not NXDOMAIN).
func (z *zone) add(rr dns.RR) {
	owner := canonical(rr.Header().Name)
	rr.Header().Name = owner
	z.names[owner] = append(z.names[owner], rr)
	z.order = append(z.order, rr)
	for n := owner; ; {
		z.exists[n] = true
		if n == z.origin {
			break
		}
		i, end := dns.NextLabel(n, 0)
		if end {
			break
		}
		n = n[i:]
	}
}

// findZone is the zone with the longest origin containing name.
func findZone(zones []*zone, name string) *zone {
	var best *zone
	for _, z := range zones {
		if dns.IsSubDomain(z.origin, name) && (best == nil || len(z.origin) > len(best.origin)) {
			best = z
		}
	}
	return best
}

// negativeSOA is the SOA for the authority section of a negative answer,
// its TTL the smaller of its own and its minimum (RFC 2308 §3).
func (z *zone) negativeSOA() dns.RR {
	soa := dns.Copy(z.soa).(*dns.SOA)
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return soa
}

// maxCNAMEChain bounds how many CNAMEs in the zone an answer follows.
const maxCNAMEChain = 8

// lookup answers qname/qtype from the zone into m (authoritative): the
// records, a CNAME chain inside the zone, a referral below a delegation,
// NODATA or NXDOMAIN with the SOA in the authority section.
func (z *zone) lookup(m *dns.Msg, qname string, qtype uint16) {
	m.Authoritative = true
	for range maxCNAMEChain {
		if ns := z.delegation(qname); ns != nil {
			m.Authoritative = false
			m.Ns = append(m.Ns, ns...)
			return
		}
		rrs, ok := z.names[qname]
		if !ok {
			rrs, ok = z.wildcard(qname)
		}
		if !ok {
			if len(m.Answer) == 0 {
				if z.exists[qname] {
					m.Ns = append(m.Ns, z.negativeSOA()) // empty non-terminal
				} else {
					m.Rcode = dns.RcodeNameError
					m.Ns = append(m.Ns, z.negativeSOA())
				}
			}
			return
		}
		var cname *dns.CNAME
		found := false
		for _, rr := range rrs {
			t := rr.Header().Rrtype
			if t == qtype || qtype == dns.TypeANY {
				m.Answer = append(m.Answer, rr)
				found = true
			}
			if c, ok := rr.(*dns.CNAME); ok && t != qtype {
				cname = c
			}
		}
		if found || cname == nil {
			if !found && len(m.Answer) == 0 {
				m.Ns = append(m.Ns, z.negativeSOA()) // NODATA
			}
			return
		}
		m.Answer = append(m.Answer, cname)
		target := canonical(cname.Target)
		if !dns.IsSubDomain(z.origin, target) {
			return // outside the zone: the client resolves the rest
		}
		qname = target
	}
}

// wildcard is the records of *.<closest encloser> for a name that does
// not exist, renamed to qname (RFC 4592).
func (z *zone) wildcard(qname string) ([]dns.RR, bool) {
	for n := qname; n != z.origin; {
		i, end := dns.NextLabel(n, 0)
		if end {
			return nil, false
		}
		n = n[i:]
		if z.exists[n] {
			rrs, ok := z.names["*."+n]
			if !ok {
				return nil, false
			}
			out := make([]dns.RR, len(rrs))
			for j, rr := range rrs {
				out[j] = dns.Copy(rr)
				out[j].Header().Name = qname
			}
			return out, true
		}
	}
	return nil, false
}

// delegation is the NS set of a zone cut between the origin and qname
// (excluding the origin), if any.
func (z *zone) delegation(qname string) []dns.RR {
	labels := dns.SplitDomainName(qname)
	originLabels := dns.CountLabel(z.origin)
	// From just below the origin down to qname itself.
	for i := len(labels) - originLabels - 1; i >= 0; i-- {
		n := dns.Fqdn(strings.Join(labels[i:], "."))
		var ns []dns.RR
		for _, rr := range z.names[n] {
			if rr.Header().Rrtype == dns.TypeNS {
				ns = append(ns, rr)
			}
		}
		if len(ns) > 0 {
			return ns
		}
	}
	return nil
}

// transfer is the zone's records for AXFR: SOA first and last.
func (z *zone) transfer() []dns.RR {
	out := make([]dns.RR, 0, len(z.order)+1)
	out = append(out, z.soa)
	for _, rr := range z.order {
		if rr != dns.RR(z.soa) {
			out = append(out, rr)
		}
	}
	return append(out, z.soa)
}
