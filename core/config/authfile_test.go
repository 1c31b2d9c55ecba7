package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"alknet.dev/alknet/core/auth"
)

// Ten `alknet peers add` at once: every peer is kept.
func TestUpdateAuthFileConcurrentKeepsEveryPeer(t *testing.T) {
	path := AuthFilePath(t.TempDir())
	const n = 10
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := UpdateAuthFile(path, func(a *Auth) error {
				a.Peers = append(a.Peers, auth.Peer{PeerID: fmt.Sprintf("peer-%d", i),
					Fingerprints: []string{"ed25519:" + strings.Repeat(fmt.Sprintf("%02x", i), 32)}, Scopes: []string{"admin"}})
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	a, err := LoadAuthFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Peers) != n {
		t.Fatalf("%d peers kept of %d added", len(a.Peers), n)
	}
}

func TestUpdateAuthFileErrorChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), AuthFileName)
	if err := UpdateAuthFile(path, func(a *Auth) error {
		a.Peers = append(a.Peers, auth.Peer{PeerID: "one", Scopes: []string{"admin"}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err := UpdateAuthFile(path, func(a *Auth) error {
		a.Peers = nil
		return fmt.Errorf("no managed peer %q", "two")
	})
	if err == nil || !strings.Contains(err.Error(), "two") {
		t.Fatalf("error from the change: %v", err)
	}
	if a, _ := LoadAuthFile(path); len(a.Peers) != 1 {
		t.Fatalf("a failed change altered the file: %+v", a.Peers)
	}
}
