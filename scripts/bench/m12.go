package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"alknet.dev/alknet/core/call"
)

// agent: the agent plugin's loop (docs/spec/handlers.md, Agent) on a real
// `bin/alknet serve` with the echo and agent plugins alone. The model is a
// scripted OpenAI-compatible provider in this process (net/http on
// loopback): it answers each request at once with server-sent events built
// before the row starts — a call of the tool echo__say (operation echo/say)
// with callInput in each step but the last, which answers text. The
// session's caller is a key of its own with scope agent:run alone, over
// alknet/call (QUIC, the node pinned).
//
// The subject is agent/run sessions of agentSteps steps, timed from the
// subscription to its end, per step. The anchor is the same work without
// the agent: the session's agentSteps model requests (the bodies the agent
// sent in a first session, replayed by net/http from this process) and its
// agentSteps-1 echo/say calls over alknet/call by the same identity, back
// to back, per step. Δ is then what the loop itself adds to a step:
// encoding the history, reading the stream, the tool call's way through
// the plugin and the node's gates, the events streamed to the caller, and
// the session's setup (listing its tools) spread over its steps.
var m12 = []benchmark{
	{
		Name: "agent-step-overhead", Area: "agent", Unit: "µs", HigherIsBetter: false, Delta: true, Max: 1000,
		Description: fmt.Sprintf("agent/run sessions of %d steps over alknet/call (%d steps calling the tool echo__say = echo/say with %s, the last answering text), "+
			"the model a scripted OpenAI-compatible server in this process answering every request at once with pre-built SSE: session wall time per step "+
			"vs the same work without the agent — its %d model requests (the bodies the agent sent, replayed with net/http) and %d direct echo/say calls over alknet/call, per step; "+
			"Δ = the agent loop's own overhead per step, goal ≤ 1 ms",
			agentSteps, agentSteps-1, callInput, agentSteps, agentSteps-1),
		Rounds: 5, ShortRounds: 3,
		Subject: variant{Label: fmt.Sprintf("agent/run of %d steps, bin/alknet serve + agent and echo plugins, alknet/call (QUIC, pinned), per step", agentSteps), Start: startAgentSessions},
		Anchor:  variant{Label: fmt.Sprintf("%d model requests (net/http, this process) + %d echo/say calls over alknet/call, same node and provider, per step", agentSteps, agentSteps-1), Start: startAgentReplay},
	},
}

const (
	// agentSteps is the length of every session: agentSteps-1 tool calls,
	// then the answer. The node's max_steps is exactly this.
	agentSteps = 50
	// agentProvider names the scripted provider and the credential (and
	// capability) holding its key.
	agentProvider = "scripted"
	agentModel    = "scripted-1"
)

// agentSessions is how many sessions make one round of the subject (and
// how many replays one round of the anchor).
func agentSessions(short bool) int {
	if short {
		return 3
	}
	return 8
}

// agentCallerKey is the sessions' caller: scope agent:run alone, as a user
// of the agent has (the bench's own key is an admin of its nodes).
var agentCallerKey = sync.OnceValue(newBenchIdentity)

// agentRunInput is agent/run's input for every session.
var agentRunInput = json.RawMessage(`{"prompt":"Call echo/say ` + strconv.Itoa(agentSteps-1) + ` times, then say done.","tools":["echo/say"]}`)

// --- the scripted provider ---

// scriptedProvider answers POST /v1/chat/completions with answers[k],
// k being the number of tool results in the request's history (the step
// minus one), read with bytes.Count: nothing is decoded, nothing is built.
// While record is set it keeps each request's body, by k.
type scriptedProvider struct {
	answers [][]byte
	key     string // the Authorization header's key
	addr    string
	stop    func()

	record atomic.Bool
	mu     sync.Mutex
	bodies [][]byte
	bad    error // what a recorded request got wrong
}

// toolRole marks a tool result in the request body (encoding/json
// writes the messages without spaces; a quote inside content is escaped).
var toolRole = []byte(`"role":"tool"`)

func startScriptedProvider() (*scriptedProvider, error) {
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	p := &scriptedProvider{key: "sk-bench-" + hex.EncodeToString(raw), answers: agentAnswers(), bodies: make([][]byte, agentSteps)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/chat/completions", p)
	srv := &http.Server{Handler: mux}
	var serving sync.WaitGroup
	serving.Go(func() { _ = srv.Serve(ln) })
	p.addr, p.stop = ln.Addr().String(), func() { _ = srv.Close(); serving.Wait() }
	return p, nil
}

func (p *scriptedProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	k := bytes.Count(body, toolRole)
	if k >= len(p.answers) {
		http.Error(w, `{"error":{"message":"the script has no step `+strconv.Itoa(k+1)+`"}}`, http.StatusInternalServerError)
		return
	}
	if p.record.Load() {
		p.keep(k, r, body)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	_, _ = w.Write(p.answers[k])
}

// keep records the body of step k+1 and checks what the agent sent.
func (p *scriptedProvider) keep(k int, r *http.Request, body []byte) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	err := json.Unmarshal(body, &req)
	switch {
	case err != nil:
	case r.Header.Get("Authorization") != "Bearer "+p.key:
		err = errors.New("the request did not carry the provider's key")
	case !req.Stream || req.Model != agentModel:
		err = fmt.Errorf("the request asked for model %q, stream %v", req.Model, req.Stream)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bodies[k] = bytes.Clone(body)
	if err != nil && p.bad == nil {
		p.bad = fmt.Errorf("model request %d: %w", k+1, err)
	}
}

// agentAnswers are the provider's answers, as a chat-completions server
// streams them: for each step but the last, a call of echo__say with
// callInput, finish_reason tool_calls; for the last, the text "done",
// finish_reason stop; each followed by its usage and [DONE].
func agentAnswers() [][]byte {
	event := func(b *bytes.Buffer, data string) { fmt.Fprintf(b, "data: %s\n\n", data) }
	chunk := func(delta, finish string) string {
		return `{"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"` + agentModel + `","choices":[{"index":0,"delta":` + delta + `,"finish_reason":` + finish + `}]}`
	}
	usage := `{"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"` + agentModel + `","choices":[],"usage":{"prompt_tokens":16,"completion_tokens":4,"total_tokens":20}}`
	args, _ := json.Marshal(string(callInput))
	out := make([][]byte, agentSteps)
	for k := range out {
		var b bytes.Buffer
		if k < agentSteps-1 {
			event(&b, chunk(`{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_`+strconv.Itoa(k+1)+
				`","type":"function","function":{"name":"echo__say","arguments":`+string(args)+`}}]}`, "null"))
			event(&b, chunk(`{}`, `"tool_calls"`))
		} else {
			event(&b, chunk(`{"role":"assistant","content":"done"}`, "null"))
			event(&b, chunk(`{}`, `"stop"`))
		}
		event(&b, usage)
		event(&b, "[DONE]")
		out[k] = b.Bytes()
	}
	return out
}

// --- the node ---

// agentRig is what both sides of the row share: the provider, a node whose
// agent plugin uses it, and the model requests of one session. The first
// acquire starts it, the last release stops it.
var agentRig struct {
	mu   sync.Mutex
	refs int
	prov *scriptedProvider
	n    *node
}

func acquireAgentRig(ctx context.Context) (*scriptedProvider, *node, error) {
	agentRig.mu.Lock()
	defer agentRig.mu.Unlock()
	if agentRig.refs == 0 {
		prov, err := startScriptedProvider()
		if err != nil {
			return nil, nil, err
		}
		n, err := startAgentNode(ctx, prov)
		if err == nil {
			err = recordSession(ctx, prov, n)
			if err != nil {
				n.close()
			}
		}
		if err != nil {
			prov.stop()
			return nil, nil, err
		}
		agentRig.prov, agentRig.n = prov, n
	}
	agentRig.refs++
	return agentRig.prov, agentRig.n, nil
}

func releaseAgentRig() {
	agentRig.mu.Lock()
	defer agentRig.mu.Unlock()
	if agentRig.refs--; agentRig.refs == 0 {
		agentRig.n.close()
		agentRig.prov.stop()
		agentRig.prov, agentRig.n = nil, nil
	}
}

// startAgentNode starts `alknet serve` with the agent and echo plugins
// alone (every other plugin in ./bin disabled), the provider's key stored
// with `alknet credential set` and granted to the agent plugin, and waits
// until both plugins are ready.
func startAgentNode(ctx context.Context, prov *scriptedProvider) (*node, error) {
	bin, err := alknetBinary()
	if err != nil {
		return nil, err
	}
	h, err := makeNodeHome()
	if err != nil {
		return nil, err
	}
	// The node's own data directory, prepared as its operator would.
	admin := benchClient{bin: bin, dataDir: filepath.Join(h.root, "data"), xdg: filepath.Join(h.root, "xdg")}
	_, err = admin.run(ctx, time.Minute, "init", "--show-mnemonic-once")
	if err == nil {
		_, err = admin.runInput(ctx, time.Minute, []byte(prov.key+"\n"), "credential", "set", agentProvider)
	}
	if err == nil {
		err = h.writeConfig(fmt.Sprintf("[[auth.peers]]\npeer_id = \"bench-agent\"\nfingerprints = [%q]\nscopes = [\"agent:run\"]\n\n"+
			"[plugins.agent]\ntools = [\"echo/say\"]\nmax_steps = %d\n\n"+
			"[plugins.agent.providers.%s]\nbase_url = %q\nmodel = %q\n\n"+
			"[plugins.agent.capabilities]\n%s = \"credential:%s\"\n",
			agentCallerKey().fp, agentSteps, agentProvider, "http://"+prov.addr+"/v1", agentModel, agentProvider, agentProvider), "agent")
	}
	if err != nil {
		h.remove()
		return nil, err
	}
	return startNodeIn(ctx, h, "echo", "agent")
}

// connectAgentCaller connects to the node's alknet/call over QUIC as the
// sessions' caller, the node pinned.
func connectAgentCaller(ctx context.Context, n *node) (*call.Connection, error) {
	cert := agentCallerKey().cert
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return call.New(nil).Connect(ctx, n.addr, call.Credentials{TLS: &cert, Peer: n.fp, QUIC: true})
}

// recordSession runs one session with the provider keeping the bodies of
// its model requests: the anchor replays them.
func recordSession(ctx context.Context, prov *scriptedProvider, n *node) error {
	conn, err := connectAgentCaller(ctx, n)
	if err != nil {
		return err
	}
	defer conn.Close()
	prov.record.Store(true)
	_, err = agentSession(ctx, conn)
	prov.record.Store(false)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, n.proc.logs)
	}
	prov.mu.Lock()
	defer prov.mu.Unlock()
	if prov.bad != nil {
		return prov.bad
	}
	for k, b := range prov.bodies {
		if b == nil {
			return fmt.Errorf("the session made no model request %d", k+1)
		}
	}
	return nil
}

// agentEvent is what the checks read of an agent/run item.
type agentEvent struct {
	Type   string          `json:"type"`
	Text   string          `json:"text"`
	Result json.RawMessage `json:"result"`
	Error  bool            `json:"error"`
	Step   int             `json:"step"`
}

// agentSession runs one agent/run session and returns its wall time, from
// the subscription to its end; the events are checked afterwards.
func agentSession(ctx context.Context, conn *call.Connection) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	items := make([]json.RawMessage, 0, 3*agentSteps+4)
	start := time.Now()
	sub, err := conn.Subscribe(ctx, "agent/run", agentRunInput)
	if err != nil {
		return 0, fmt.Errorf("agent/run: %w", err)
	}
	for item := range sub.Items {
		items = append(items, item)
	}
	err = sub.Err()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("agent/run after %d events: %w", len(items), err)
	}
	results, final := 0, false
	for _, item := range items {
		var ev agentEvent
		if err := json.Unmarshal(item, &ev); err != nil {
			return 0, fmt.Errorf("agent/run event %q: %v", item, err)
		}
		switch ev.Type {
		case "tool_result":
			var out bytes.Buffer
			if ev.Error || json.Compact(&out, ev.Result) != nil || !bytes.Equal(out.Bytes(), callInput) {
				return 0, fmt.Errorf("agent/run: tool result %s in step %d, want %s", ev.Result, ev.Step, callInput)
			}
			results++
		case "final":
			final = ev.Text == "done" && ev.Step == agentSteps
		}
	}
	if results != agentSteps-1 || !final {
		return 0, fmt.Errorf("agent/run ended with %d tool results (want %d) and final answer %v (want \"done\" in step %d)", results, agentSteps-1, final, agentSteps)
	}
	return d, nil
}

// --- the two sides ---

// startAgentSessions measures agentSessions sessions per round, as the
// sessions' caller on a call connection of its own.
func startAgentSessions(ctx context.Context, e *env) (*instance, error) {
	_, n, err := acquireAgentRig(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := connectAgentCaller(ctx, n)
	if err != nil {
		releaseAgentRig()
		return nil, err
	}
	sessions := func(ctx context.Context, count int) (float64, error) {
		var total time.Duration
		for range count {
			d, err := agentSession(ctx, conn)
			if err != nil {
				return 0, err
			}
			total += d
		}
		return float64(total) / float64(count*agentSteps) / float64(time.Microsecond), nil
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := sessions(ctx, 2); return err },
		Measure: func(ctx context.Context) (float64, error) { return sessions(ctx, agentSessions(e.short)) },
		Stop: func() {
			_ = conn.Close()
			releaseAgentRig()
		},
	}, nil
}

// startAgentReplay measures, per round, agentSessions replays of a
// session without the agent: each of its model requests sent again from
// this process (net/http, one kept-alive connection, as the agent's
// client), followed but for the last by one echo/say over alknet/call by
// the sessions' caller on a call connection of its own. Only the requests
// and the calls are timed.
func startAgentReplay(ctx context.Context, e *env) (*instance, error) {
	prov, n, err := acquireAgentRig(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := connectAgentCaller(ctx, n)
	if err != nil {
		releaseAgentRig()
		return nil, err
	}
	transport := &http.Transport{}
	client := &http.Client{Transport: transport}
	url := "http://" + prov.addr + "/v1/chat/completions"
	model := func(ctx context.Context, k int) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(prov.bodies[k]))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+prov.key)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		d := time.Since(start)
		if err == nil && (resp.StatusCode != http.StatusOK || !bytes.Equal(b, prov.answers[k])) {
			err = fmt.Errorf("model request %d answered %s: %q", k+1, resp.Status, b)
		}
		return d, err
	}
	direct := func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		out, err := conn.Call(ctx, "echo/say", callInput)
		d := time.Since(start)
		if err == nil {
			err = checkEcho(out)
		}
		return d, err
	}
	replay := func(ctx context.Context, count int, warmup bool) (float64, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		var models, calls time.Duration
		for range count {
			for k := range agentSteps {
				d, err := model(ctx, k)
				if err != nil {
					return 0, err
				}
				models += d
				if k == agentSteps-1 {
					break
				}
				if d, err = direct(ctx); err != nil {
					return 0, err
				}
				calls += d
			}
		}
		us := func(d time.Duration, per int) float64 { return float64(d) / float64(per) / float64(time.Microsecond) }
		if !warmup {
			e.progress("  %-18s         of which a model request %.1f µs, an echo/say call %.1f µs", "agent-step-overhead", us(models, count*agentSteps), us(calls, count*(agentSteps-1)))
		}
		return us(models+calls, count*agentSteps), nil
	}
	return &instance{
		Warmup:  func(ctx context.Context) error { _, err := replay(ctx, 2, true); return err },
		Measure: func(ctx context.Context) (float64, error) { return replay(ctx, agentSessions(e.short), false) },
		Stop: func() {
			transport.CloseIdleConnections()
			_ = conn.Close()
			releaseAgentRig()
		},
	}, nil
}
