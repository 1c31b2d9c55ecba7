package dial_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"alknet.dev/alknet/core/dial"
)

// Several clients trusting the same new address at once (separate
// KnownPeers values stand for separate processes): exactly one
// fingerprint is recorded, and the others are told which one.
func TestKnownPeersConcurrentAddRecordsOne(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_peers")
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = dial.OpenKnownPeers(path).Add("node.example:4433", "ed25519:"+strings.Repeat(fmt.Sprintf("%02x", i), 32))
		}()
	}
	wg.Wait()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 1 {
		t.Fatalf("known_peers has %d lines:\n%s", lines, b)
	}
	refused := 0
	for _, err := range errs {
		if err != nil {
			if !strings.Contains(err.Error(), "is already recorded with") {
				t.Fatalf("refusal does not name the recorded fingerprint: %v", err)
			}
			refused++
		}
	}
	if refused != n-1 {
		t.Fatalf("%d adds refused, want %d", refused, n-1)
	}
}
