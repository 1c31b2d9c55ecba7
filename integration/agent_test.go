package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// providerScript is a scripted OpenAI-compatible server: real HTTP on
// loopback, answering /v1/chat/completions with server-sent events. Each
// request is recorded and answered by the step of its number.
type providerScript struct {
	t     *testing.T
	srv   *httptest.Server
	mu    sync.Mutex
	reqs  []providerRequest
	steps []func(w http.ResponseWriter, r *http.Request, req providerRequest)
}

type providerRequest struct {
	auth string
	body struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Role       string `json:"role"`
			Content    string `json:"content"`
			ToolCallID string `json:"tool_call_id"`
		} `json:"messages"`
		Tools []struct {
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		} `json:"tools"`
	}
}

func newProviderScript(t *testing.T, steps ...func(w http.ResponseWriter, r *http.Request, req providerRequest)) *providerScript {
	p := &providerScript{t: t, steps: steps}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req providerRequest
		req.auth = r.Header.Get("Authorization")
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &req.body); err != nil || r.URL.Path != "/v1/chat/completions" {
			t.Errorf("provider got %s %s: %v", r.Method, r.URL.Path, err)
		}
		p.mu.Lock()
		p.reqs = append(p.reqs, req)
		n := len(p.reqs)
		p.mu.Unlock()
		if n > len(p.steps) {
			t.Errorf("the agent made request %d; the script has %d", n, len(p.steps))
			http.Error(w, "no more steps", 500)
			return
		}
		p.steps[n-1](w, r, req)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// offered is the names of the tools the request offered, space-separated.
func (r providerRequest) offered() string {
	var names []string
	for _, tl := range r.body.Tools {
		names = append(names, tl.Function.Name)
	}
	return strings.Join(names, " ")
}

func (p *providerScript) requests() []providerRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]providerRequest(nil), p.reqs...)
}

// sse writes the events, each flushed, then [DONE].
func sse(w http.ResponseWriter, events ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	for _, e := range append(events, "[DONE]") {
		fmt.Fprintf(w, "data: %s\n\n", e)
		w.(http.Flusher).Flush()
	}
}

func chunk(delta string, finish string) string {
	f := "null"
	if finish != "" {
		f = `"` + finish + `"`
	}
	return `{"id":"c1","object":"chat.completion.chunk","model":"scripted","choices":[{"index":0,"delta":` + delta + `,"finish_reason":` + f + `}]}`
}

func toolDelta(index int, id, name, args string) string {
	head := ""
	if id != "" {
		head = fmt.Sprintf(`"id":%q,"type":"function",`, id)
	}
	fn := fmt.Sprintf(`"arguments":%q`, args)
	if name != "" {
		fn = fmt.Sprintf(`"name":%q,`, name) + fn
	}
	return chunk(fmt.Sprintf(`{"tool_calls":[{"index":%d,%s"function":{%s}}]}`, index, head, fn), "")
}

func usage(total int) string {
	return fmt.Sprintf(`{"id":"c1","object":"chat.completion.chunk","model":"scripted","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":0,"total_tokens":%d}}`, total, total)
}

// agentNode is a node with the agent plugin, a provider "scripted" whose
// key is stored in the node's credentials, and a client machine allowed
// agent:run.
type agentNode struct {
	t      *testing.T
	node   *cli
	srv    *server
	client *cli
	key    string
}

func startAgentNode(t *testing.T, provider *providerScript, settings string) *agentNode {
	t.Helper()
	return startAgentNodeWith(t, provider, settings, "", "agent:run")
}

// startAgentNodeWith also puts nodeConfig (top-level keys and tables) in
// the node's file and gives the client scopes.
func startAgentNodeWith(t *testing.T, provider *providerScript, settings, nodeConfig string, scopes ...string) *agentNode {
	t.Helper()
	if _, err := os.Stat(filepath.Join(binDir, "alknet-plugin-agent")); err != nil {
		t.Fatalf("alknet-plugin-agent was not built: %v", err)
	}
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	n := &agentNode{t: t, node: newCLI(t, nil), key: "sk-canary-" + hex.EncodeToString(raw)}
	client, clientFP := fsClient(t)
	n.client = client
	n.node.ok("", "init", "--show-mnemonic-once")
	n.node.ok(n.key+"\n", "credential", "set", "scripted")
	quoted, _ := json.Marshal(scopes)
	cfg := fmt.Sprintf(`enable_diag = true
%s
[plugins.agent]
%s
[plugins.agent.providers.scripted]
base_url = %q
model = "scripted-1"

[plugins.agent.capabilities]
scripted = "credential:scripted"

[[auth.peers]]
peer_id = "client"
fingerprints = [%q]
scopes = %s
`, nodeConfig, settings, provider.srv.URL+"/v1", clientFP, quoted)
	path := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), cfg, 0o600)
	n.srv = startServe(t, n.node, "--config", path)
	waitFor(t, "the agent plugin", func() bool {
		return n.client.run("", "agent", "sessions", "--peer", n.srv.FP, n.srv.Addr).code == 0
	})
	return n
}

// run runs `alknet agent run --json` and returns its events.
func (n *agentNode) run(prompt string, args ...string) ([]map[string]any, result) {
	n.t.Helper()
	r := n.client.run("", append([]string{"agent", "run", "--json", "--peer", n.srv.FP, n.srv.Addr, prompt}, args...)...)
	var events []map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			n.t.Fatalf("agent run printed %q: %v", sc.Text(), err)
		}
		events = append(events, e)
	}
	return events, r
}

// TestAgentSession: a scripted model calls echo/say (its arguments split
// across chunks mid-token) and echo/caps, which the session's identity may
// not call (so it is not offered, and calling it anyway is a FORBIDDEN tool
// result), then answers. The events, the messages the model got back and
// the final text are checked; the provider key is in the Authorization
// header the provider received and nowhere else.
func TestAgentSession(t *testing.T) {
	prov := newProviderScript(t,
		func(w http.ResponseWriter, _ *http.Request, req providerRequest) {
			sse(w,
				chunk(`{"role":"assistant","content":"Let me "}`, ""),
				chunk(`{"content":"check."}`, ""),
				toolDelta(0, "call_a", "echo__say", `{"te`),
				toolDelta(0, "", "", `xt": "hé`),
				toolDelta(0, "", "", `llo"}`),
				toolDelta(1, "call_b", "echo__caps", `{}`),
				chunk(`{}`, "tool_calls"),
				usage(40))
		},
		func(w http.ResponseWriter, _ *http.Request, req providerRequest) {
			sse(w, chunk(`{"content":"Done: "}`, ""), chunk(`{"content":"héllo"}`, ""), chunk(`{}`, "stop"), usage(60))
		})
	n := startAgentNode(t, prov, "persist = true\ntools = [\"echo/*\", \"diag/say\"]\n")
	events, r := n.run("Say héllo through the echo tool")
	if r.code != 0 {
		t.Fatalf("agent run: exit %d: %s", r.code, r.stderr)
	}
	var seq []string
	var final string
	results := map[string]map[string]any{}
	for _, e := range events {
		typ := e["type"].(string)
		if typ != "delta" || len(seq) == 0 || seq[len(seq)-1] != "delta" {
			seq = append(seq, typ)
		}
		switch typ {
		case "tool_result":
			results[e["operation"].(string)] = e
		case "final":
			final, _ = e["text"].(string)
		}
	}
	// Step 1's usage comes when its answer has streamed, before its tools
	// run; the two tool results may come in either order.
	want := "session delta usage tool_call tool_call tool_result tool_result delta usage final"
	if got := strings.Join(seq, " "); got != want {
		t.Errorf("events: %s\nwant    %s", got, want)
	}
	if final != "Done: héllo" {
		t.Errorf("final text %q", final)
	}
	if res := results["echo/say"]; res == nil || res["error"] == true || !strings.Contains(fmt.Sprint(res["result"]), "héllo") {
		t.Errorf("echo/say result: %v", res)
	}
	if res := results["echo/caps"]; res == nil || res["error"] != true || !strings.Contains(fmt.Sprint(res["result"]), "FORBIDDEN") {
		t.Errorf("echo/caps result: %v", res)
	}

	reqs := prov.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d provider requests", len(reqs))
	}
	if got := reqs[0].offered(); !strings.Contains(got, "echo__say") || strings.Contains(got, "echo__caps") || strings.Contains(got, "diag__sleep") {
		t.Errorf("tools offered: %s (want echo__say and diag__say; not echo__caps, which the caller may not call, nor diag__sleep, outside the patterns)", got)
	}
	var toolMsgs []string
	for _, m := range reqs[1].body.Messages {
		if m.Role == "tool" {
			toolMsgs = append(toolMsgs, m.ToolCallID+"="+m.Content)
		}
	}
	if len(toolMsgs) != 2 || !strings.HasPrefix(toolMsgs[0], `call_a={"text":"héllo"}`) || !strings.Contains(toolMsgs[1], `call_b={"error":{"code":"FORBIDDEN"`) {
		t.Errorf("tool results sent back to the model: %q", toolMsgs)
	}
	for i, req := range reqs {
		if req.auth != "Bearer "+n.key {
			t.Errorf("provider request %d: Authorization %q", i, req.auth)
		}
		if !req.body.Stream || req.body.Model != "scripted-1" {
			t.Errorf("provider request %d: stream %v model %q", i, req.body.Stream, req.body.Model)
		}
	}

	// The key is nowhere else: not in the node's log, the client's output,
	// any process's environment or arguments, or the session's history.
	if strings.Contains(n.srv.logs.String(), n.key) || strings.Contains(r.stdout+r.stderr, n.key) {
		t.Error("the provider key is in a log or the client's output")
	}
	for _, pid := range alknetPIDs(t, n.node.dataDir) {
		for _, f := range []string{"environ", "cmdline"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err == nil && bytes.Contains(b, []byte(n.key)) {
				t.Errorf("the provider key is in /proc/%d/%s", pid, f)
			}
		}
	}
	hist, _ := filepath.Glob(filepath.Join(n.node.dataDir, "agent", "*.jsonl"))
	if len(hist) != 1 {
		t.Fatalf("history files: %v", hist)
	}
	b, err := os.ReadFile(hist[0])
	if err != nil || bytes.Contains(b, []byte(n.key)) || !bytes.Contains(b, []byte("Done: héllo")) || !bytes.Contains(b, []byte(`"tool_call_id":"call_a"`)) {
		t.Errorf("history %s (%v):\n%s", hist[0], err, b)
	}
	if fi, err := os.Stat(hist[0]); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("history file mode: %v %v", fi.Mode(), err)
	}
	// One line at each end of the session, without the prompt or the answer.
	logs := n.srv.logs.String()
	if !strings.Contains(logs, "agent session started") || !strings.Contains(logs, "agent session ended") ||
		!strings.Contains(logs, "steps=2") || !strings.Contains(logs, "tokens=100") || strings.Contains(logs, "héllo") {
		t.Errorf("node log:\n%s", logs)
	}
}

// alknetPIDs are the processes whose executable or arguments name dir
// (the node and its plugins).
func alknetPIDs(t *testing.T, dir string) []int {
	t.Helper()
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if strings.Contains(string(cmd), dir) || strings.Contains(exe, dir) {
			pids = append(pids, pid)
		}
	}
	if len(pids) < 2 {
		t.Fatalf("found %d processes of the node in %s", len(pids), dir)
	}
	return pids
}

// TestAgentCancel: cancelling a session in the middle of a tool call
// aborts the tool (diag/sleep sees its context cancelled); cancelling one
// waiting for the model closes the model request.
func TestAgentCancel(t *testing.T) {
	modelClosed := make(chan struct{})
	modelWaiting := make(chan struct{})
	prov := newProviderScript(t,
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, toolDelta(0, "call_s", "diag__sleep", `{"ms": 600000}`), chunk(`{}`, "tool_calls"))
		},
		func(w http.ResponseWriter, r *http.Request, _ providerRequest) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			close(modelWaiting)
			<-r.Context().Done()
			close(modelClosed)
		})
	n := startAgentNode(t, prov, `tools = ["diag/*"]`)
	diag := func() (running, cancelled int) {
		out := n.client.ok("", "call", "--peer", n.srv.FP, n.srv.Addr, "/diag/stats")
		var s struct{ Running, Cancelled int }
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		return s.Running, s.Cancelled
	}
	sessionID := func() string {
		var ss []struct {
			ID       string    `json:"id"`
			Provider string    `json:"provider"`
			Model    string    `json:"model"`
			State    string    `json:"state"`
			Started  time.Time `json:"started"`
			Steps    int       `json:"steps"`
			Tokens   int       `json:"tokens"`
		}
		decodeJSON(t, "agent sessions", n.client.ok("", "agent", "sessions", "--json", "--peer", n.srv.FP, n.srv.Addr), &ss)
		for _, s := range ss {
			if s.State == "running" {
				return s.ID
			}
		}
		return ""
	}
	cmd, out := n.startRun("sleep, please")
	waitFor(t, "the tool to run", func() bool { r, _ := diag(); return r == 1 })
	id := sessionID()
	n.client.ok("", "agent", "cancel", "--peer", n.srv.FP, n.srv.Addr, id)
	waitFor(t, "the tool to be cancelled", func() bool { r, c := diag(); return r == 0 && c == 1 })
	if err := cmd.Wait(); err == nil {
		t.Errorf("agent run of a cancelled session exited 0: %s", out)
	}

	// A second session's first model request is the script's second step,
	// which never answers: the session is cancelled there.
	cmd, out = n.startRun("sleep, please")
	select {
	case <-modelWaiting:
	case <-time.After(30 * time.Second):
		t.Fatalf("the model request never came: %s", out)
	}
	n.client.ok("", "agent", "cancel", "--peer", n.srv.FP, n.srv.Addr, sessionID())
	select {
	case <-modelClosed:
	case <-time.After(30 * time.Second):
		t.Fatal("the model request stayed open after the session was cancelled")
	}
	_ = cmd.Wait()
}

// TestAgentBudgetsAndText: a provider that never answers meets the
// session's time budget, with an error that says so; a 429 with
// Retry-After: 1 is retried after a second; `alknet agent run` without
// --json prints the answer as text and the tool calls on stderr.
func TestAgentBudgetsAndText(t *testing.T) {
	var first time.Time
	prov := newProviderScript(t,
		func(w http.ResponseWriter, r *http.Request, _ providerRequest) { // session 1: never answers
			<-r.Context().Done()
		},
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) { // session 2: rate limited once
			first = time.Now()
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":{"message":"slow down"}}`, http.StatusTooManyRequests)
		},
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			if waited := time.Since(first); waited < time.Second {
				t.Errorf("the retry after a 429 with Retry-After: 1 came after %v", waited)
			}
			sse(w, toolDelta(0, "call_1", "echo__say", `"hi"`), chunk(`{}`, "tool_calls"), usage(10))
		},
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, chunk(`{"content":"It said "}`, ""), chunk(`{"content":"hi."}`, ""), chunk(`{}`, "stop"), usage(20))
		})
	n := startAgentNode(t, prov, "time_budget = \"2s\"\ntools = [\"echo/say\"]\n")
	r := n.client.run("", "agent", "run", "--peer", n.srv.FP, n.srv.Addr, "anyone there?")
	if r.code != 1 || !strings.Contains(r.stderr, "TIMEOUT") || !strings.Contains(r.stderr, "time budget (2s)") {
		t.Errorf("a provider that never answers: exit %d\n%s", r.code, r.stderr)
	}
	r = n.client.run("", "agent", "run", "--peer", n.srv.FP, n.srv.Addr, "say hi")
	if r.code != 0 || r.stdout != "It said hi.\n" || !strings.Contains(r.stderr, `→ echo/say "hi"`) || !strings.Contains(r.stderr, `← echo/say "hi"`) {
		t.Errorf("agent run: exit %d\nstdout %q\nstderr %q", r.code, r.stdout, r.stderr)
	}
	if got := len(prov.requests()); got != 4 {
		t.Errorf("%d provider requests, want 4", got)
	}
}

// TestAgentPeerTools: a session uses operations of a second node process
// through that node's agent plugin (alknet/agent, dialed as this node and
// pinned): echo/say runs there; echo/caps, not remote_safe, is neither
// offered nor callable there (NOT_FOUND); cancelling a session in the
// middle of a tool on the peer cancels the handler there.
func TestAgentPeerTools(t *testing.T) {
	peer := newCLI(t, nil)
	peer.ok("", "init", "--show-mnemonic-once")
	pcfg := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), "enable_diag = true\n", 0o600)
	psrv := startServe(t, peer, "--config", pcfg)
	prov := newProviderScript(t,
		func(w http.ResponseWriter, _ *http.Request, req providerRequest) {
			sse(w, toolDelta(0, "call_1", "b__echo__say", `{"text":"from b"}`), toolDelta(1, "call_2", "b__echo__caps", `{}`), chunk(`{}`, "tool_calls"), usage(5))
		},
		func(w http.ResponseWriter, _ *http.Request, req providerRequest) {
			sse(w, chunk(`{"content":"ok"}`, ""), chunk(`{}`, "stop"), usage(5))
		},
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, toolDelta(0, "call_s", "b__diag__sleep", `{"ms": 600000}`), chunk(`{}`, "tool_calls"))
		})
	n := startAgentNode(t, prov, fmt.Sprintf("peers = [{name = \"b\", target = %q}]\n", psrv.FP+"@"+psrv.Addr))
	onPeer := func(op string) map[string]int {
		var m map[string]int
		decodeJSON(t, op, n.client.ok("", "call", "--peer", psrv.FP, psrv.Addr, op), &m)
		return m
	}
	echoBefore := onPeer("/echo/stats")

	events, r := n.run("use b")
	if r.code != 0 {
		t.Fatalf("agent run: exit %d: %s", r.code, r.stderr)
	}
	results := map[string]map[string]any{}
	for _, e := range events {
		if e["type"] == "tool_result" {
			results[e["operation"].(string)] = e
		}
	}
	if res := results["b/echo/say"]; res == nil || res["error"] == true || fmt.Sprint(res["result"]) != "map[text:from b]" {
		t.Errorf("b/echo/say: %v", res)
	}
	if res := results["b/echo/caps"]; res == nil || res["error"] != true || !strings.Contains(fmt.Sprint(res["result"]), "NOT_FOUND") {
		t.Errorf("b/echo/caps: %v", res)
	}
	if after := onPeer("/echo/stats"); fmt.Sprint(after) == fmt.Sprint(echoBefore) {
		t.Errorf("echo/stats on the peer did not move: %v → %v", echoBefore, after)
	}
	if got := prov.requests()[0].offered(); !strings.Contains(got, "b__echo__say") || !strings.Contains(got, "b__diag__sleep") || strings.Contains(got, "b__echo__caps") {
		t.Errorf("tools offered: %s", got)
	}

	cmd, _ := n.startRun("sleep on b")
	waitFor(t, "the tool to run on the peer", func() bool { return onPeer("/diag/stats")["running"] == 1 })
	var ss []struct {
		ID       string    `json:"id"`
		Provider string    `json:"provider"`
		Model    string    `json:"model"`
		State    string    `json:"state"`
		Started  time.Time `json:"started"`
		Steps    int       `json:"steps"`
		Tokens   int       `json:"tokens"`
	}
	decodeJSON(t, "agent sessions", n.client.ok("", "agent", "sessions", "--json", "--peer", n.srv.FP, n.srv.Addr), &ss)
	for _, s := range ss {
		if s.State == "running" {
			n.client.ok("", "agent", "cancel", "--peer", n.srv.FP, n.srv.Addr, s.ID)
		}
	}
	waitFor(t, "the peer's handler to be cancelled", func() bool {
		s := onPeer("/diag/stats")
		return s["running"] == 0 && s["cancelled"] == 1
	})
	_ = cmd.Wait()
}

// TestAgentToolsImportedOverCall: the node imports a second node's
// operations ([[call.imports]]) and a session uses them as tools next to a
// local one: the calls go to the peer over alknet/call, as this node, for
// a caller holding the import's scope; an abort reaches the peer's
// handler; when the peer goes away its operations do, and they come back
// with it.
func TestAgentToolsImportedOverCall(t *testing.T) {
	peer := newCLI(t, nil)
	peer.ok("", "init", "--show-mnemonic-once")
	pcfg := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), "enable_diag = true\n", 0o600)
	psrv := startServe(t, peer, "--config", pcfg)
	prov := newProviderScript(t,
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, toolDelta(0, "call_1", "echo__say", `"here"`), toolDelta(1, "call_2", "c__echo__say", `{"text":"from c"}`),
				toolDelta(2, "call_3", "c__echo__caps", `{}`), chunk(`{}`, "tool_calls"), usage(5))
		},
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, chunk(`{"content":"Both "}`, ""), chunk(`{"content":"answered."}`, ""), chunk(`{}`, "stop"), usage(5))
		},
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, toolDelta(0, "call_s", "c__diag__sleep", `{"ms": 600000}`), chunk(`{}`, "tool_calls"))
		})
	imports := fmt.Sprintf("\n[[call.imports]]\nname = \"c\"\ntarget = %q\noperations = [\"echo/*\", \"diag/*\"]\n", psrv.FP+"@"+psrv.Addr)
	n := startAgentNodeWith(t, prov, "", imports, "agent:run", "peer:c")
	listed := func() string {
		var l struct {
			Operations []struct {
				Name string `json:"name"`
			} `json:"operations"`
		}
		if err := json.Unmarshal([]byte(n.client.ok("", "call", "--peer", n.srv.FP, n.srv.Addr, "/services/list")), &l); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, op := range l.Operations {
			names = append(names, op.Name)
		}
		return " " + strings.Join(names, " ") + " "
	}
	waitFor(t, "the peer's operations to be imported", func() bool { return strings.Contains(listed(), " c/echo/say ") })
	imported := func() (connected bool, ops int, errText string) {
		var st struct {
			Imports []struct {
				Name       string `json:"name"`
				Target     string `json:"target"`
				Connected  bool   `json:"connected"`
				Operations int    `json:"operations"`
				Error      string `json:"error"`
			} `json:"imports"`
		}
		if err := json.Unmarshal([]byte(n.node.ok("", "status", "--json")), &st); err != nil || len(st.Imports) != 1 || st.Imports[0].Name != "c" || st.Imports[0].Target != psrv.FP+"@"+psrv.Addr {
			t.Fatalf("status --json imports: %+v %v", st, err)
		}
		return st.Imports[0].Connected, st.Imports[0].Operations, st.Imports[0].Error
	}
	if c, ops, e := imported(); !c || ops < 2 || e != "" {
		t.Errorf("status --json: connected %v, %d operations, error %q", c, ops, e)
	}
	if out := n.node.ok("", "status"); !regexp.MustCompile(`(?m)^c\s+\S+\s+connected\s+\d+`).MatchString(out) {
		t.Errorf("alknet status does not show the import:\n%s", out)
	}
	if l := listed(); strings.Contains(l, " c/echo/caps ") || strings.Contains(l, " c/services/list ") {
		t.Errorf("imported more than the remote-safe operations call.imports.operations names: %s", l)
	}
	onPeer := func(op string) map[string]int {
		var m map[string]int
		decodeJSON(t, op, n.client.ok("", "call", "--peer", psrv.FP, psrv.Addr, op), &m)
		return m
	}
	// Called directly as the README shows; a caller without the scope
	// is refused here, before anything reaches the peer.
	if out := n.client.ok("", "call", "--peer", n.srv.FP, n.srv.Addr, "/c/echo/say", `"direct"`); strings.TrimSpace(out) != `"direct"` {
		t.Errorf("c/echo/say: %q", out)
	}
	stranger, _ := fsClient(t)
	if r := stranger.run("", "call", "--peer", n.srv.FP, n.srv.Addr, "/c/echo/say", `"x"`); r.code == 0 || !strings.Contains(r.stderr, "FORBIDDEN") {
		t.Errorf("c/echo/say by an identity without peer:c: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	echoBefore := onPeer("/echo/stats")

	events, r := n.run("use c")
	if r.code != 0 {
		t.Fatalf("agent run: exit %d: %s", r.code, r.stderr)
	}
	var types []string
	results := map[string]string{}
	final := ""
	for _, e := range events {
		types = append(types, fmt.Sprint(e["type"]))
		switch e["type"] {
		case "tool_result":
			results[fmt.Sprint(e["operation"])] = fmt.Sprintf("%v %v", e["error"], e["result"])
		case "final":
			final = fmt.Sprint(e["text"])
		}
	}
	if got := strings.Join(types, " "); got != "session usage tool_call tool_call tool_call tool_result tool_result tool_result delta delta usage final" {
		t.Errorf("events: %s", got)
	}
	if results["echo/say"] != "<nil> here" && results["echo/say"] != "false here" {
		t.Errorf("echo/say: %q", results["echo/say"])
	}
	if got := results["c/echo/say"]; got != "<nil> map[text:from c]" && got != "false map[text:from c]" {
		t.Errorf("c/echo/say: %q", got)
	}
	// Not remote-safe on the peer, so not imported: NOT_FOUND here.
	if got := results["c/echo/caps"]; !strings.HasPrefix(got, "true ") || !strings.Contains(got, "NOT_FOUND") {
		t.Errorf("c/echo/caps: %q", got)
	}
	if final != "Both answered." {
		t.Errorf("final text %q", final)
	}
	if after := onPeer("/echo/stats"); fmt.Sprint(after) == fmt.Sprint(echoBefore) {
		t.Errorf("echo/stats on the peer did not move: %v → %v", echoBefore, after)
	}
	if got := " " + prov.requests()[0].offered() + " "; !strings.Contains(got, " c__echo__say ") || !strings.Contains(got, " c__diag__sleep ") || strings.Contains(got, "c__echo__caps") {
		t.Errorf("tools offered: %s", got)
	}

	// Abort mid-tool: the handler on the peer is cancelled.
	cmd, _ := n.startRun("sleep on c")
	waitFor(t, "the tool to run on the peer", func() bool { return onPeer("/diag/stats")["running"] == 1 })
	n.cancelRunning()
	waitFor(t, "the peer's handler to be cancelled", func() bool {
		s := onPeer("/diag/stats")
		return s["running"] == 0 && s["cancelled"] == 1
	})
	_ = cmd.Wait()

	// The peer stops: its operations go; it is back: so are they.
	addr := psrv.Addr
	psrv.stop(syscall.SIGTERM)
	waitFor(t, "the operations of the stopped peer to go", func() bool { return !strings.Contains(listed(), " c/echo/say ") })
	waitFor(t, "status to show the import down", func() bool {
		c, ops, e := imported()
		return !c && ops == 0 && e != ""
	})
	startServeAt(t, peer, addr, "--config", pcfg)
	defer func() {
		if t.Failed() {
			t.Logf("node log:\n%s", n.srv.logs)
		}
	}()
	waitFor(t, "the operations to come back with the peer", func() bool { return strings.Contains(listed(), " c/echo/say ") })
}

// cancelRunning cancels the node's running agent sessions.
// startRun starts `alknet agent run` with prompt in the background; its
// output gathers in the buffer.
func (n *agentNode) startRun(prompt string) (*exec.Cmd, *bytes.Buffer) {
	n.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "alknet"), "--data-dir", n.client.dataDir, "agent", "run", "--peer", n.srv.FP, n.srv.Addr, prompt)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	return cmd, &out
}

func (n *agentNode) cancelRunning() {
	n.t.Helper()
	var ss []struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(n.client.ok("", "agent", "sessions", "--json", "--peer", n.srv.FP, n.srv.Addr)), &ss); err != nil {
		n.t.Fatal(err)
	}
	for _, s := range ss {
		if s.State == "running" {
			n.client.ok("", "agent", "cancel", "--peer", n.srv.FP, n.srv.Addr, s.ID)
		}
	}
}

// TestAgentChatInATerminal: `alknet agent chat` in a pseudo-terminal, two
// turns on alknet/agent: the first calls a tool, the second sees the whole
// conversation so far (the node keeps it for the chat); Ctrl-D ends it.
func TestAgentChatInATerminal(t *testing.T) {
	prov := newProviderScript(t,
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, toolDelta(0, "call_1", "echo__say", `"hi"`), chunk(`{}`, "tool_calls"), usage(10))
		},
		func(w http.ResponseWriter, _ *http.Request, _ providerRequest) {
			sse(w, chunk(`{"content":"It said "}`, ""), chunk(`{"content":"hi."}`, ""), chunk(`{}`, "stop"), usage(10))
		},
		func(w http.ResponseWriter, _ *http.Request, req providerRequest) {
			var roles []string
			for _, m := range req.body.Messages {
				roles = append(roles, m.Role+":"+m.Content)
			}
			if got := strings.Join(roles, "|"); !strings.HasPrefix(got, "user:say hi|assistant:|tool:\"hi\"|assistant:It said hi.|user:and again?") {
				t.Errorf("the second turn's history: %s", got)
			}
			sse(w, chunk(`{"content":"Again: hi."}`, ""), chunk(`{}`, "stop"), usage(10))
		})
	n := startAgentNode(t, prov, `tools = ["echo/say"]`)
	cmd := exec.Command(filepath.Join(binDir, "alknet"), "--data-dir", n.client.dataDir, "agent", "chat", "--peer", n.srv.FP, n.srv.Addr)
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var mu sync.Mutex
	var screen bytes.Buffer
	go func() { // ends when the terminal closes
		buf := make([]byte, 4096)
		for {
			k, err := tty.Read(buf)
			mu.Lock()
			screen.Write(buf[:k])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	shows := func(what string) {
		t.Helper()
		waitFor(t, fmt.Sprintf("the terminal to show %q", what), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return strings.Contains(screen.String(), what)
		})
	}
	shows("> ")
	fmt.Fprint(tty, "say hi\r")
	shows("It said hi.")
	shows(`← echo/say "hi"`)
	fmt.Fprint(tty, "and again?\r")
	shows("Again: hi.")
	fmt.Fprint(tty, "\x04") // Ctrl-D
	if err := cmd.Wait(); err != nil {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("agent chat: %v\n%s", err, screen.String())
	}
	if got := len(prov.requests()); got != 3 {
		t.Errorf("%d provider requests, want 3", got)
	}
}
