package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
)

// fsCall sends one fs operation to the node at addr and decodes its
// answer into out (if not nil); it returns the answer as it came.
func (a *app) fsCall(f *callFlags, addr, op string, in, out any) (json.RawMessage, error) {
	conn, err := a.connectCall(f, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, stop := signalContext()
	defer stop()
	raw, err := conn.Call(ctx, op, in)
	if err != nil {
		return nil, fmt.Errorf("%s on %s: %w", op, addr, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s on %s: unexpected answer %s: %w", op, addr, truncate(string(raw), 200), err)
		}
	}
	return raw, nil
}

// parseHashArg checks a HASH argument before anything is sent.
func parseHashArg(s string) (string, error) {
	h, err := bao.ParseHash(s)
	if err != nil {
		return "", fmt.Errorf("HASH: %w", err)
	}
	return h.String(), nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// The answers of the fs operations (the fs plugin's README describes
// them); --json prints them as the node sent them.
type (
	fsStatOut struct {
		Hash        string   `json:"hash"`
		Size        int64    `json:"size"`
		Present     bool     `json:"present"`
		Tags        []string `json:"tags"`
		Leased      bool     `json:"leased"`
		Quarantined bool     `json:"quarantined"`
	}
	fsListEntry struct {
		Name    string `json:"name"`
		Hash    string `json:"hash"`
		Size    int64  `json:"size"`
		Present bool   `json:"present"`
	}
	fsTagOut struct {
		Name     string `json:"name"`
		Hash     string `json:"hash"`
		Previous string `json:"previous"`
	}
	fsDeleteOut struct {
		Hash     string   `json:"hash"`
		Size     int64    `json:"size"`
		Untagged []string `json:"untagged"`
	}
	fsGCOut struct {
		Removed    []string `json:"removed"`
		Kept       int      `json:"kept"`
		BytesFreed int64    `json:"bytes_freed"`
	}
	fsStatsOut struct {
		BytesSent        int64 `json:"bytes_sent"`
		ContentBytesSent int64 `json:"content_bytes_sent"`
		BytesReceived    int64 `json:"bytes_received"`
		Gets             int64 `json:"gets"`
		GetsActive       int64 `json:"gets_active"`
		Puts             int64 `json:"puts"`
		Corrupt          int64 `json:"corrupt"`
	}
)

// fsOpCmd builds a subcommand that calls one operation: args checks and
// turns the arguments into the input; show prints the answer as text.
func (a *app) fsOpCmd(op, use, short, long, example string, nargs int, input func(args []string) (any, error),
	out any, show func(w io.Writer) error, more func(c *cobra.Command)) *cobra.Command {
	var f callFlags
	var asJSON bool
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.ExactArgs(nargs),
		RunE: func(_ *cobra.Command, args []string) error {
			in, err := input(args)
			if err != nil {
				return err
			}
			raw, err := a.fsCall(&f, args[0], op, in, out)
			if err != nil {
				return err
			}
			if asJSON {
				a.writeJSON(raw, true)
				return nil
			}
			return show(a.out)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the node's answer as JSON")
	if more != nil {
		more(c)
	}
	f.add(c)
	return c
}

func (a *app) fsStatCmd() *cobra.Command {
	var out fsStatOut
	return a.fsOpCmd("fs/stat", "stat HOST[:PORT] HASH", "Show a blob's size, tags and lease, and whether the node stores it",
		"Calls fs/stat (scope fs:read). Fails with NOT_FOUND if the node knows nothing of HASH.",
		"  alknet fs stat node:4433 blake3:…", 2,
		func(args []string) (any, error) {
			h, err := parseHashArg(args[1])
			return map[string]string{"hash": h}, err
		}, &out, func(w io.Writer) error {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "hash\t%s\nsize\t%d\npresent\t%s\ntags\t%s\nleased\t%s\n",
				out.Hash, out.Size, yesNo(out.Present), strings.Join(out.Tags, ", "), yesNo(out.Leased))
			if out.Quarantined {
				fmt.Fprintf(tw, "quarantined\tyes (it failed verification; a put of the same content restores it)\n")
			}
			return tw.Flush()
		}, nil)
}

func (a *app) fsListCmd() *cobra.Command {
	var out []fsListEntry
	return a.fsOpCmd("fs/list", "ls HOST[:PORT]", "List the node's tags and the blobs they name",
		"Calls fs/list (scope fs:read): every tag, sorted by name. A blob no tag names is not listed.",
		"  alknet fs ls node:4433", 1,
		func([]string) (any, error) { return struct{}{}, nil }, &out, func(w io.Writer) error {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TAG\tSIZE\tHASH")
			for _, e := range out {
				size := fmt.Sprint(e.Size)
				if !e.Present {
					size = "missing"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Name, size, e.Hash)
			}
			return tw.Flush()
		}, nil)
}

func (a *app) fsTagCmd() *cobra.Command {
	var out fsTagOut
	return a.fsOpCmd("fs/tag", "tag HOST[:PORT] NAME HASH", "Point a tag at a stored blob (tagged blobs are never collected)",
		"Calls fs/tag (scope fs:write). A tag that named another blob now names HASH.",
		"  alknet fs tag node:4433 release-1.2 blake3:…", 3,
		func(args []string) (any, error) {
			if err := wire.ValidTag(args[1]); err != nil {
				return nil, fmt.Errorf("NAME: %w", err)
			}
			h, err := parseHashArg(args[2])
			return map[string]string{"name": args[1], "hash": h}, err
		}, &out, func(w io.Writer) error {
			if out.Previous != "" {
				_, err := fmt.Fprintf(w, "tag %s: %s (was %s)\n", out.Name, out.Hash, out.Previous)
				return err
			}
			_, err := fmt.Fprintf(w, "tag %s: %s\n", out.Name, out.Hash)
			return err
		}, nil)
}

func (a *app) fsUntagCmd() *cobra.Command {
	var out fsUntagOut
	return a.fsOpCmd("fs/untag", "untag HOST[:PORT] NAME", "Remove a tag; gc may then collect the blob",
		"Calls fs/untag (scope fs:write). The blob stays until a gc finds it without a tag.",
		"  alknet fs untag node:4433 release-1.2", 2,
		func(args []string) (any, error) { return map[string]string{"name": args[1]}, nil }, &out, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "removed tag %s (it named %s)\n", out.Name, out.Hash)
			return err
		}, nil)
}

type fsUntagOut struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

func (a *app) fsRmCmd() *cobra.Command {
	var out fsDeleteOut
	var force bool
	return a.fsOpCmd("fs/delete", "rm HOST[:PORT] HASH [--force]", "Delete a stored blob now",
		"Calls fs/delete (scope fs:write). A tagged blob is refused unless --force, which also removes its tags.",
		"  alknet fs rm node:4433 blake3:…", 2,
		func(args []string) (any, error) {
			h, err := parseHashArg(args[1])
			return map[string]any{"hash": h, "force": force}, err
		}, &out, func(w io.Writer) error {
			msg := fmt.Sprintf("deleted %s (%d bytes)", out.Hash, out.Size)
			if len(out.Untagged) > 0 {
				msg += "; removed its tags " + strings.Join(out.Untagged, ", ")
			}
			_, err := fmt.Fprintln(w, msg)
			return err
		}, func(c *cobra.Command) {
			c.Flags().BoolVar(&force, "force", false, "delete the blob even if tagged, removing its tags")
		})
}

func (a *app) fsGCCmd() *cobra.Command {
	var out fsGCOut
	return a.fsOpCmd("fs/gc", "gc HOST[:PORT]", "Delete every blob that has no tag and no lease of a recent put",
		`Calls fs/gc (scope fs:write). A blob being put, or put within the node's
lease (10 minutes by default), is kept; so is every blob for one lease after
the plugin starts. Prints the blobs removed, one per line, after a summary.`,
		"  alknet fs gc node:4433", 1,
		func([]string) (any, error) { return struct{}{}, nil }, &out, func(w io.Writer) error {
			fmt.Fprintf(w, "removed %d blobs (%d bytes freed), kept %d\n", len(out.Removed), out.BytesFreed, out.Kept)
			for _, h := range out.Removed {
				fmt.Fprintln(w, h)
			}
			return nil
		}, nil)
}

func (a *app) fsStatsCmd() *cobra.Command {
	var out fsStatsOut
	return a.fsOpCmd("fs/stats", "stats HOST[:PORT]", "Show what the node's fs plugin has sent and received since it started",
		"Calls fs/stats (scope fs:read). content_bytes_sent counts the blobs' bytes in gets; bytes_sent adds the proofs.",
		"  alknet fs stats node:4433", 1,
		func([]string) (any, error) { return struct{}{}, nil }, &out, func(w io.Writer) error {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "bytes sent\t%d\ncontent bytes sent\t%d\nbytes received\t%d\ngets\t%d\ngets in progress\t%d\nputs\t%d\ncorrupt blobs\t%d\n",
				out.BytesSent, out.ContentBytesSent, out.BytesReceived, out.Gets, out.GetsActive, out.Puts, out.Corrupt)
			return tw.Flush()
		}, nil)
}

// bar is a progress bar on stderr, or nil (all methods are no-ops) when
// stderr is not a terminal or the output is JSON.
type bar struct{ pb *progressbar.ProgressBar }

func (a *app) newBar(total int64, what string, asJSON bool) *bar {
	f, ok := a.err.(*os.File)
	if asJSON || !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &bar{pb: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

func (b *bar) add(n int64) {
	if b != nil {
		_ = b.pb.Add64(n)
	}
}

// clear erases the bar so a line can be printed; it is drawn again at the
// next update.
func (b *bar) clear() {
	if b != nil {
		_ = b.pb.Clear()
	}
}

// finish ends the bar: completed, or erased on failure so that the error
// stands alone.
func (b *bar) finish(ok bool) {
	if b == nil {
		return
	}
	if ok {
		_ = b.pb.Finish()
		return
	}
	_ = b.pb.Clear()
}

// barReader advances a bar as it is read.
type barReader struct {
	r   io.Reader
	bar *bar
}

func (r *barReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.bar.add(int64(n))
	return n, err
}
