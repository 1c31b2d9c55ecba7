package vault

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentialStore(t *testing.T) {
	v, _ := vectorVault(t)
	path := filepath.Join(t.TempDir(), CredentialsFileName)
	cs := NewCredentialStore(path, v)
	if err := cs.Set("openai", []byte("sk-proj-abc123xyz789")); err != nil {
		t.Fatal(err)
	}
	if err := cs.Set("dns.token", []byte("tok-42")); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "sk-proj") || strings.Contains(string(raw), "tok-42") {
		t.Fatal("credential store holds plaintext")
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	s, err := cs.Get("openai")
	if err != nil || string(s.Bytes()) != "sk-proj-abc123xyz789" {
		t.Fatalf("get: %v", err)
	}
	list, _ := cs.List()
	if len(list) != 2 || list[0].Name != "dns.token" || list[1].KeyVersion != 2 {
		t.Fatalf("list %+v", list)
	}

	n, err := cs.RotateAll(3)
	if err != nil || n != 2 {
		t.Fatalf("rotate: %d %v", n, err)
	}
	if ver, _ := cs.KeyVersion(); ver != 3 {
		t.Fatalf("key version after rotate %d", ver)
	}
	_ = cs.Set("new", []byte("n"))
	list, _ = cs.List()
	for _, c := range list {
		if c.KeyVersion != 3 {
			t.Fatalf("%s at v%d after rotation", c.Name, c.KeyVersion)
		}
	}
	if s, err := cs.Get("openai"); err != nil || string(s.Bytes()) != "sk-proj-abc123xyz789" {
		t.Fatalf("get after rotate: %v", err)
	}

	if err := cs.Remove("openai"); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Get("openai"); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("removed credential: %v", err)
	}
	if err := cs.Remove("openai"); !errors.Is(err, ErrNoCredential) {
		t.Fatalf("remove twice: %v", err)
	}
	for _, bad := range []string{"", "../x", "a b", ".hidden", strings.Repeat("a", 129)} {
		if err := cs.Set(bad, []byte("x")); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	// A store readable by others is refused.
	_ = os.Chmod(path, 0o640)
	if _, err := cs.List(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("0640 store: %v", err)
	}
}
