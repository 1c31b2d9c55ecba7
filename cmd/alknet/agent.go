package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/dial"
)

func (a *app) agentCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run agent sessions on a node (the agent plugin's operations)",
		Long: `A node running the agent plugin runs LLM tool-calling sessions: the model
answers a prompt and may call, as tools, the operations you may call on that
node. The provider's key stays in the node's vault (alknet credential set
<provider> on the node); sessions need scope agent:run.

These subcommands call agent/run, agent/sessions and agent/cancel as this
machine's identity (its vault), or with a bearer token (--token-file,
--token-credential). plugins/agent/README.md has the settings.`,
	}
	c.AddCommand(a.agentRunCmd(), a.agentChatCmd(), a.agentSessionsCmd(), a.agentCancelCmd())
	return c
}

// agentEvent is an item of agent/run (plugins/agent, Event).
type agentEvent struct {
	Type      string          `json:"type"`
	SessionID string          `json:"session_id"`
	Text      string          `json:"text"`
	Operation string          `json:"operation"`
	Arguments json.RawMessage `json:"arguments"`
	Result    json.RawMessage `json:"result"`
	Error     bool            `json:"error"`
	Usage     *struct {
		TotalTokens int `json:"total_tokens"`
	} `json:"usage"`
}

func (a *app) agentRunCmd() *cobra.Command {
	var f callFlags
	var asJSON bool
	var in struct {
		Prompt   string   `json:"prompt"`
		System   string   `json:"system,omitempty"`
		Provider string   `json:"provider,omitempty"`
		Model    string   `json:"model,omitempty"`
		Tools    []string `json:"tools,omitempty"`
		MaxSteps int      `json:"max_steps,omitempty"`
	}
	c := &cobra.Command{
		Use:   "run [flags] HOST:PORT PROMPT",
		Short: "Run one agent session and print the answer as it streams",
		Long: `Run one session: the answer is printed as the model writes it; each tool
call and its result are shown on stderr. --json prints every event of
agent/run as one JSON line instead (docs/json.md). Ctrl-C cancels the
session, its model request and its running tools.`,
		Example: `  alknet agent run --peer ed25519:… node:4433 "How full are the disks? Use the df tool."
  alknet agent run --peer ed25519:… --tools 'echo/*' --json node:4433 "Say hello through echo/say"`,
		Args: cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			in.Prompt = args[1]
			conn, err := a.connectCall(&f, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sub, err := conn.Subscribe(ctx, "agent/run", in)
			if err != nil {
				return a.printCallError(err)
			}
			open := false     // a line of answer text is being written
			streamed := false // some of the answer came as deltas
			for item := range sub.Items {
				if asJSON {
					a.writeJSON(item, false)
					continue
				}
				var e agentEvent
				if err := json.Unmarshal(item, &e); err != nil {
					continue
				}
				switch e.Type {
				case "delta":
					fmt.Fprint(a.out, e.Text)
					open = e.Text != "" || open
					streamed = streamed || e.Text != ""
				case "tool_call":
					if open {
						fmt.Fprintln(a.out)
						open = false
					}
					fmt.Fprintf(a.err, "→ %s %s\n", e.Operation, truncate(string(e.Arguments), 200))
				case "tool_result":
					mark := "←"
					if e.Error {
						mark = "← error:"
					}
					fmt.Fprintf(a.err, "%s %s %s\n", mark, e.Operation, truncate(string(e.Result), 200))
				case "final":
					if !open && e.Text != "" && !streamed {
						fmt.Fprint(a.out, e.Text) // a provider that did not stream
					}
					fmt.Fprintln(a.out)
					open = false
				}
			}
			if open {
				fmt.Fprintln(a.out)
			}
			if err := sub.Err(); err != nil {
				return a.printCallError(err)
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.BoolVar(&asJSON, "json", false, "print every event as a JSON line")
	fl.StringVar(&in.System, "system", "", "a system message for the model")
	fl.StringVar(&in.Provider, "provider", "", "a provider configured on the node (default: its default_provider)")
	fl.StringVar(&in.Model, "model", "", "the model to ask for (default: the provider's)")
	fl.StringSliceVar(&in.Tools, "tools", nil, "operation patterns the model may use as tools (default: the node's setting)")
	fl.IntVar(&in.MaxSteps, "max-steps", 0, "at most this many model requests (the node's max_steps bounds it)")
	f.add(c)
	return c
}

func (a *app) agentSessionsCmd() *cobra.Command {
	var f callFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "sessions [flags] HOST:PORT",
		Short: "List your running and recent agent sessions",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			conn, err := a.connectCall(&f, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			out, err := conn.Call(ctx, "agent/sessions", nil)
			if err != nil {
				return a.printCallError(err)
			}
			if asJSON {
				a.writeJSON(out, true)
				return nil
			}
			var ss []struct {
				ID, Provider, Model, State string
				Started                    time.Time
				Steps, Tokens              int
			}
			if err := json.Unmarshal(out, &ss); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tPROVIDER\tMODEL\tSTEPS\tTOKENS\tSTARTED")
			for _, s := range ss {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, s.State, s.Provider, s.Model, s.Steps, s.Tokens, s.Started.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	f.add(c)
	return c
}

func (a *app) agentCancelCmd() *cobra.Command {
	var f callFlags
	c := &cobra.Command{
		Use:   "cancel [flags] HOST:PORT SESSION",
		Short: "Cancel one of your running agent sessions",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			conn, err := a.connectCall(&f, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			if _, err := conn.Call(ctx, "agent/cancel", map[string]string{"id": args[1]}); err != nil {
				return a.printCallError(err)
			}
			fmt.Fprintf(a.out, "cancelled %s\n", args[1])
			return nil
		},
	}
	f.add(c)
	return c
}

// agentALPN is the agent plugin's protocol (plugins/agent, chat.go).
const agentALPN = "alknet/agent"

func (a *app) agentChatCmd() *cobra.Command {
	var f dialFlags
	var open struct {
		Kind     string   `json:"kind"`
		System   string   `json:"system,omitempty"`
		Provider string   `json:"provider,omitempty"`
		Model    string   `json:"model,omitempty"`
		Tools    []string `json:"tools,omitempty"`
	}
	c := &cobra.Command{
		Use:   "chat [flags] HOST:PORT",
		Short: "Talk with an agent session, one line per turn",
		Long: `Open an interactive session on the node's alknet/agent, as this machine's
identity (scope agent:run): each line you type is a turn; the answer is
printed as the model writes it, tool calls on stderr. The node keeps the
conversation for as long as the chat lasts. Ctrl-D ends it; Ctrl-C too,
cancelling what runs.`,
		Example: `  alknet agent chat --peer ed25519:… node.example:4433`,
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			open.Kind = "chat"
			o, err := a.dialOptions(&f, agentALPN)
			if err != nil {
				return err
			}
			dctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			conn, err := dial.Dial(dctx, args[0], o)
			cancel()
			if err != nil {
				return err
			}
			defer conn.CloseWithError(0, "")
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			st, err := conn.OpenStream(ctx)
			if err != nil {
				return err
			}
			defer st.Close()
			b, _ := json.Marshal(open)
			if _, err := st.Write(append(b, '\n')); err != nil {
				return err
			}
			events := bufio.NewScanner(st)
			events.Buffer(make([]byte, 64<<10), 16<<20)
			// next prints the events of one turn (or the session's first)
			// until it ends; false when the session is gone.
			next := func() (bool, error) {
				open := false
				for events.Scan() {
					var e struct {
						agentEvent
						Code    string `json:"code"`
						Message string `json:"message"`
					}
					if err := json.Unmarshal(events.Bytes(), &e); err != nil {
						continue
					}
					switch e.Type {
					case "session":
						fmt.Fprintf(a.err, "session %s — one line per turn, Ctrl-D to end\n", e.SessionID)
						return true, nil
					case "delta":
						fmt.Fprint(a.out, e.Text)
						open = open || e.Text != ""
					case "tool_call":
						if open {
							fmt.Fprintln(a.out)
							open = false
						}
						fmt.Fprintf(a.err, "→ %s %s\n", e.Operation, truncate(string(e.Arguments), 200))
					case "tool_result":
						fmt.Fprintf(a.err, "← %s %s\n", e.Operation, truncate(string(e.Result), 200))
					case "final":
						if !open && e.Text != "" {
							fmt.Fprint(a.out, e.Text)
						}
						fmt.Fprintln(a.out)
						return true, nil
					case "error":
						if open {
							fmt.Fprintln(a.out)
						}
						if e.SessionID == "" {
							return false, fmt.Errorf("%s: %s", e.Code, e.Message)
						}
						fmt.Fprintf(a.err, "error: %s: %s\n", e.Code, e.Message)
						return true, nil
					}
				}
				if err := events.Err(); err != nil && ctx.Err() == nil {
					return false, err
				}
				return false, nil
			}
			if ok, err := next(); !ok {
				if err == nil {
					err = errors.New("the node ended the session")
				}
				return err
			}
			lines := bufio.NewScanner(a.in)
			for {
				fmt.Fprint(a.err, "> ")
				if !lines.Scan() {
					fmt.Fprintln(a.err)
					return nil
				}
				prompt := strings.TrimSpace(lines.Text())
				if prompt == "" {
					continue
				}
				b, _ := json.Marshal(map[string]string{"prompt": prompt})
				if _, err := st.Write(append(b, '\n')); err != nil {
					return err
				}
				if ok, err := next(); !ok {
					if err == nil && ctx.Err() == nil {
						err = errors.New("the node ended the session")
					}
					return err
				}
			}
		},
	}
	fl := c.Flags()
	fl.StringVar(&open.System, "system", "", "a system message for the model")
	fl.StringVar(&open.Provider, "provider", "", "a provider configured on the node (default: its default_provider)")
	fl.StringVar(&open.Model, "model", "", "the model to ask for (default: the provider's)")
	fl.StringSliceVar(&open.Tools, "tools", nil, "operation patterns the model may use as tools (default: the node's setting)")
	f.add(c)
	return c
}
