package fsclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
)

// Defaults of GetOptions.
const (
	// MinPartSize is the smallest part a blob is split into (1 MiB).
	MinPartSize = 1 << 20
	// DefaultPerSource is how many parts are in flight per source.
	DefaultPerSource = 3
	// DefaultStallTimeout drops a source that sends nothing for this long.
	DefaultStallTimeout = 30 * time.Second
)

// How often the progress of a download is made durable: after this many
// newly verified bytes, or this long, whichever comes first.
const (
	flushBytes = 32 << 20
	flushEvery = time.Second
)

// GetOptions tune a download. The callbacks may be called from several
// goroutines, but never at the same time.
type GetOptions struct {
	// PartSize is the size of the parts the blob is split into, rounded up
	// to whole groups; 0: max(MinPartSize, size/(4·sources)).
	PartSize int64
	// PerSource is how many parts are in flight per source; 0:
	// DefaultPerSource.
	PerSource int
	// StallTimeout drops a source that sends nothing for this long; 0:
	// DefaultStallTimeout.
	StallTimeout time.Duration
	// Overwrite lets GetFile replace an existing file that is not a
	// partial download, and GetDir write into a directory that is not
	// empty.
	Overwrite bool
	// OnStart is called once the total size is known (the blob's; for
	// GetDir the sum of the files').
	OnStart func(total int64)
	// OnProgress is called with the number of bytes newly verified and
	// written, including those an earlier run had verified (reported when
	// its progress file is read).
	OnProgress func(n int64)
	// OnDrop is called when a source is dropped.
	OnDrop func(Dropped)
}

// Result describes a finished download.
type Result struct {
	Hash bao.Hash
	// Size is the blob's size (GetDir: the sum of its files' sizes).
	Size int64
	// Fetched counts the content bytes received and verified in this run;
	// Resumed those an earlier, interrupted run had verified.
	Fetched, Resumed int64
	// Files is the number of files written by GetDir.
	Files int
	// Dropped are the sources dropped, in the order they were dropped.
	Dropped []Dropped
}

// Dropped is a source dropped during a download, and why.
type Dropped struct {
	Source string
	// Group is the group that failed verification, or -1 if the source
	// was dropped for another reason (it refused the request, failed, or
	// stalled). When the node found its own copy corrupt (NodeCorrupt),
	// it is the first group not received when the node reset the stream:
	// the bad group is that one or a later one, as the groups in flight
	// before a reset are lost.
	Group int64
	// NodeCorrupt is set when the node reset the stream with
	// wire.CodeCorrupt: it found its stored copy corrupt.
	NodeCorrupt bool
	Err         error
}

func (d Dropped) Error() string {
	switch {
	case d.NodeCorrupt:
		return fmt.Sprintf("source %s dropped: its stored copy failed verification at group %d or after (the node stopped there; its log names the group)",
			d.Source, d.Group)
	case d.Group >= 0:
		return fmt.Sprintf("source %s dropped: group %d failed verification", d.Source, d.Group)
	}
	return fmt.Sprintf("source %s dropped: %v", d.Source, d.Err)
}

func (d Dropped) Unwrap() error { return d.Err }

// NoSourceError is a download that failed because every source was
// dropped.
type NoSourceError struct {
	Hash    bao.Hash
	Dropped []Dropped
}

func (e *NoSourceError) Error() string {
	var parts []string
	for _, d := range e.Dropped {
		parts = append(parts, d.Error())
	}
	return fmt.Sprintf("get %v: no source left (%s); name other sources (a rerun keeps what was verified)",
		e.Hash, strings.Join(parts, "; "))
}

// Unwrap gives the reasons to errors.Is/As.
func (e *NoSourceError) Unwrap() []error {
	var errs []error
	for _, d := range e.Dropped {
		errs = append(errs, d)
	}
	return errs
}

// emptyHash is the hash of the empty blob, whose size needs no asking.
var emptyHash = bao.Sum(nil)

// pool is the sources of a download, shared by the blobs of a tree: a
// source dropped for one blob is not asked for the next.
type pool struct {
	mu      sync.Mutex
	srcs    []*srcState
	dropped []Dropped
	onDrop  func(Dropped)
}

type srcState struct {
	Source
	dropped bool // under pool.mu
}

func newPool(sources []Source, onDrop func(Dropped)) (*pool, error) {
	if len(sources) == 0 {
		return nil, errors.New("get: no source given; name at least one node to fetch from")
	}
	p := &pool{onDrop: onDrop}
	for i, s := range sources {
		if s.Open == nil {
			return nil, fmt.Errorf("get: source %d (%q) has no Opener", i, s.Name)
		}
		p.srcs = append(p.srcs, &srcState{Source: s})
	}
	return p, nil
}

func (p *pool) live() []*srcState {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*srcState
	for _, s := range p.srcs {
		if !s.dropped {
			out = append(out, s)
		}
	}
	return out
}

// drop drops s for err, which happened at group next; it reports false if
// s was dropped already.
func (p *pool) drop(s *srcState, next int64, err error) bool {
	d := Dropped{Source: s.Name, Group: -1, Err: err}
	var ge *bao.GroupError
	if errors.As(err, &ge) {
		d.Group = ge.Index
	} else if code, ok := ResetCode(err); ok && code == wire.CodeCorrupt {
		d.Group, d.NodeCorrupt = next, true
	}
	p.mu.Lock()
	if s.dropped {
		p.mu.Unlock()
		return false
	}
	s.dropped = true
	p.dropped = append(p.dropped, d)
	p.mu.Unlock()
	if p.onDrop != nil {
		p.onDrop(d)
	}
	return true
}

func (p *pool) droppedList() []Dropped {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Dropped(nil), p.dropped...)
}

// sink is where a download's verified bytes go.
type sink interface {
	// begin is called once, when the size is known, before any write.
	begin(size int64) error
	WriteAt(p []byte, off int64) (int, error)
	// sync makes what was written durable, before progress records it.
	sync() error
}

// localError is a failure on this side (writing the output, recording
// progress): it ends the download instead of dropping a source.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// getter runs one blob's download.
type getter struct {
	h     bao.Hash
	pool  *pool
	out   sink
	prog  *progressFile // nil: no resume
	opts  GetOptions
	stall time.Duration

	mu         sync.Mutex
	cond       *sync.Cond
	size       int64 // -1 until known
	verified   groupSet
	queue      []Span
	inflight   int
	fetched    int64
	sinceFlush int64
	lastFlush  time.Time
	fatal      error
	cancel     context.CancelFunc

	flushMu sync.Mutex
}

func newGetter(h bao.Hash, p *pool, out sink, prog *progressFile, opts GetOptions) *getter {
	g := &getter{h: h, pool: p, out: out, prog: prog, opts: opts, size: -1, stall: opts.StallTimeout}
	if g.stall <= 0 {
		g.stall = DefaultStallTimeout
	}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// run downloads the blob. size is its size if known (from a progress file
// or a collection), else -1; verified are the groups an earlier run
// verified (size must then be known).
func (g *getter) run(ctx context.Context, size int64, verified []Span) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.cancel = cancel
	res := &Result{Hash: g.h}
	switch {
	case g.h == emptyHash:
		if size > 0 {
			return nil, fmt.Errorf("get %v: this is the hash of the empty blob, not of %d bytes", g.h, size)
		}
		size = 0
	case size == 0:
		return nil, fmt.Errorf("get %v: size 0 was given, but this is not the hash of the empty blob", g.h)
	}
	if size == 0 {
		verified = []Span{{0, 1}} // the hash is the empty blob's: nothing to fetch
	}
	if size >= 0 {
		if err := g.begin(size, verified); err != nil {
			return nil, err
		}
		res.Resumed = g.verified.bytes(size)
	} else if err := g.probe(ctx); err != nil {
		return nil, err
	}
	g.mu.Lock()
	size = g.size
	g.mu.Unlock()
	res.Size = size
	g.plan()
	var wg sync.WaitGroup
	per := g.opts.PerSource
	if per <= 0 {
		per = DefaultPerSource
	}
	for _, src := range g.pool.live() {
		sctx, scancel := context.WithCancel(ctx)
		defer scancel()
		stop := context.AfterFunc(sctx, func() {
			g.mu.Lock()
			g.cond.Broadcast()
			g.mu.Unlock()
		})
		defer stop()
		for range per {
			wg.Add(1)
			go func() {
				// Owned by run, which waits for every worker.
				defer wg.Done()
				g.worker(sctx, scancel, src)
			}()
		}
	}
	wg.Wait()
	ferr := g.flush()
	g.mu.Lock()
	defer g.mu.Unlock()
	res.Fetched = g.fetched
	res.Dropped = g.pool.droppedList()
	complete := len(g.verified.missing(bao.NumGroups(size))) == 0
	switch {
	case g.fatal != nil:
		return res, g.fatal
	case ferr != nil:
		return res, ferr
	case complete:
		if err := g.out.sync(); err != nil {
			return res, fmt.Errorf("get %v: %w", g.h, err)
		}
		if g.prog != nil && !g.prog.keepDone {
			if err := g.prog.remove(); err != nil {
				return res, err
			}
		}
		return res, nil
	case ctx.Err() != nil:
		return res, fmt.Errorf("get %v: interrupted with %d of %d bytes verified (%w); rerun to resume",
			g.h, g.verified.bytes(size), size, context.Cause(ctx))
	}
	return res, &NoSourceError{Hash: g.h, Dropped: res.Dropped}
}

// begin sets the size, prepares the output and records the first
// progress, so that a rerun resumes even if nothing was verified yet.
func (g *getter) begin(size int64, verified []Span) error {
	if err := g.out.begin(size); err != nil {
		return &localError{fmt.Errorf("get %v: %w", g.h, err)}
	}
	g.mu.Lock()
	g.size = size
	for _, s := range verified {
		g.verified.add(s.First, s.End)
	}
	g.lastFlush = time.Now()
	snap := g.verified.clone()
	g.mu.Unlock()
	if g.opts.OnStart != nil {
		g.opts.OnStart(size)
	}
	if n := g.verified.bytes(size); n > 0 && g.opts.OnProgress != nil {
		g.opts.OnProgress(n)
	}
	if g.prog != nil {
		if err := g.prog.save(g.h, size, snap); err != nil {
			return &localError{err}
		}
	}
	return nil
}

// probe learns the size from the first source that answers: it asks for
// the first byte, and verifies and keeps the whole group 0 that carries it
// (which bounds the size the node claims to within a factor of two).
func (g *getter) probe(ctx context.Context) error {
	for _, src := range g.pool.live() {
		_, err := g.transfer(ctx, src, 0, 1, true)
		if err == nil {
			return nil
		}
		var le *localError
		if errors.As(err, &le) {
			return le.err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("get %v: %w", g.h, context.Cause(ctx))
		}
		g.pool.drop(src, 0, err)
	}
	return &NoSourceError{Hash: g.h, Dropped: g.pool.droppedList()}
}

// plan queues the missing groups in parts.
func (g *getter) plan() {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := int64(len(g.pool.live()))
	part := g.opts.PartSize
	if part <= 0 {
		part = max(MinPartSize, g.size/(4*max(n, 1)))
	}
	pg := max(1, (part+bao.GroupSize-1)/bao.GroupSize)
	// Parts are aligned to multiples of pg, so that what an earlier run
	// verified only shortens the parts it touched.
	for _, s := range g.verified.missing(bao.NumGroups(g.size)) {
		for f := s.First; f < s.End; {
			e := min((f/pg+1)*pg, s.End)
			g.queue = append(g.queue, Span{f, e})
			f = e
		}
	}
}

// worker fetches parts from src until none is left, or src is dropped, or
// the download ends.
func (g *getter) worker(ctx context.Context, dropSrc context.CancelFunc, src *srcState) {
	for {
		p, ok := g.take(ctx)
		if !ok {
			return
		}
		next, err := g.transfer(ctx, src, p.First, p.End, false)
		if err != nil && ctx.Err() == nil {
			var le *localError
			if errors.As(err, &le) {
				g.fail(le.err)
			} else {
				g.pool.drop(src, next, err)
				dropSrc() // before the part is queued again: no other worker of src takes it
			}
		}
		g.done(Span{next, p.End})
		if err != nil {
			return
		}
	}
}

// take waits for a part to fetch; false when there is none left or ctx
// is done.
func (g *getter) take(ctx context.Context) (Span, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		switch {
		case ctx.Err() != nil:
			return Span{}, false
		case len(g.queue) > 0:
			p := g.queue[0]
			g.queue = g.queue[1:]
			g.inflight++
			return p, true
		case g.inflight == 0:
			return Span{}, false
		}
		g.cond.Wait()
	}
}

// done ends a part in flight; rest, its groups not verified, is queued
// again first.
func (g *getter) done(rest Span) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight--
	if rest.First < rest.End {
		g.queue = append([]Span{rest}, g.queue...)
	}
	g.cond.Broadcast()
}

func (g *getter) fail(err error) {
	g.mu.Lock()
	if g.fatal == nil {
		g.fatal = err
	}
	g.mu.Unlock()
	g.cancel()
}

// deliver writes the verified group at pos and records it.
func (g *getter) deliver(pos int64, data []byte) error {
	if _, err := g.out.WriteAt(data, pos); err != nil {
		return &localError{fmt.Errorf("get %v: write bytes [%d, %d): %w", g.h, pos, pos+int64(len(data)), err)}
	}
	i := pos / bao.GroupSize
	g.mu.Lock()
	g.verified.add(i, i+1)
	g.fetched += int64(len(data))
	g.sinceFlush += int64(len(data))
	due := g.sinceFlush >= flushBytes || time.Since(g.lastFlush) >= flushEvery
	if g.opts.OnProgress != nil {
		g.opts.OnProgress(int64(len(data)))
	}
	g.mu.Unlock()
	if due && g.flushMu.TryLock() {
		g.flushMu.Unlock()
		if err := g.flush(); err != nil {
			return &localError{err}
		}
	}
	return nil
}

// flush makes the written groups durable, then records them as verified.
func (g *getter) flush() error {
	if g.prog == nil {
		return nil
	}
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	g.mu.Lock()
	if g.size < 0 {
		g.mu.Unlock()
		return nil
	}
	snap, size := g.verified.clone(), g.size
	g.sinceFlush = 0
	g.lastFlush = time.Now()
	g.mu.Unlock()
	if err := g.out.sync(); err != nil {
		return fmt.Errorf("get %v: make the output durable: %w", g.h, err)
	}
	return g.prog.save(g.h, size, snap)
}

// transfer fetches the groups [first, end) from src (probe: asks for
// byte 0 and learns the size). It returns the first group not verified.
func (g *getter) transfer(ctx context.Context, src *srcState, first, end int64, probe bool) (next int64, err error) {
	next = first
	s, err := src.Open(ctx)
	if err != nil {
		return next, fmt.Errorf("open a stream: %w", err)
	}
	var stalled atomic.Bool
	wd := time.AfterFunc(g.stall, func() {
		stalled.Store(true)
		s.CancelRead(0)
		s.CancelWrite(0)
	})
	stop := context.AfterFunc(ctx, func() {
		s.CancelRead(0)
		s.CancelWrite(0)
	})
	defer func() {
		wd.Stop()
		stop()
		_ = s.Close()
		if err != nil && stalled.Load() {
			err = fmt.Errorf("sent nothing for %s: %w", g.stall, err)
		}
	}()
	g.mu.Lock()
	size := g.size
	g.mu.Unlock()
	rng := wire.Range{Offset: 0, Length: 1}
	if !probe {
		rng.Offset = first * bao.GroupSize
		rng.Length = min(end*bao.GroupSize, size) - rng.Offset
	}
	if err := wire.WriteHeader(s, &wire.Request{Op: wire.OpGet, Hash: &g.h, Ranges: []wire.Range{rng}}); err != nil {
		return next, fmt.Errorf("send the get request: %w", describeStreamError(err))
	}
	if err := s.CloseWrite(); err != nil {
		return next, fmt.Errorf("send the get request: %w", describeStreamError(err))
	}
	br := bufio.NewReaderSize(&watchReader{r: s, t: wd, d: g.stall}, 64<<10)
	resp, err := readResponse(br, "get")
	if err != nil {
		return next, err
	}
	if probe {
		size = resp.Size
		if size == 0 { // the empty blob's hash was handled by run
			return next, &bao.GroupError{Index: 0}
		}
		rng.Length = min(bao.GroupSize, size)
	} else if resp.Size != size {
		return next, fmt.Errorf("it says the blob has %d bytes, but it has %d", resp.Size, size)
	}
	v := bao.NewSliceVerifier(br, g.h, size, rng.Offset, rng.Length)
	buf := make([]byte, bao.GroupSize)
	for pos, stop := rng.Offset, rng.Offset+rng.Length; pos < stop; {
		n := min(bao.GroupSize, stop-pos)
		if _, err := io.ReadFull(v, buf[:n]); err != nil {
			return next, describeStreamError(err)
		}
		if probe { // one group only: group 0, now verified
			if err := g.begin(size, nil); err != nil {
				return next, err
			}
		}
		if err := g.deliver(pos, buf[:n]); err != nil {
			return next, err
		}
		pos += n
		next++
	}
	return next, nil
}

// watchReader resets a stall timer whenever bytes arrive.
type watchReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (w *watchReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.t.Reset(w.d)
	}
	return n, err
}

// Get downloads the blob h from sources into out, spreading its parts over
// them; every group is verified before it is written. The size is learned
// from the first source that answers. If out has a Truncate(int64) error
// method it is truncated to the size first; if it has Sync() error, it is
// synced at the end. Get keeps no progress: see GetFile to resume.
func Get(ctx context.Context, h bao.Hash, sources []Source, out io.WriterAt, opts GetOptions) (*Result, error) {
	p, err := newPool(sources, opts.OnDrop)
	if err != nil {
		return nil, err
	}
	return newGetter(h, p, &writerAtSink{w: out}, nil, opts).run(ctx, -1, nil)
}

type writerAtSink struct{ w io.WriterAt }

func (s *writerAtSink) begin(size int64) error {
	if t, ok := s.w.(interface{ Truncate(int64) error }); ok {
		return t.Truncate(size)
	}
	return nil
}

func (s *writerAtSink) WriteAt(p []byte, off int64) (int, error) { return s.w.WriteAt(p, off) }

func (s *writerAtSink) sync() error {
	if f, ok := s.w.(interface{ Sync() error }); ok {
		return f.Sync()
	}
	return nil
}

// GetFile downloads the blob h from sources into the file at path.
//
// Progress is kept beside it in path + ProgressSuffix: which groups are
// verified and durable (the file is fsync'ed before they are recorded).
// If that file exists and is for h, the download resumes and requests
// only the missing groups; it is removed once the download completes. An
// existing file at path with no progress file is refused unless
// opts.Overwrite. The file is created only once a source has answered.
func GetFile(ctx context.Context, h bao.Hash, sources []Source, path string, opts GetOptions) (*Result, error) {
	p, err := newPool(sources, opts.OnDrop)
	if err != nil {
		return nil, err
	}
	dir, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." {
		return nil, fmt.Errorf("get: output %q does not name a file", path)
	}
	if dir == "" {
		dir = "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("get: open the output directory: %w", err)
	}
	defer root.Close()
	prog := &progressFile{root: root, name: name + ProgressSuffix}
	return getFileIn(ctx, p, h, -1, root, name, path, prog, opts)
}

// getFileIn downloads h into the file name of root (shown as display),
// with its progress in prog. size is the blob's size if known, else -1.
func getFileIn(ctx context.Context, p *pool, h bao.Hash, size int64, root *os.Root, name, display string, prog *progressFile, opts GetOptions) (*Result, error) {
	pr, err := prog.load()
	if err != nil {
		return nil, err
	}
	var verified []Span
	out := &fileSink{root: root, name: name, display: display}
	if pr != nil {
		if pr.Hash != h {
			return nil, fmt.Errorf("get: %s is the partial download of %v, not of %v; remove %s and %s, or write elsewhere",
				display, pr.Hash, h, display, prog.where())
		}
		if size >= 0 && pr.Size != size {
			return nil, fmt.Errorf("get: %s records size %d for %v, the collection says %d; remove it to start over", prog.where(), pr.Size, h, size)
		}
		if st, err := root.Lstat(name); err == nil && st.Mode().IsRegular() {
			if st.Size() != pr.Size {
				return nil, fmt.Errorf("get: %s has %d bytes, but its progress file %s is for %d; remove both to start over",
					display, st.Size(), prog.where(), pr.Size)
			}
			size, verified, out.resume = pr.Size, pr.Verified, true
		}
	}
	if !out.resume {
		st, err := root.Lstat(name)
		switch {
		case err == nil && !st.Mode().IsRegular():
			return nil, fmt.Errorf("get: %s exists and is not a regular file (%v); remove it or write elsewhere", display, st.Mode().Type())
		case err == nil && !opts.Overwrite:
			return nil, fmt.Errorf("get: %s exists; remove it, write elsewhere, or allow overwriting (--force)", display)
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("get: %w", err)
		}
	}
	defer out.close()
	res, err := newGetter(h, p, out, prog, opts).run(ctx, size, verified)
	if err != nil {
		return res, err
	}
	return res, out.close()
}

// fileSink writes a download into a file of a root, created (or
// truncated) once the size is known, or opened as it is to resume.
type fileSink struct {
	root    *os.Root
	name    string
	display string
	resume  bool
	f       *os.File
}

func (s *fileSink) begin(size int64) error {
	flags := os.O_RDWR | os.O_CREATE
	if !s.resume {
		flags |= os.O_TRUNC
	}
	f, err := s.root.OpenFile(s.name, flags, 0o666)
	if err != nil {
		return fmt.Errorf("create the output: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("output %s is not a regular file", s.display)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("size the output %s to %d bytes: %w", s.display, size, err)
	}
	s.f = f
	return nil
}

func (s *fileSink) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, off) }

func (s *fileSink) sync() error {
	if s.f == nil {
		return nil
	}
	return s.f.Sync()
}

func (s *fileSink) close() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}
