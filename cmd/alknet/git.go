package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/call"
)

func (a *app) gitCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "git",
		Short: "List, create and delete a node's git repositories (the git plugin's operations)",
		Long: `A node running the git plugin hosts bare repositories that stock git
clones, fetches and pushes through git-remote-alknet:

  git clone alknet://FINGERPRINT@node.example:4433/team/app

These subcommands call the plugin's operations (git/list, git/create,
git/delete, git/refs) as this machine's identity (its vault), or with a
bearer token (--token-file, --token-credential). HOST may carry the node's
fingerprint, FINGERPRINT@HOST[:PORT], as in an alknet:// URL; --peer says the
same. Scopes: git:read to see a repository, git:create to create one,
git:write (or admin) to delete one; plugins/git/README.md has the rules.`,
	}
	c.AddCommand(a.gitListCmd(), a.gitCreateCmd(), a.gitDeleteCmd(), a.gitRefsCmd())
	return c
}

// The answers of the git operations (plugins/git/README.md, Operations);
// --json prints them as the node sent them (docs/json.md).
type (
	gitRepoOut struct {
		Name     string `json:"name"`
		Public   bool   `json:"public"`
		Head     string `json:"head"`
		HeadHash string `json:"head_hash"`
		Size     int64  `json:"size"`
	}
	gitRefOut struct {
		Name   string `json:"name"`
		Hash   string `json:"hash"`
		Target string `json:"target"`
	}
	gitDeletedOut struct {
		Name    string `json:"name"`
		Deleted bool   `json:"deleted"`
	}
)

// gitOpCmd builds a subcommand that calls one git operation on the node
// of its first argument; input turns the arguments into the operation's
// input, show prints the decoded answer as text.
func (a *app) gitOpCmd(op, use, short, long, example string, nargs int, input func(args []string) any,
	out any, show func(w io.Writer, node string) error) *cobra.Command {
	var f callFlags
	var asJSON bool
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.ExactArgs(nargs),
		RunE: func(_ *cobra.Command, args []string) error {
			addr, err := f.node(args[0])
			if err != nil {
				return err
			}
			conn, err := a.connectCall(&f, addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, stop := signalContext()
			defer stop()
			raw, err := conn.Call(ctx, op, input(args))
			if err != nil {
				return fmt.Errorf("%s on %s: %w", op, addr, operationError(err))
			}
			if asJSON {
				a.writeJSON(raw, true)
				return nil
			}
			if err := json.Unmarshal(raw, out); err != nil {
				return fmt.Errorf("%s on %s: unexpected answer %s: %w", op, addr, truncate(string(raw), 200), err)
			}
			node := addr
			if f.o.Peer != "" {
				node = f.o.Peer + "@" + addr
			}
			return show(a.out, node)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the node's answer as JSON (docs/json.md)")
	f.add(c)
	return c
}

// operationError names an operation's own error code (git/create's
// ALREADY_EXISTS), which a client receives as INTERNAL with the code in
// details.original_code (docs/spec/call.md).
func operationError(err error) error {
	var ce *call.Error
	if errors.As(err, &ce) && ce.Code == call.CodeInternal {
		if d, ok := ce.Details.(map[string]any); ok {
			if code, ok := d["original_code"].(string); ok && code != "" {
				return fmt.Errorf("%s: %s", code, ce.Message)
			}
		}
	}
	return err
}

// cloneURL is the alknet:// URL of repository name on node
// ([FINGERPRINT@]HOST:PORT).
func cloneURL(node, name string) string {
	return "alknet://" + node + "/" + name
}

func nameInput(args []string) any { return map[string]string{"name": args[1]} }

func (a *app) gitListCmd() *cobra.Command {
	var out []gitRepoOut
	return a.gitOpCmd("git/list", "list HOST[:PORT]", "List the repositories you may read or push to",
		"Calls git/list: the repositories the caller may read or push to (admin: all), by name, with the branch HEAD names, its commit and the size on disk.",
		"  alknet git list ed25519:…@node.example:4433", 1,
		func([]string) any { return struct{}{} }, &out, func(w io.Writer, _ string) error {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tHEAD\tCOMMIT\tSIZE\tPUBLIC")
			for _, r := range out {
				commit := r.HeadHash
				if commit == "" {
					commit = "(empty)"
				} else if len(commit) > 12 {
					commit = commit[:12]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Head, commit, humanBytes(r.Size), yesNo(r.Public))
			}
			return tw.Flush()
		})
}

func (a *app) gitCreateCmd() *cobra.Command {
	var out gitRepoOut
	return a.gitOpCmd("git/create", "create HOST[:PORT] NAME", "Create an empty repository",
		`Calls git/create (scope git:create on NAME). NAME is a path of letters,
digits and . _ - / ("team/app"; "/team/app.git" names the same). Fails with
ALREADY_EXISTS when the name is taken. A push to a new name creates the
repository too, for an identity holding git:create and git:write.`,
		"  alknet git create ed25519:…@node.example:4433 team/app", 2,
		nameInput, &out, func(w io.Writer, node string) error {
			_, err := fmt.Fprintf(w, "created %s (HEAD names %s)\nclone it: git clone %s\n", out.Name, out.Head, cloneURL(node, out.Name))
			return err
		})
}

func (a *app) gitDeleteCmd() *cobra.Command {
	var out gitDeletedOut
	return a.gitOpCmd("git/delete", "delete HOST[:PORT] NAME", "Delete a repository and all its history",
		`Calls git/delete: admin, or git:write on a repository that no push rule
protects (deny_delete, protected branches). The repository is removed from
the node's disk at once; there is no undo.`,
		"  alknet git delete ed25519:…@node.example:4433 team/old", 2,
		nameInput, &out, func(w io.Writer, _ string) error {
			_, err := fmt.Fprintf(w, "deleted %s\n", out.Name)
			return err
		})
}

func (a *app) gitRefsCmd() *cobra.Command {
	var out []gitRefOut
	return a.gitOpCmd("git/refs", "refs HOST[:PORT] NAME", "Show HEAD and the references of a repository",
		"Calls git/refs (read access to NAME): HEAD first, then every reference by name, as `git ls-remote` prints them.",
		"  alknet git refs ed25519:…@node.example:4433 team/app", 2,
		nameInput, &out, func(w io.Writer, _ string) error {
			for _, r := range out {
				hash := r.Hash
				if hash == "" {
					hash = strings.Repeat("-", 40) // HEAD naming a branch that does not exist yet
				}
				line := hash + "\t" + r.Name
				if r.Target != "" {
					line += " -> " + r.Target
				}
				if _, err := fmt.Fprintln(w, line); err != nil {
					return err
				}
			}
			return nil
		})
}

// humanBytes prints a size in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
