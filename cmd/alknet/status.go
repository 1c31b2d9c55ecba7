package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/node"
)

func (a *app) statusCmd() *cobra.Command {
	var f callFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "status [HOST:PORT]",
		Short: "What a running node holds: memory, goroutines, connections, calls in flight, plugins (node/stats)",
		Long: `Show the node's node/stats (scope admin): goroutines, memory, connections and
sources, the request-byte budget in use, every call connection with its
requests in flight, every plugin with its connections, calls in flight and
streams — what an operator needs to see an attack or a leak.

Without HOST:PORT it asks the node serving this data directory, as its
operator (this CLI presents the node's own key, which the node treats as
admin). A remote node must list this machine's fingerprint ('alknet id') as
a peer with scope admin, or be given an admin --token-file.`,
		Example: "  alknet status\n  alknet status --json\n  alknet status --peer ed25519:… node.example:4433 --token-file admin.token",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addr := ""
			if len(args) == 1 {
				addr = args[0]
			} else {
				local, err := a.localNode()
				if err != nil {
					return err
				}
				fp, hostport, _ := strings.Cut(local, "@")
				if f.o.Peer == "" {
					f.o.Peer = fp
				}
				addr = hostport
			}
			conn, err := a.connectCall(&f, addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
			defer cancel()
			out, err := conn.Call(ctx, "node/stats", nil)
			if err != nil {
				var ce *call.Error
				if errors.As(err, &ce) && ce.Code == call.CodeForbidden {
					return fmt.Errorf("node/stats needs scope admin: %s (run on the node's machine, or add this machine's fingerprint from `alknet id` as an admin peer)", ce.Message)
				}
				return a.printCallError(err)
			}
			if asJSON {
				a.writeJSON(out, true)
				return nil
			}
			var st node.Stats
			if err := json.Unmarshal(out, &st); err != nil {
				return fmt.Errorf("node/stats answered something unexpected: %w", err)
			}
			a.printStatus(st)
			return nil
		},
	}
	f.add(c)
	c.Flags().BoolVar(&asJSON, "json", false, "print node/stats as JSON (docs/json.md)")
	return c
}

// localNode is the dial string of the node serving this data directory.
func (a *app) localNode() (string, error) {
	d, err := a.dataDir()
	if err != nil {
		return "", err
	}
	if _, running := d.RunningNode(); !running {
		return "", fmt.Errorf("no node serves %s; start one (alknet serve) or give HOST:PORT", d.Path)
	}
	b, err := os.ReadFile(filepath.Join(d.Path, nodeAddrFile))
	if err != nil {
		return "", fmt.Errorf("the node serving %s has not recorded its address (%v); give HOST:PORT", d.Path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (a *app) printStatus(st node.Stats) {
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	w := tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "node\t%s (version %s, up %s)\n", st.ID, st.Version, (time.Duration(st.UptimeSeconds) * time.Second).String())
	fmt.Fprintf(w, "memory\tRSS %s, heap %s, %d goroutines\n", mib(st.RSSBytes), mib(int64(st.HeapBytes)), st.Goroutines)
	fmt.Fprintf(w, "connections\t%d from %d sources\n", st.Connections, st.Sources)
	fmt.Fprintf(w, "request bytes\t%s in flight of %s\n", mib(st.RequestBytes.Used), mib(st.RequestBytes.Limit))
	_ = w.Flush()
	if len(st.Calls) > 0 {
		fmt.Fprintln(a.out)
		w = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "CALL CONNECTION\tTRANSPORT\tIDENTITY\tIN FLIGHT\tREQUEST BYTES")
		for _, c := range st.Calls {
			id := c.Identity
			if id == "" {
				id = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\n", c.RemoteAddr, c.Transport, id, c.InFlight, c.RequestBytes)
		}
		_ = w.Flush()
	}
	if len(st.Plugins) > 0 {
		fmt.Fprintln(a.out)
		w = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "PLUGIN\tSTATE\tPID\tCONNECTIONS\tCALLS IN FLIGHT\tSTREAMS")
		for _, p := range st.Plugins {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\n", p.Name, p.State, p.Pid, p.Connections, p.CallsActive, p.Streams)
		}
		_ = w.Flush()
	}
	if len(st.Imports) > 0 {
		fmt.Fprintln(a.out)
		w = tabwriter.NewWriter(a.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "IMPORT\tTARGET\tSTATE\tOPERATIONS\tSINCE")
		for _, im := range st.Imports {
			state := "connected"
			if !im.Connected {
				state = "down"
			}
			if im.Error != "" {
				state += ": " + im.Error
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", im.Name, im.Target, state, im.Operations, im.Since.Format(time.RFC3339))
		}
		_ = w.Flush()
	}
}
