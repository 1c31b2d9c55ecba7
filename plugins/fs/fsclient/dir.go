package fsclient

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
)

// PutDirOptions report the progress of PutDir.
type PutDirOptions struct {
	// OnStart is called once the directory has been read, with the number
	// of files and their total size.
	OnStart func(files int, total int64)
	// OnProgress is called with the number of bytes newly sent.
	OnProgress func(n int64)
}

// PutDir puts every regular file under dir on the node, then the
// collection listing them (wire.Collection: path, hash, size and
// permission bits of each), and returns the collection's hash. tag, if
// not empty, tags the collection. Symbolic links and special files are
// refused, all of them named, before anything is sent; directories that
// hold no file are not recorded. Files are read through an os.Root on dir,
// so nothing outside it is read.
func PutDir(ctx context.Context, open Opener, dir, tag string, opts PutDirOptions) (bao.Hash, *wire.Collection, error) {
	if tag != "" {
		if err := wire.ValidTag(tag); err != nil {
			return bao.Hash{}, nil, err
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return bao.Hash{}, nil, fmt.Errorf("put: %w", err)
	}
	defer root.Close()
	files, err := scanDir(root, dir)
	if err != nil {
		return bao.Hash{}, nil, err
	}
	if opts.OnStart != nil {
		var total int64
		for _, f := range files {
			total += f.size
		}
		opts.OnStart(len(files), total)
	}
	col := &wire.Collection{Format: wire.CollectionFormat, Entries: []wire.Entry{}}
	for _, f := range files {
		e, err := putFile(ctx, open, root, f.path, opts.OnProgress)
		if err != nil {
			return bao.Hash{}, nil, fmt.Errorf("put %s: %w", filepath.Join(dir, filepath.FromSlash(f.path)), err)
		}
		col.Entries = append(col.Entries, e)
	}
	b, err := col.Marshal()
	if err != nil {
		return bao.Hash{}, nil, fmt.Errorf("put %s: %w", dir, err)
	}
	h, err := Put(ctx, open, bytes.NewReader(b), int64(len(b)), tag)
	if err != nil {
		return bao.Hash{}, nil, fmt.Errorf("put the collection of %s: %w", dir, err)
	}
	return h, col, nil
}

type dirFile struct {
	path string // slash-separated, relative
	size int64
}

// scanDir lists the regular files under root, refusing what a collection
// cannot hold.
func scanDir(root *os.Root, dir string) ([]dirFile, error) {
	var files []dirFile
	var refused []error
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		show := filepath.Join(dir, filepath.FromSlash(p))
		switch t := d.Type(); {
		case d.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			refused = append(refused, fmt.Errorf("%s is a symbolic link: a collection holds regular files only; replace it by a copy of its target, or move it out", show))
			return nil
		case !t.IsRegular():
			refused = append(refused, fmt.Errorf("%s is %s: a collection holds regular files only; move it out", show, kind(t)))
			return nil
		}
		if err := wire.ValidPath(p); err != nil {
			refused = append(refused, fmt.Errorf("%s: %w; rename it", show, err))
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, dirFile{path: p, size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("put: read %s: %w", dir, err)
	}
	if len(refused) > 0 {
		msgs := make([]string, len(refused))
		for i, e := range refused {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("put %s: nothing was sent: %s", dir, strings.Join(msgs, "; "))
	}
	return files, nil
}

// kind names the type of a file that is not regular.
func kind(t fs.FileMode) string {
	switch {
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a device"
	}
	return fmt.Sprintf("not a regular file (%v)", t)
}

// putFile puts the regular file p of root.
func putFile(ctx context.Context, open Opener, root *os.Root, p string, onProgress func(int64)) (wire.Entry, error) {
	f, err := root.Open(filepath.FromSlash(p))
	if err != nil {
		return wire.Entry{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return wire.Entry{}, err
	}
	if !st.Mode().IsRegular() {
		return wire.Entry{}, fmt.Errorf("it is no longer a regular file (%v)", st.Mode().Type())
	}
	var r io.Reader = f
	if onProgress != nil {
		r = &countingReader{r: f, fn: onProgress}
	}
	h, err := Put(ctx, open, r, st.Size(), "")
	if err != nil {
		return wire.Entry{}, err
	}
	return wire.Entry{Path: p, Hash: h, Size: st.Size(), Mode: uint32(st.Mode().Perm())}, nil
}

type countingReader struct {
	r  io.Reader
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.fn(int64(n))
	}
	return n, err
}

// GetDir restores the tree of the collection h into dir: it fetches and
// parses the collection, then each file, verified as GetFile does, created
// through an os.Root on dir (so no path, nor a symbolic link already in
// dir, leads outside it) with the collection's permission bits.
//
// A dir that exists and is not empty is refused unless opts.Overwrite;
// files of the collection then replace those of the same path, and other
// files stay. Progress is kept in the directory dir + ProgressSuffix
// beside dir, one file per entry: a rerun resumes (without needing
// Overwrite), skipping files already complete and the verified groups of
// the others, and the progress directory is removed once the tree is
// complete.
func GetDir(ctx context.Context, h bao.Hash, sources []Source, dir string, opts GetOptions) (*Result, *wire.Collection, error) {
	p, err := newPool(sources, opts.OnDrop)
	if err != nil {
		return nil, nil, err
	}
	mem := &memSink{max: wire.MaxCollection}
	copts := opts
	copts.OnStart, copts.OnProgress = nil, nil
	cres, err := newGetter(h, p, mem, nil, copts).run(ctx, -1, nil)
	if err != nil {
		return cres, nil, err
	}
	col, err := wire.ParseCollection(mem.buf)
	if err != nil {
		return cres, nil, fmt.Errorf("get %v: %w (a tree is restored from the hash `alknet fs put` printed for a directory)", h, err)
	}
	entries := append([]wire.Entry(nil), col.Entries...)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })

	dir = filepath.Clean(dir)
	progDir := dir + ProgressSuffix
	_, perr := os.Lstat(progDir)
	resuming := perr == nil
	if !resuming && !opts.Overwrite {
		if names, err := os.ReadDir(dir); err == nil && len(names) > 0 {
			return cres, col, fmt.Errorf("get: %s exists and is not empty; restore into a new or empty directory, or allow writing into it (--force)", dir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return cres, col, fmt.Errorf("get: %w", err)
	}
	if err := os.MkdirAll(progDir, 0o700); err != nil {
		return cres, col, fmt.Errorf("get: keep progress: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return cres, col, fmt.Errorf("get: %w", err)
	}
	defer root.Close()
	proot, err := os.OpenRoot(progDir)
	if err != nil {
		return cres, col, fmt.Errorf("get: keep progress: %w", err)
	}
	defer proot.Close()

	res := &Result{Hash: h}
	for _, e := range entries {
		res.Size += e.Size
	}
	if opts.OnStart != nil {
		opts.OnStart(res.Size)
	}
	fopts := opts
	fopts.OnStart, fopts.OnDrop, fopts.Overwrite = nil, nil, true
	for _, e := range entries {
		show := filepath.Join(dir, filepath.FromSlash(e.Path))
		if d := path.Dir(e.Path); d != "." {
			if err := root.MkdirAll(filepath.FromSlash(d), 0o755); err != nil {
				return res, col, fmt.Errorf("get: create the directory of %s: %w", show, err)
			}
		}
		id := bao.Sum([]byte(e.Path))
		prog := &progressFile{root: proot, name: hex.EncodeToString(id[:16]) + ".json", path: e.Path, keepDone: true}
		r, err := getFileIn(ctx, p, e.Hash, e.Size, root, filepath.FromSlash(e.Path), show, prog, fopts)
		if r != nil {
			res.Fetched += r.Fetched
			res.Resumed += r.Resumed
		}
		res.Dropped = p.droppedList()
		if err != nil {
			return res, col, fmt.Errorf("get %s: %w", show, err)
		}
		mode := fs.FileMode(e.Mode)
		if mode == 0 {
			mode = 0o644
		}
		if err := root.Chmod(filepath.FromSlash(e.Path), mode); err != nil {
			return res, col, fmt.Errorf("get: %w", err)
		}
		res.Files++
	}
	if err := os.RemoveAll(progDir); err != nil {
		return res, col, fmt.Errorf("get: the tree is complete, but its progress directory was not removed: %w", err)
	}
	return res, col, nil
}

// memSink keeps a small blob (a collection) in memory.
type memSink struct {
	buf []byte
	max int64
}

func (m *memSink) begin(size int64) error {
	if size > m.max {
		return fmt.Errorf("the blob has %d bytes, more than a collection may (%d): is it the hash of a directory?", size, m.max)
	}
	m.buf = make([]byte, size)
	return nil
}

func (m *memSink) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.buf)) {
		return 0, fmt.Errorf("write [%d, %d) outside a blob of %d bytes", off, off+int64(len(p)), len(m.buf))
	}
	return copy(m.buf[off:], p), nil
}

func (m *memSink) sync() error { return nil }
