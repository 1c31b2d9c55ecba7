package node

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/pluginhost"
)

// Stats is what node/stats reports: what an operator needs to see an
// attack or a leak (docs/json.md describes the shape).
type Stats struct {
	ID            string                 `json:"id"`
	Version       string                 `json:"version"`
	UptimeSeconds float64                `json:"uptime_seconds"`
	Goroutines    int                    `json:"goroutines"`
	RSSBytes      int64                  `json:"rss_bytes"`
	HeapBytes     uint64                 `json:"heap_bytes"`
	Connections   int                    `json:"connections"`
	Sources       int                    `json:"sources"`
	RequestBytes  BudgetUse              `json:"request_bytes"`
	Calls         []call.SessionStats    `json:"call_connections"`
	Plugins       []pluginhost.PluginUse `json:"plugins"`
	Imports       []ImportStatus         `json:"imports,omitempty"`
}

// BudgetUse is a budget's use against its limit.
type BudgetUse struct {
	Used  int64 `json:"used"`
	Limit int64 `json:"limit"`
}

// nodeStats is the built-in node/stats operation (admin).
func (n *Node) nodeStats() call.Registration {
	return call.Registration{
		Spec: call.Spec{Name: "node/stats", OpType: call.Query, Description: "goroutines, memory, connections, call connections with their requests in flight and budget use, plugins with their connections and calls in flight",
			AccessControl: call.AccessControl{RequiredScopes: []string{"admin"}}},
		Call: func(context.Context, json.RawMessage) (any, error) { return n.Stats(), nil },
	}
}

// Stats measures the node now.
func (n *Node) Stats() Stats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	conns, sources := n.ep.Counts()
	return Stats{ID: n.fp, Version: n.opts.Version, UptimeSeconds: time.Since(n.started).Seconds(),
		Goroutines: runtime.NumGoroutine(), RSSBytes: selfRSS(), HeapBytes: ms.HeapAlloc,
		Connections: conns, Sources: sources,
		RequestBytes: BudgetUse{Used: n.budget.Used(), Limit: n.budget.Limit()},
		Calls:        n.callAdapter.Sessions(), Plugins: n.plugins.Use(), Imports: n.importStatus()}
}

// selfRSS is this process's resident set (Linux /proc), 0 elsewhere.
func selfRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
