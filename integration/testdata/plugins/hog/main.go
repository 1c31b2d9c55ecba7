// Command alknet-plugin-hog is a plugin that misbehaves on request, for
// the containment tests: its internal operations (reachable only through
// diag/invoke) allocate memory or spin CPUs. Built with
// -ldflags "-X main.marker=<path>" it is the "other" binary of the launch
// race tests instead: whenever it runs at all, it creates that file and
// exits, so a test sees that it was executed.
package main

import (
	"context"
	"os"
	"runtime"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

var marker = ""

type hog struct{}

var _ sdk.OperationSet = hog{}

func (hog) Info() sdk.Info {
	return sdk.Info{Name: "hog", Version: "1.0.0", Description: "allocates memory and spins CPUs on request (containment tests)"}
}

// held keeps allocations reachable so the collector cannot free them.
var held [][]byte

// AllocIn asks for MiB mebibytes, touched page by page.
type AllocIn struct {
	MiB int `json:"mib"`
}

// SpinIn asks for Threads goroutines busy for Seconds.
type SpinIn struct {
	Threads int     `json:"threads"`
	Seconds float64 `json:"seconds"`
}

func (hog) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Mutation("hog/alloc", func(_ context.Context, _ *sdk.Call, in AllocIn) (int, error) {
			for i := 0; i < in.MiB; i += 4 {
				b := make([]byte, 4<<20)
				for j := 0; j < len(b); j += 4096 {
					b[j] = 1
				}
				held = append(held, b)
			}
			return len(held) * 4, nil
		}).Internal(),
		sdk.Mutation("hog/spin", func(_ context.Context, _ *sdk.Call, in SpinIn) (int, error) {
			until := time.Now().Add(time.Duration(in.Seconds * float64(time.Second)))
			for range in.Threads {
				go func() {
					runtime.LockOSThread()
					for time.Now().Before(until) {
					}
				}()
			}
			return in.Threads, nil
		}).Internal(),
	}
}

func main() {
	if marker != "" {
		_ = os.WriteFile(marker, []byte("the other binary ran\n"), 0o644)
		os.Exit(3)
	}
	sdk.Serve(hog{})
}
