package integration

import (
	"encoding/json"
	"strings"
	"testing"
)

// `alknet status` beside a node shows what it holds (node/stats, as the
// node's operator); an anonymous caller learns only the node's id and
// ALPNs from node/info, and nothing from node/stats.
func TestStatusAndNodeInfoDisclosure(t *testing.T) {
	node := newCLI(t, nil)
	srv := startServe(t, node)
	out := node.ok("", "status", "--json")
	var st struct {
		ID          string `json:"id"`
		Goroutines  int    `json:"goroutines"`
		RSSBytes    int64  `json:"rss_bytes"`
		Connections int    `json:"connections"`
		Plugins     []struct {
			Name, State string
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.ID != srv.FP || st.Goroutines == 0 || st.RSSBytes == 0 || st.Connections < 1 || len(st.Plugins) == 0 {
		t.Fatalf("status --json: %+v", st)
	}
	text := node.ok("", "status")
	for _, want := range []string{srv.FP, "RSS", "goroutines", "PLUGIN", "echo", "ready"} {
		if !strings.Contains(text, want) {
			t.Fatalf("status lacks %q:\n%s", want, text)
		}
	}
	anon := callConn(t, srv, nil)
	info, err := anon.Call(tctx(t, 10e9), "node/info", nil)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(info, &m)
	if len(m) != 2 || m["id"] != srv.FP || m["alpns"] == nil {
		t.Fatalf("anonymous node/info shows %s; want the id and ALPNs only", info)
	}
	if _, err := anon.Call(tctx(t, 10e9), "node/stats", nil); err == nil || !strings.Contains(err.Error(), "FORBIDDEN") {
		t.Fatalf("anonymous node/stats: %v", err)
	}
	// A client that is not the operator: told what to do.
	other := newCLI(t, nil)
	if msg := other.fail("", "status", "--peer", srv.FP, srv.Addr); !strings.Contains(msg, "needs scope admin") {
		t.Fatalf("status from a stranger: %s", msg)
	}
}
