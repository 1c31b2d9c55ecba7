package vault

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// Ten `alknet credential set` at once are ten processes, each with its own
// store on the same file: every one of them must be kept. Separate stores
// stand for separate processes here (their in-process mutexes are
// separate; only the file lock orders them).
func TestCredentialSetFromSeparateStoresKeepsEveryName(t *testing.T) {
	v, _ := vectorVault(t)
	path := filepath.Join(t.TempDir(), CredentialsFileName)
	const n = 10
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := NewCredentialStore(path, v).Set(fmt.Sprintf("name_%d", i), []byte("secret")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	list, err := NewCredentialStore(path, nil).List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("%d credentials stored of %d set: %+v", len(list), n, list)
	}
	// Removals and a rotation interleaved with sets lose nothing either.
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := NewCredentialStore(path, v).Remove(fmt.Sprintf("name_%d", i)); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := NewCredentialStore(path, v).Set(fmt.Sprintf("other_%d", i), []byte("s")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := NewCredentialStore(path, v).RotateAll(3); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	list, _ = NewCredentialStore(path, nil).List()
	if len(list) != n {
		t.Fatalf("after concurrent removes and sets: %+v", list)
	}
	for _, c := range list {
		if c.Name[:6] != "other_" {
			t.Fatalf("removed credential %s is back", c.Name)
		}
	}
}
