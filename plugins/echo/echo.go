// Package echo is the reference Alknet plugin: the alknet/echo ALPN (every
// stream is echoed back) and a handful of operations used by tests and as
// a worked example of the SDK.
package echo

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// Build-time knobs (-ldflags "-X alknet.dev/alknet/plugins/echo.Version=…"):
// the version, and — for tests that need a second, independent plugin or a
// plugin of another protocol — the name (which also names the ALPN
// alknet/<name> and the operations <name>/…) and the protocol version.
var (
	Version  = "0.1.0"
	Name     = "echo"
	Protocol = "1"
)

// ALPN served by the plugin.
func ALPN() string { return "alknet/" + Name }

// Handler implements sdk.Handler.
type Handler struct {
	calls atomic.Int64 // operations that reached the plugin
}

var _ sdk.Handler = (*Handler)(nil)

// Manifest describes the echo plugin.
func (h *Handler) Manifest() sdk.Manifest {
	proto, _ := strconv.Atoi(Protocol)
	op := func(o string) string { return Name + "/" + o }
	return sdk.Manifest{
		Name: Name, Version: Version, ProtocolVersions: []int{proto},
		ALPNs:       []string{ALPN()},
		Description: "echoes streams; example and test operations",
		Capabilities: []sdk.CapabilitySpec{
			{Name: "echo_secret", Description: "any secret, to show how capabilities arrive (optional)"},
		},
		Operations: []sdk.Operation{
			{Name: op("say"), OpType: sdk.Query, RemoteSafe: true, Description: "returns its input"},
			{Name: op("ticks"), OpType: sdk.Subscription, RemoteSafe: true, Description: "streams {\"n\": i} for i < count",
				InputSchema: json.RawMessage(`{"type":"object","required":["count"],"properties":{"count":{"type":"integer","minimum":0,"maximum":1000000},"interval_ms":{"type":"integer","minimum":0}}}`)},
			{Name: op("caps"), OpType: sdk.Query, Description: "names (never values) of the capabilities this call received, and how many calls reached the plugin",
				AccessControl: sdk.AccessControl{RequiredScopes: []string{"echo:caps"}}},
			{Name: op("env"), OpType: sdk.Query, Visibility: "internal", Description: "names of the plugin process's environment variables (isolation test)"},
			{Name: op("crash"), OpType: sdk.Mutation, Visibility: "internal", Description: "exits the plugin process (crash test)"},
			{Name: op("stats"), OpType: sdk.Query, RemoteSafe: true, Description: "how many operation calls reached the plugin"},
		},
	}
}

// Configure takes no settings.
func (h *Handler) Configure(context.Context, json.RawMessage, *sdk.Host) error { return nil }

// ServeConn echoes every stream until the peer half-closes it.
func (h *Handler) ServeConn(ctx context.Context, c *sdk.Conn) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			if _, err := io.CopyBuffer(s, s, buf); err != nil {
				s.CancelWrite(1)
				return
			}
			_ = s.Close()
		}()
	}
}

// Invoke answers the echo operations.
func (h *Handler) Invoke(ctx context.Context, call *sdk.Call) (any, error) {
	h.calls.Add(1)
	op := func(o string) string { return Name + "/" + o }
	switch call.Operation {
	case op("say"):
		return call.Input, nil
	case op("caps"):
		return map[string]any{"capabilities": call.Capabilities.Names(), "calls": h.calls.Load()}, nil
	case op("stats"):
		return map[string]any{"calls": h.calls.Load()}, nil
	case op("env"):
		var names []string
		for _, kv := range os.Environ() {
			names = append(names, strings.SplitN(kv, "=", 2)[0])
		}
		sort.Strings(names)
		return names, nil
	case op("crash"):
		go func() {
			time.Sleep(10 * time.Millisecond)
			os.Exit(3)
		}()
		return "crashing", nil
	case op("ticks"):
		var q struct {
			Count      int `json:"count"`
			IntervalMS int `json:"interval_ms"`
		}
		if err := json.Unmarshal(call.Input, &q); err != nil {
			return nil, sdk.Errorf("INVALID_INPUT", "want {\"count\": n}")
		}
		for i := range q.Count {
			if q.IntervalMS > 0 {
				select {
				case <-time.After(time.Duration(q.IntervalMS) * time.Millisecond):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if err := call.Emit(map[string]int{"n": i}); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	return nil, sdk.Errorf("NOT_FOUND", "operation not found: %s", call.Operation)
}
