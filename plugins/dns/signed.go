package dnsplugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"alknet.dev/alknet/plugins/dns/pkarr"
)

// signedStore keeps the newest signed packet of each key, in memory and,
// when the node gives the plugin a state directory, one file per key
// (<state>/signed/<z-base-32 key>), written atomically.
type signedStore struct {
	dir string

	mu      sync.RWMutex
	packets map[string]*pkarr.SignedPacket // z-base-32 key → packet
	max     int
}

// Errors of put, for callers and for the replication answer.
var (
	errOlder     = errors.New("older than the packet this node has")
	errStoreFull = errors.New("this node keeps no more keys")
)

func openSignedStore(stateDir string, max int) (*signedStore, error) {
	s := &signedStore{packets: map[string]*pkarr.SignedPacket{}, max: max}
	if stateDir == "" {
		return s, nil
	}
	s.dir = filepath.Join(stateDir, "signed")
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("dns: signed packets directory: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("dns: signed packets directory: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("dns: signed packet %s: %w", e.Name(), err)
		}
		p, err := pkarr.Parse(b)
		if err != nil || p.Name() != e.Name() {
			// A file that does not verify is never served; it stays for
			// the operator to look at.
			continue
		}
		s.packets[p.Name()] = p
	}
	return s, nil
}

func (s *signedStore) setMax(n int) {
	s.mu.Lock()
	s.max = n
	s.mu.Unlock()
}

func (s *signedStore) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.packets)
}

func (s *signedStore) get(key string) *pkarr.SignedPacket {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.packets[key]
}

// put stores p if it is newer than the packet of its key. stored is false
// for the packet already there (same timestamp and bytes): publishing it
// again is not an error, and it is not sent on again.
func (s *signedStore) put(p *pkarr.SignedPacket) (stored bool, err error) {
	key := p.Name()
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.packets[key]
	switch {
	case ok && p.Timestamp < old.Timestamp:
		return false, fmt.Errorf("%w (timestamp %d < %d)", errOlder, p.Timestamp, old.Timestamp)
	case ok && p.Timestamp == old.Timestamp:
		if string(p.Bytes()) == string(old.Bytes()) {
			return false, nil
		}
		return false, fmt.Errorf("%w: a different packet with the same timestamp %d", errOlder, p.Timestamp)
	case !ok && len(s.packets) >= s.max:
		return false, fmt.Errorf("%w: it keeps %d (max_signed_packets)", errStoreFull, s.max)
	}
	if s.dir != "" {
		if err := writeAtomic(filepath.Join(s.dir, key), p.Bytes()); err != nil {
			return false, fmt.Errorf("store signed packet: %w", err)
		}
	}
	s.packets[key] = p
	return true, nil
}

func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// lookup answers a name under the signed zone: the key is the label just
// left of the zone, the records are those of its newest packet.
func (s *signedStore) lookup(m *dns.Msg, cfg *config, qname string, qtype uint16) {
	z := findZone(cfg.zones, cfg.signedZone)
	m.Authoritative = true
	labels := dns.SplitDomainName(strings.TrimSuffix(qname, "."+cfg.signedZone))
	key := labels[len(labels)-1]
	var p *pkarr.SignedPacket
	if b, err := pkarr.DecodeZBase32(key); err == nil && len(b) == 32 {
		p = s.get(key)
	}
	var rrs []dns.RR
	if p != nil {
		rrs, _ = p.Records(cfg.signedZone)
	}
	if p == nil {
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, z.negativeSOA())
		return
	}
	exists := qname == key+"."+cfg.signedZone
	var cname dns.RR
	for _, rr := range rrs {
		owner := canonical(rr.Header().Name)
		if owner != qname {
			if dns.IsSubDomain(qname, owner) {
				exists = true
			}
			continue
		}
		exists = true
		t := rr.Header().Rrtype
		if t == qtype || qtype == dns.TypeANY {
			m.Answer = append(m.Answer, rr)
		} else if t == dns.TypeCNAME {
			cname = rr
		}
	}
	switch {
	case len(m.Answer) > 0:
	case cname != nil:
		m.Answer = append(m.Answer, cname)
	case exists:
		m.Ns = append(m.Ns, z.negativeSOA())
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, z.negativeSOA())
	}
}
