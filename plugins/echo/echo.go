// Package echo is the reference Alknet plugin: the alknet/echo ALPN (every
// stream is echoed back) and a handful of operations used by tests and as
// a worked example of the SDK.
package echo

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// Build-time knobs (-ldflags "-X alknet.dev/alknet/plugins/echo.Version=…"):
// the version, and — for tests that need a second, independent plugin or a
// plugin of another protocol — the name (which also names the ALPN
// alknet/<name> and the operations <name>/…) and the protocol version
// (empty: the SDK's).
var (
	Version  = "0.1.0"
	Name     = "echo"
	Protocol = ""
)

// ALPN served by the plugin.
func ALPN() string { return "alknet/" + Name }

// Plugin is the echo plugin.
type Plugin struct {
	calls atomic.Int64 // operations that reached the plugin
}

var (
	_ sdk.ConnServer   = (*Plugin)(nil)
	_ sdk.OperationSet = (*Plugin)(nil)
)

// Info describes the echo plugin.
func (p *Plugin) Info() sdk.Info {
	i := sdk.Info{Name: Name, Version: Version, ALPNs: []string{ALPN()},
		Description: "echoes streams; example and test operations",
		Capabilities: []sdk.CapabilitySpec{
			{Name: "echo_secret", Description: "any secret, to show how capabilities arrive (optional)"},
		}}
	if v, err := strconv.Atoi(Protocol); err == nil {
		i.ProtocolVersions = []int{v}
	}
	return i
}

// ServeConn echoes every stream until the peer half-closes it.
func (p *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	c.EachStream(ctx, func(s *sdk.Stream) {
		buf := make([]byte, 256<<10)
		if _, err := io.CopyBuffer(s, s, buf); err != nil {
			s.CancelWrite(1)
			return
		}
		_ = s.Close()
	})
	return nil
}

// Ticks is the input of echo/ticks.
type Ticks struct {
	Count      int `json:"count"`
	IntervalMS int `json:"interval_ms,omitempty"`
}

// Tick is one item of echo/ticks.
type Tick struct {
	N int `json:"n"`
}

// Operations are the echo operations.
func (p *Plugin) Operations() []sdk.Op {
	op := func(o string) string { return Name + "/" + o }
	return []sdk.Op{
		sdk.Query(op("say"), p.say).RemoteSafe().Describe("returns its input"),
		sdk.Subscription(op("ticks"), p.ticks).RemoteSafe().
			Describe(`streams {"n": i} for i < count, every interval_ms`).
			InputSchema(json.RawMessage(`{"type":"object","required":["count"],"additionalProperties":false,"properties":{"count":{"type":"integer","minimum":0,"maximum":1000000},"interval_ms":{"type":"integer","minimum":0,"maximum":60000}}}`)),
		sdk.Query(op("caps"), p.caps).RequireScopes("echo:caps").
			Describe("names (never values) of the capabilities this call received, and how many calls reached the plugin"),
		sdk.Query(op("env"), p.env).Internal().Describe("names of the plugin process's environment variables (isolation test)"),
		sdk.Mutation(op("crash"), p.crash).Internal().Describe("exits the plugin process (crash test)"),
		sdk.Query(op("stats"), p.stats).RemoteSafe().Describe("how many operation calls reached the plugin, and its GOMAXPROCS"),
	}
}

func (p *Plugin) say(_ context.Context, _ *sdk.Call, in json.RawMessage) (json.RawMessage, error) {
	p.calls.Add(1)
	return in, nil
}

func (p *Plugin) ticks(ctx context.Context, _ *sdk.Call, in Ticks, emit func(Tick) error) error {
	p.calls.Add(1)
	for i := range in.Count {
		if in.IntervalMS > 0 {
			select {
			case <-time.After(time.Duration(in.IntervalMS) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := emit(Tick{N: i}); err != nil {
			return err
		}
	}
	return nil
}

// CapsReport is the output of echo/caps.
type CapsReport struct {
	Capabilities []string `json:"capabilities"`
	Calls        int64    `json:"calls"`
}

func (p *Plugin) caps(_ context.Context, c *sdk.Call, _ struct{}) (CapsReport, error) {
	return CapsReport{Capabilities: c.Capabilities.Names(), Calls: p.calls.Add(1)}, nil
}

// Stats is the output of echo/stats.
type Stats struct {
	Calls int64 `json:"calls"`
	// GOMAXPROCS is the threads the plugin's Go scheduler runs on (the
	// node sets it from the plugin's CPU quota).
	GOMAXPROCS int `json:"gomaxprocs"`
}

func (p *Plugin) stats(context.Context, *sdk.Call, struct{}) (Stats, error) {
	return Stats{Calls: p.calls.Add(1), GOMAXPROCS: runtime.GOMAXPROCS(0)}, nil
}

func (p *Plugin) env(context.Context, *sdk.Call, struct{}) ([]string, error) {
	p.calls.Add(1)
	var names []string
	for _, kv := range os.Environ() {
		names = append(names, strings.SplitN(kv, "=", 2)[0])
	}
	sort.Strings(names)
	return names, nil
}

func (p *Plugin) crash(context.Context, *sdk.Call, struct{}) (string, error) {
	go func() {
		time.Sleep(10 * time.Millisecond)
		os.Exit(3)
	}()
	return "crashing", nil
}
