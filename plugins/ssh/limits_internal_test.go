package ssh

import (
	"net/netip"
	"testing"
	"time"
)

// max_startups "10:30:100" drops nobody below 10 unauthenticated
// connections, 30% of new ones at 10, rising linearly to all at 100 —
// OpenSSH's MaxStartups.
func TestStartupsDrop(t *testing.T) {
	s, err := parseStartups("10:30:100")
	if err != nil {
		t.Fatal(err)
	}
	roll := func(v int) func(int) int { return func(int) int { return v } }
	for _, tc := range []struct {
		pending, roll int
		drop          bool
	}{
		{0, 0, false}, {9, 0, false}, // below start: never
		{10, 29, true}, {10, 30, false}, // at start: rate%
		{55, 64, true}, {55, 65, false}, // halfway: 30 + 70/2 = 65%
		{99, 98, true}, {99, 99, false},
		{100, 99, true}, {5000, 99, true}, // at full: always
	} {
		if got := s.drop(tc.pending, roll(tc.roll)); got != tc.drop {
			t.Errorf("%d pending, roll %d: drop %v; want %v", tc.pending, tc.roll, got, tc.drop)
		}
	}
	one, err := parseStartups("3")
	if err != nil || one != (startups{start: 3, rate: 100, full: 3}) {
		t.Fatalf(`"3": %+v %v`, one, err)
	}
	if one.drop(2, roll(99)) || !one.drop(3, roll(0)) {
		t.Fatal(`"3" must admit 3 unauthenticated connections and no more`)
	}
}

// The penalty table never holds more than penalty_max_sources sources:
// expired ones go first, then those whose penalty ends soonest, so the
// worst offenders are remembered longest.
func TestPenaltyTableBounded(t *testing.T) {
	pol := penaltyPolicy{authFail: 5 * time.Second, min: 0, max: time.Minute, maxSources: 3}
	now := time.Unix(1e9, 0)
	src := func(s string) netip.Prefix {
		p, ok := sourceOf(s)
		if !ok {
			t.Fatalf("no source for %s", s)
		}
		return p
	}
	var tab penaltyTable
	a, b, c, d := src("192.0.2.1:1"), src("192.0.2.2:1"), src("[2001:db8::1]:1"), src("198.51.100.1:1")
	for range 4 {
		tab.add(a, pol, now) // 20s
	}
	tab.add(b, pol, now) // 5s
	tab.add(c, pol, now) // 5s
	tab.add(c, pol, now) // 10s
	tab.add(d, pol, now) // full: b, ending soonest, is forgotten
	if len(tab.bySource) != 3 || len(tab.byExpiry) != 3 {
		t.Fatalf("%d sources held; want 3", len(tab.bySource))
	}
	for _, p := range []netip.Prefix{a, c, d} {
		if _, refused := tab.refused(p, now); !refused {
			t.Errorf("%s was forgotten", p)
		}
	}
	if _, refused := tab.refused(b, now); refused {
		t.Error("the source whose penalty ended soonest was kept")
	}
	if left, _ := tab.refused(a, now); left != 20*time.Second {
		t.Errorf("a: %v left; want 20s", left)
	}
	// Expired sources are pruned.
	now = now.Add(11 * time.Second)
	if _, refused := tab.refused(a, now); !refused || len(tab.bySource) != 1 {
		t.Fatalf("after 11s: %d sources held; want a only", len(tab.bySource))
	}
	if p, ok := sourceOf("[2001:db8:0:0:ffff::9]:22"); !ok || p != c {
		t.Errorf("an IPv6 address is its /64: %v", p)
	}
	for _, s := range []string{"internal", "", "pipe", "node.example:22"} {
		if _, ok := sourceOf(s); ok {
			t.Errorf("%q has a source", s)
		}
	}
}
