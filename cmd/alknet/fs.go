package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/fsclient"
	"alknet.dev/alknet/plugins/fs/wire"
)

func (a *app) fsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "fs",
		Short: "Put and get content-addressed blobs and directory trees (alknet/fs)",
		Long: `A node running the fs plugin stores blobs named by their BLAKE3 hash
(blake3:<hex>, the same digest b3sum prints), each once. Every 16 KiB of a blob
is verified as it arrives, so a download can be spread over several nodes, a
node that sends a bad byte is dropped, and an interrupted download resumes.

Transfers (put, get) use the alknet/fs protocol and this machine's identity
(its vault); the node needs scope fs:write for put, fs:read for get. The other
subcommands are call operations (fs/stat, fs/list, …) and take a bearer token
too (--token-file, --token-credential).`,
	}
	c.AddCommand(a.fsPutCmd(), a.fsGetCmd(), a.fsStatCmd(), a.fsListCmd(), a.fsTagCmd(), a.fsUntagCmd(),
		a.fsRmCmd(), a.fsGCCmd(), a.fsStatsCmd())
	return c
}

// fsSource reaches one node's alknet/fs: one connection whose streams
// carry the requests, dialled when the first stream is wanted and again
// if it closes. Over TCP a connection carries a single stream, so each
// further stream gets a connection of its own, closed with the stream.
type fsSource struct {
	name    string // the address, as reports name the source
	addr    string
	o       dial.Options
	timeout time.Duration

	dialMu sync.Mutex // held while the shared connection is dialled
	mu     sync.Mutex
	conn   endpoint.Conn
	conns  []endpoint.Conn // every connection dialled, closed by close
}

func (s *fsSource) dial(ctx context.Context) (endpoint.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c, err := dial.Dial(dctx, s.addr, s.o)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	return c, nil
}

// shared returns the connection streams share, dialling it if there is
// none or it has closed; concurrent callers wait for one dial.
func (s *fsSource) shared(ctx context.Context) (endpoint.Conn, error) {
	s.dialMu.Lock()
	defer s.dialMu.Unlock()
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil && c.Context().Err() == nil {
		return c, nil
	}
	c, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	return c, nil
}

// open opens a stream for one request.
func (s *fsSource) open(ctx context.Context) (fsclient.Stream, error) {
	c, err := s.shared(ctx)
	if err != nil {
		return nil, err
	}
	st, err := c.OpenStream(ctx)
	if errors.Is(err, endpoint.ErrSingleStream) {
		nc, derr := s.dial(ctx)
		if derr != nil {
			return nil, derr
		}
		st, err = nc.OpenStream(ctx)
		c = nc
	}
	if err != nil {
		return nil, closeReason(c, err)
	}
	return st, nil
}

func (s *fsSource) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		_ = c.CloseWithError(endpoint.CodeNormal, "")
	}
	s.conns, s.conn = nil, nil
}

// fsSourceFor prepares a source: SRC is HOST[:PORT], verified as every
// dial is (--peer, else known_peers, else WebPKI), or FINGERPRINT@HOST[:PORT],
// pinned to that fingerprint.
func (a *app) fsSourceFor(f *dialFlags, src string) (*fsSource, error) {
	o, err := a.dialOptions(f, wire.ALPN)
	if err != nil {
		return nil, err
	}
	addr := src
	if fp, rest, ok := strings.Cut(src, "@"); ok {
		if fp == "" {
			return nil, fmt.Errorf("source %q: nothing before '@': give FINGERPRINT@HOST[:PORT] or HOST[:PORT]", src)
		}
		o.Peer, addr = fp, rest
	}
	norm, err := dial.NormalizeAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("source %q: %w", src, err)
	}
	return &fsSource{name: norm, addr: norm, o: o, timeout: f.timeout}, nil
}

// signalContext is cancelled by SIGINT or SIGTERM, so that a transfer
// stops cleanly (a download records its progress).
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func (a *app) fsPutCmd() *cobra.Command {
	var f dialFlags
	var tag string
	var size int64
	var asJSON bool
	c := &cobra.Command{
		Use:   "put HOST[:PORT] PATH [--tag NAME]",
		Short: "Store a file, a directory tree or stdin on a node and print its hash",
		Long: `Send PATH to the node's fs plugin and print the hash it is stored under.

A file is stored as one blob. A directory is stored as a collection: every
regular file under it is stored, then a blob listing each file's path, hash,
size and permission bits, whose hash is printed (restore it with
'alknet fs get HASH --dir -o DIR'). Symbolic links and special files in the
tree are refused before anything is sent; empty directories are not kept.
PATH - reads stdin: exactly --size bytes if given, else stdin is first
copied to a temporary file to learn its size.

--tag names the blob on the node (for a directory, the collection blob: gc
keeps the files a tagged collection lists with it). gc keeps tagged blobs; a
blob without a tag is kept for the node's lease after its put (10 minutes by
default), then collected by the next gc. Needs scope fs:write. A progress bar is shown on
stderr when it is a terminal.`,
		Example: `  alknet fs put --peer ed25519:… node:4433 ./photo.jpg --tag photo
  alknet fs put node:4433 ./project --json
  tar c dir | alknet fs put node:4433 - --tag backup`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tag != "" {
				if err := wire.ValidTag(tag); err != nil {
					return fmt.Errorf("--tag: %w", err)
				}
			}
			src, err := a.fsSourceFor(&f, args[0])
			if err != nil {
				return err
			}
			defer src.close()
			ctx, stop := signalContext()
			defer stop()
			out := fsPutJSON{Tag: tag}
			switch path := args[1]; {
			case path == "-":
				out.Path = "-"
				if err := a.fsPutStdin(ctx, src, cmd.Flags().Changed("size"), size, tag, asJSON, &out); err != nil {
					return err
				}
			default:
				out.Path = path
				st, err := os.Stat(path)
				if err != nil {
					return fmt.Errorf("put: %w", err)
				}
				if cmd.Flags().Changed("size") {
					return errors.New("--size is for PATH - (stdin) only")
				}
				if st.IsDir() {
					if err := a.fsPutDir(ctx, src, path, tag, asJSON, &out); err != nil {
						return err
					}
					break
				}
				if !st.Mode().IsRegular() {
					return fmt.Errorf("put: %s is not a regular file or a directory (%v); use PATH - to read it as a stream", path, st.Mode().Type())
				}
				file, err := os.Open(path)
				if err != nil {
					return fmt.Errorf("put: %w", err)
				}
				defer file.Close()
				if st, err = file.Stat(); err != nil {
					return fmt.Errorf("put: %w", err)
				}
				if err := a.fsPutReader(ctx, src, file, st.Size(), tag, asJSON, &out); err != nil {
					return fmt.Errorf("put %s: %w", path, err)
				}
			}
			if asJSON {
				return a.printJSON(out)
			}
			fmt.Fprintln(a.out, out.Hash)
			if out.Collection {
				fmt.Fprintf(a.err, "stored %s as a collection of %d files (%d bytes); restore it with: alknet fs get %s --from %s --dir -o DIR\n",
					out.Path, out.Files, out.Size, out.Hash, src.name)
			}
			return nil
		},
	}
	c.Flags().StringVar(&tag, "tag", "", "tag the blob (a directory: its collection) with this name on the node")
	c.Flags().Int64Var(&size, "size", 0, "with PATH -: the number of bytes stdin holds (streamed as it is read, no temporary copy)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.add(c)
	return c
}

// fsPutJSON is `alknet fs put --json`.
type fsPutJSON struct {
	Hash string `json:"hash"`
	// Size is the blob's size; for a directory, the sum of its files'.
	Size       int64  `json:"size"`
	Path       string `json:"path"`
	Tag        string `json:"tag,omitempty"`
	Collection bool   `json:"collection"`
	// Files is the number of files of a collection.
	Files int `json:"files,omitempty"`
}

func (a *app) fsPutReader(ctx context.Context, src *fsSource, r io.Reader, size int64, tag string, asJSON bool, out *fsPutJSON) error {
	bar := a.newBar(size, "put", asJSON)
	if bar != nil {
		r = &barReader{r: r, bar: bar}
	}
	h, err := fsclient.Put(ctx, src.open, r, size, tag)
	bar.finish(err == nil)
	if err != nil {
		return err
	}
	out.Hash, out.Size = h.String(), size
	return nil
}

func (a *app) fsPutStdin(ctx context.Context, src *fsSource, sized bool, size int64, tag string, asJSON bool, out *fsPutJSON) error {
	if sized {
		if size < 0 {
			return fmt.Errorf("--size %d is negative", size)
		}
		return a.fsPutReader(ctx, src, a.in, size, tag, asJSON, out)
	}
	tmp, err := os.CreateTemp("", "alknet-fs-put-*")
	if err != nil {
		return fmt.Errorf("put: copy stdin to a temporary file (or give --size): %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	n, err := io.Copy(tmp, a.in)
	if err != nil {
		return fmt.Errorf("put: copy stdin to %s (or give --size): %w", tmp.Name(), err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return a.fsPutReader(ctx, src, tmp, n, tag, asJSON, out)
}

func (a *app) fsPutDir(ctx context.Context, src *fsSource, dir, tag string, asJSON bool, out *fsPutJSON) error {
	var bar *bar
	h, col, err := fsclient.PutDir(ctx, src.open, dir, tag, fsclient.PutDirOptions{
		OnStart:    func(_ int, total int64) { bar = a.newBar(total, "put", asJSON) },
		OnProgress: func(n int64) { bar.add(n) },
	})
	bar.finish(err == nil)
	if err != nil {
		return err
	}
	out.Hash, out.Collection, out.Files = h.String(), true, len(col.Entries)
	for _, e := range col.Entries {
		out.Size += e.Size
	}
	return nil
}

func (a *app) fsGetCmd() *cobra.Command {
	var f dialFlags
	var from []string
	var output string
	var asDir, force, asJSON bool
	c := &cobra.Command{
		Use:   "get HASH --from SRC [--from SRC…] -o OUT [--dir]",
		Short: "Fetch a blob (or, with --dir, a directory tree) from one or more nodes, verified as it arrives",
		Long: `Fetch the blob HASH into the file OUT. SRC is HOST[:PORT], verified by --peer,
else known_peers, else WebPKI, like every dial; or FINGERPRINT@HOST[:PORT],
pinned to that fingerprint. With several --from the blob is split into parts
spread over the sources, a few in flight on each. Every 16 KiB group is
verified against HASH before it is written: a source that sends a bad group
(or finds its own copy corrupt) is dropped, named on stderr ("source X
dropped: group N failed verification"), and what it had not delivered is
fetched from the others. The command fails only when no source is left.

Progress is kept in OUT.fsprogress (the groups verified and synced to disk):
rerunning an interrupted get (Ctrl-C, a crash, every source dropped)
resumes and requests only the missing groups; the file is removed once OUT
is complete. An existing OUT that is not a partial download is refused
unless --force.

Directory trees: with --dir, HASH must be a collection (what 'alknet fs put'
prints for a directory) and OUT is the directory to restore it into, with
each file's permission bits; an existing non-empty OUT is refused unless
--force (files of the tree then replace those of the same path). Without
--dir, OUT always receives the blob's bytes as they are — for a collection,
its JSON listing. Progress of a tree is kept in OUT.fsprogress/, and a rerun
resumes it. Needs scope fs:read on each source. A progress bar is shown on
stderr when it is a terminal.`,
		Example: `  alknet fs get blake3:… --from node:4433 -o photo.jpg
  alknet fs get blake3:… --from ed25519:…@a.example --from b.example:4433 -o big.iso
  alknet fs get blake3:… --from node:4433 --dir -o ./project`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			h, err := bao.ParseHash(args[0])
			if err != nil {
				return fmt.Errorf("HASH: %w", err)
			}
			if len(from) == 0 {
				return errors.New("name at least one node to fetch from: --from HOST[:PORT] or --from FINGERPRINT@HOST[:PORT]")
			}
			if output == "" {
				return errors.New("-o OUT is required: the file (with --dir: the directory) to write")
			}
			if output == "-" {
				return errors.New("-o - (stdout) is not supported: parts arrive out of order, so OUT must be a file")
			}
			var sources []fsclient.Source
			for _, s := range from {
				src, err := a.fsSourceFor(&f, s)
				if err != nil {
					return err
				}
				defer src.close()
				sources = append(sources, fsclient.Source{Name: src.name, Open: src.open})
			}
			ctx, stop := signalContext()
			defer stop()
			var bar *bar
			opts := fsclient.GetOptions{
				Overwrite:  force,
				OnStart:    func(total int64) { bar = a.newBar(total, "get", asJSON) },
				OnProgress: func(n int64) { bar.add(n) },
				OnDrop: func(d fsclient.Dropped) {
					bar.clear()
					fmt.Fprintln(a.err, d.Error())
				},
			}
			var res *fsclient.Result
			if asDir {
				res, _, err = fsclient.GetDir(ctx, h, sources, output, opts)
			} else {
				res, err = fsclient.GetFile(ctx, h, sources, output, opts)
			}
			bar.finish(err == nil)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(fsGetResultJSON(res, output, asDir))
			}
			what := fmt.Sprintf("%d bytes", res.Size)
			if asDir {
				what = fmt.Sprintf("%d files, %d bytes", res.Files, res.Size)
			}
			if res.Resumed > 0 {
				what += fmt.Sprintf(", %d resumed", res.Resumed)
			}
			fmt.Fprintf(a.out, "%s: %s verified (%s)\n", output, h, what)
			return nil
		},
	}
	c.Flags().StringArrayVar(&from, "from", nil, "a node to fetch from: HOST[:PORT] or FINGERPRINT@HOST[:PORT] (repeat for several)")
	c.Flags().StringVarP(&output, "output", "o", "", "the file to write (with --dir: the directory)")
	c.Flags().BoolVar(&asDir, "dir", false, "HASH is a collection: restore its directory tree into OUT")
	c.Flags().BoolVar(&force, "force", false, "replace an existing OUT (with --dir: write into a non-empty OUT)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.add(c)
	return c
}

// fsGetJSON is `alknet fs get --json`.
type fsGetJSON struct {
	Hash   string `json:"hash"`
	Output string `json:"output"`
	// Size is the blob's size; with --dir, the sum of the tree's files'.
	Size int64 `json:"size"`
	// Files is the number of files restored (--dir).
	Files int `json:"files,omitempty"`
	// FetchedBytes were received in this run, ResumedBytes verified by an
	// earlier one.
	FetchedBytes int64           `json:"fetched_bytes"`
	ResumedBytes int64           `json:"resumed_bytes"`
	Dropped      []fsDroppedJSON `json:"dropped"`
}

type fsDroppedJSON struct {
	Source string `json:"source"`
	// Group that failed verification; absent when dropped for another
	// reason. With stored_copy_corrupt, the node found its own copy
	// corrupt and stopped sending at this group or a later one.
	Group             *int64 `json:"group,omitempty"`
	StoredCopyCorrupt bool   `json:"stored_copy_corrupt,omitempty"`
	Error             string `json:"error"`
}

func fsGetResultJSON(res *fsclient.Result, output string, dir bool) fsGetJSON {
	out := fsGetJSON{Hash: res.Hash.String(), Output: output, Size: res.Size, FetchedBytes: res.Fetched,
		ResumedBytes: res.Resumed, Dropped: []fsDroppedJSON{}}
	if dir {
		out.Files = res.Files
	}
	for _, d := range res.Dropped {
		j := fsDroppedJSON{Source: d.Source, StoredCopyCorrupt: d.NodeCorrupt, Error: d.Error()}
		if d.Group >= 0 {
			g := d.Group
			j.Group = &g
		}
		out.Dropped = append(out.Dropped, j)
	}
	return out
}
