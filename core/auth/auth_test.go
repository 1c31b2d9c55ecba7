package auth

import (
	"strings"
	"testing"
	"time"
)

const (
	fpA = "ed25519:1111111111111111111111111111111111111111111111111111111111111111"
	fpB = "ed25519:2222222222222222222222222222222222222222222222222222222222222222"
)

func no() *bool { f := false; return &f }

func mustPolicy(t *testing.T, peers []Peer, keys []APIKey) *Policy {
	t.Helper()
	p, err := NewPolicy(peers, keys)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResolveFingerprintToPeer(t *testing.T) {
	p := mustPolicy(t, []Peer{{PeerID: "laptop", Fingerprints: []string{fpA}, Scopes: []string{"ssh:exec"}}}, nil)
	id := p.ResolveFingerprint(fpA)
	if id == nil || id.ID != "laptop" || !id.HasScope("ssh:exec") || id.HasScope("admin") {
		t.Fatalf("got %+v", id)
	}
	if p.ResolveFingerprint(fpB) != nil || p.ResolveFingerprint("") != nil {
		t.Fatal("unknown fingerprint resolved")
	}
}

func TestDisabledPeerResolvesToNone(t *testing.T) {
	tok := "peer-secret-token"
	p := mustPolicy(t, []Peer{
		{PeerID: "old", Fingerprints: []string{fpA}, SSHKeys: []string{"SHA256:abcdefghijklmnopqrstuvwxyz"}, AuthTokenHash: HashToken(tok), Enabled: no()},
	}, nil)
	if p.ResolveFingerprint(fpA) != nil || p.ResolveSSHKey("SHA256:abcdefghijklmnopqrstuvwxyz") != nil || p.ResolveToken(tok, time.Now()) != nil {
		t.Fatal("disabled peer resolved")
	}
}

func TestDisabledPeerDoesNotShadowLaterPeer(t *testing.T) {
	p := mustPolicy(t, []Peer{{PeerID: "a", Fingerprints: []string{fpA}, Enabled: no()}, {PeerID: "b", Fingerprints: []string{fpA}}}, nil)
	if id := p.ResolveFingerprint(fpA); id == nil || id.ID != "b" {
		t.Fatalf("got %+v", id)
	}
}

func TestResolveSSHKeyToPeer(t *testing.T) {
	k := "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
	p := mustPolicy(t, []Peer{{PeerID: "ops", SSHKeys: []string{k}}}, nil)
	if id := p.ResolveSSHKey(k); id == nil || id.ID != "ops" {
		t.Fatalf("got %+v", id)
	}
}

func TestResolveTokenToPeer(t *testing.T) {
	tok := "peer-secret-token"
	p := mustPolicy(t, []Peer{{PeerID: "ci", AuthTokenHash: HashToken(tok), Scopes: []string{"git:write"}}}, nil)
	if id := p.ResolveToken(tok, time.Now()); id == nil || id.ID != "ci" || !id.HasScope("git:write") {
		t.Fatalf("got %+v", id)
	}
	if p.ResolveToken("peer-secret-tokem", time.Now()) != nil {
		t.Fatal("wrong token resolved")
	}
}

func TestAPIKeyValidExpiredWrongHashUnknown(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	valid, kValid, err := NewAPIKey([]string{"call:invoke"}, "ci", 0)
	if err != nil {
		t.Fatal(err)
	}
	expired, kExpired, _ := NewAPIKey(nil, "old", now.Unix()-1)
	later, kLater, _ := NewAPIKey(nil, "soon", now.Unix()+3600)
	if !strings.HasPrefix(valid, "alk_") || len(valid) < 4+26 {
		t.Fatalf("token %q too short", valid)
	}
	p := mustPolicy(t, nil, []APIKey{kValid, kExpired, kLater})
	if id := p.ResolveToken(valid, now); id == nil || id.ID != valid[:8] || !id.HasScope("call:invoke") {
		t.Fatalf("valid: %+v", id)
	}
	if p.ResolveToken(later, now) == nil {
		t.Fatal("not yet expired key refused")
	}
	if p.ResolveToken(expired, now) != nil {
		t.Fatal("expired key accepted")
	}
	// Same prefix, different rest: the hash does not match.
	wrong := valid[:len(valid)-1] + string(rune('a'+(valid[len(valid)-1]-'a'+1)%26))
	if p.ResolveToken(wrong, now) != nil {
		t.Fatal("wrong hash accepted")
	}
	unknown, _, _ := NewAPIKey(nil, "", 0)
	if p.ResolveToken(unknown, now) != nil {
		t.Fatal("unknown key accepted")
	}
	if strings.Contains(kValid.Hash, valid) || kValid.Prefix != valid[:8] {
		t.Fatal("stored record holds more than prefix and hash")
	}
}

func TestReloadAddsAndRemovesAccessImmediately(t *testing.T) {
	pr := NewProvider(nil)
	if pr.Policy().ResolveFingerprint(fpA) != nil {
		t.Fatal("empty provider resolved")
	}
	before := pr.Policy()
	pr.Swap(mustPolicy(t, []Peer{{PeerID: "laptop", Fingerprints: []string{fpA}}}, nil))
	if id := pr.Policy().ResolveFingerprint(fpA); id == nil {
		t.Fatal("added peer not resolved after swap")
	}
	if before.ResolveFingerprint(fpA) != nil {
		t.Fatal("old snapshot changed")
	}
	pr.Swap(mustPolicy(t, nil, nil))
	if pr.Policy().ResolveFingerprint(fpA) != nil {
		t.Fatal("removed peer still resolved")
	}
}

func TestDuplicatePeerIDRejected(t *testing.T) {
	_, err := NewPolicy([]Peer{{PeerID: "x"}, {PeerID: "x"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "auth.peers[1].peer_id") || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []Peer{{PeerID: ""}, {PeerID: "a", Fingerprints: []string{"ed25519:zz"}}, {PeerID: "a", AuthTokenHash: "md5:00"}, {PeerID: "a", SSHKeys: []string{"ssh-ed25519 AAAA"}}} {
		if _, err := NewPolicy([]Peer{bad}, nil); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	if _, err := NewPolicy(nil, []APIKey{{Prefix: "xyz", Hash: HashToken("x")}}); err == nil || !strings.Contains(err.Error(), "auth.api_keys[0].prefix") {
		t.Fatalf("bad prefix: %v", err)
	}
}

func TestTokenStrength(t *testing.T) {
	for tok, strong := range map[string]bool{
		"abc":                                  false,
		"123456789012345678901234":             false,
		"0123456789abcdef0123456789abcdef":     true,
		"alk_mfrggzdfmztwq2lknnwg23tpobyxe43u": true,
		"S3cr3t-Passw0rd!":                     false,
	} {
		if got := TokenStrength(tok) >= MinTokenBits; got != strong {
			t.Errorf("%q: %d bits, strong=%v, want %v", tok, TokenStrength(tok), got, strong)
		}
	}
}
