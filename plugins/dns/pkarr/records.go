package pkarr

import (
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// Records returns the records of the packet's answer section as they are
// served under zone, that is with every owner name placed under
// "<z32>.<zone>", where <z32> is the packet's Name. Other sections of the
// message are ignored, as pkarr ignores them. Types, classes, TTLs and RDATA
// are kept as they are; names inside RDATA (a CNAME target, say) are not
// rewritten. An empty zone means the root.
//
// pkarr stores owner names relative to the key, with the key as the last
// label and no top-level domain after it: the apex as "<z32>" and a record
// "_foo" as "_foo.<z32>". Records rewrites each owner name by this rule,
// comparing labels without regard to case:
//
//	<z32>             → <z32>.<zone>
//	X.<z32>           → X.<z32>.<zone>
//	@ or the root     → <z32>.<zone>
//	X.@               → X.<z32>.<zone>
//	X (anything else) → X.<z32>.<zone>
//
// The last three lines apply the normalisation pkarr applies to the names it
// is given when it builds a packet ("@", "." and "" mean the apex, and a name
// not ending in the key is taken as relative to it) to packets built by
// other software that did not normalise their names. The one difference is
// "X.@": pkarr turns it into the apex, Records keeps the "X". Whatever a
// packet contains, its records are only ever served under its own key.
// Labels are compared as whole labels, so an escaped dot does not end a label
// ("foo\.<z32>" is one label, taken as relative). Records fails if the DNS
// part does not parse (ErrBadDNS), if zone is not a domain name, or if a
// rewritten name would be longer than a domain name may be.
func (p *SignedPacket) Records(zone string) ([]dns.RR, error) {
	zone = dns.Fqdn(zone)
	if _, ok := dns.IsDomainName(zone); !ok {
		return nil, fmt.Errorf("signed packet: records of key %s: zone %q is not a domain name", p.Name(), zone)
	}
	msg, err := p.Msg()
	if err != nil {
		return nil, err
	}
	key := p.Name()
	suffix := key + "." + zone
	if zone == "." {
		suffix = key + "."
	}
	out := make([]dns.RR, 0, len(msg.Answer))
	for i, rr := range msg.Answer {
		h := rr.Header()
		rel := relativeLabels(h.Name, key)
		name := suffix
		if len(rel) > 0 {
			name = strings.Join(rel, ".") + "." + suffix
		}
		if _, ok := dns.IsDomainName(name); !ok {
			return nil, fmt.Errorf("signed packet: records of key %s: record %d (%s %s) would be named %q, which is not a valid domain name",
				key, i, h.Name, dns.TypeToString[h.Rrtype], name)
		}
		h.Name = name
		out = append(out, rr)
	}
	return out, nil
}

// relativeLabels returns the labels of name relative to the key whose
// z-base-32 name is key, in presentation form (escapes kept), following the
// rule documented on Records. It returns no labels for the apex.
func relativeLabels(name, key string) []string {
	labels := dns.SplitDomainName(name)
	if len(labels) == 0 {
		return nil
	}
	last := labels[len(labels)-1]
	if strings.EqualFold(last, key) || last == "@" || last == `\@` {
		labels = labels[:len(labels)-1]
	}
	return labels
}
