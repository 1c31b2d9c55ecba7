package fs

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
)

// store is the content-addressed blob store in one directory:
//
//	blobs/<2 hex>/<64 hex>       content, 0444
//	blobs/<2 hex>/<64 hex>.obao  its bao outboard, 0444
//	quarantine/<64 hex>[.obao]   blobs that failed verification, never served
//	tags.json                    tag name → hash
//	tmp/<id>/, tmp/<id>.lock     files being written by the process holding the lock
//	lock                         held while tags, blobs/ or quarantine/ change
//
// A blob's lease is its content file's modification time, which a put sets
// to the time it committed (a put of content already stored too): gc keeps
// an untagged blob until one lease after that. Kept on disk, leases hold
// across restarts and between the processes sharing the store.
//
// While the node switches the plugin to a new process the old one drains
// its transfers, so two processes may share a store: each writes only in
// its own tmp/<id>/, tags are read and written under the lock file, and
// the directories of processes that are gone are removed at start.
//
// A blob's outboard is renamed into blobs/ before its content, so a
// content file always has its outboard (unless something outside the
// plugin removed it: the blob is then quarantined at its next get).
type store struct {
	root  string
	now   func() time.Time
	lease atomic.Int64 // time.Duration

	tmp     string       // this process's directory in tmp/
	tmpLock *flock.Flock // held while the process runs

	mu sync.Mutex // with the lock file, serializes changes
}

// Errors of lookups.
var (
	errNotFound    = errors.New("not found")
	errQuarantined = errors.New("quarantined")
)

// corruptError is a stored blob whose files are inconsistent before any
// verification starts (outboard missing or of the wrong size).
type corruptError struct{ reason string }

func (e *corruptError) Error() string { return e.reason }

const (
	tagsFile   = "tags.json"
	lockFile   = "lock"
	blobsDir   = "blobs"
	quarDir    = "quarantine"
	tmpDir     = "tmp"
	obaoSuffix = ".obao"
)

// openStore opens (creating it if needed) the store in root. lease is how
// long a blob just put is kept from gc; now is the clock.
func openStore(root string, lease time.Duration, now func() time.Time) (*store, error) {
	for _, d := range []string{root, filepath.Join(root, blobsDir), filepath.Join(root, quarDir), filepath.Join(root, tmpDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("fs store: create %s: %w (check the permissions of the root directory)", d, err)
		}
	}
	s := &store{root: root, now: now}
	s.lease.Store(int64(lease))
	if err := s.clearTmp(); err != nil {
		return nil, err
	}
	if err := s.makeTmp(); err != nil {
		return nil, err
	}
	// Fail now, not at the first call, on an unreadable tags file.
	if _, err := s.readTags(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// clearTmp removes what processes that are gone left in tmp/: a directory
// whose lock file nobody holds, or that has no lock file (a process
// creates and locks its lock file before its directory).
func (s *store) clearTmp() error {
	dir := filepath.Join(s.root, tmpDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("fs store: read %s: %w", dir, err)
	}
	names := map[string]bool{}
	for _, e := range entries {
		names[e.Name()] = true
	}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(dir, name)
		switch {
		case strings.HasSuffix(name, ".lock"):
			l := flock.New(p)
			ok, err := l.TryLock()
			if err != nil || !ok {
				continue // held: its process is running
			}
			err = os.RemoveAll(strings.TrimSuffix(p, ".lock"))
			if err == nil {
				err = os.Remove(p)
			}
			_ = l.Unlock()
			if err != nil {
				return fmt.Errorf("fs store: clear %s: %w", p, err)
			}
		case e.IsDir() && !names[name+".lock"]:
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("fs store: clear %s: %w", p, err)
			}
		}
	}
	return nil
}

// makeTmp creates and locks this process's directory in tmp/.
func (s *store) makeTmp() error {
	for range 3 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		lp := filepath.Join(s.root, tmpDir, id+".lock")
		l := flock.New(lp)
		ok, err := l.TryLock()
		if err != nil {
			return fmt.Errorf("fs store: lock %s: %w", lp, err)
		}
		if !ok {
			continue
		}
		// Another process starting at this very moment may have taken
		// the new lock file for a stale one and removed it.
		held, err1 := l.Stat()
		onDisk, err2 := os.Stat(lp)
		if err1 != nil || err2 != nil || !os.SameFile(held, onDisk) {
			_ = l.Unlock()
			continue
		}
		d := filepath.Join(s.root, tmpDir, id)
		if err := os.Mkdir(d, 0o700); err != nil {
			_ = l.Unlock()
			_ = os.Remove(lp)
			return fmt.Errorf("fs store: create %s: %w", d, err)
		}
		s.tmp, s.tmpLock = d, l
		return nil
	}
	return fmt.Errorf("fs store: could not create a directory in %s: another process keeps taking it; try again", filepath.Join(s.root, tmpDir))
}

// close removes this process's temporary files. Transfers still running
// fail at their commit.
func (s *store) close() {
	if s.tmpLock == nil {
		return
	}
	_ = os.RemoveAll(s.tmp)
	_ = os.Remove(s.tmpLock.Path())
	_ = s.tmpLock.Unlock()
	s.tmpLock = nil
}

func (s *store) setLease(d time.Duration) { s.lease.Store(int64(d)) }

// lock serializes changes to tags, blobs/ and quarantine/ among the
// goroutines of this process and with any other process on the store.
func (s *store) lock() (unlock func(), err error) {
	s.mu.Lock()
	l := flock.New(filepath.Join(s.root, lockFile))
	if err := l.Lock(); err != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("fs store: lock %s: %w", l.Path(), err)
	}
	return func() { _ = l.Unlock(); s.mu.Unlock() }, nil
}

func hexName(h bao.Hash) string { return hex.EncodeToString(h[:]) }

func (s *store) blobPath(h bao.Hash) string {
	x := hexName(h)
	return filepath.Join(s.root, blobsDir, x[:2], x)
}

func (s *store) obaoPath(h bao.Hash) string { return s.blobPath(h) + obaoSuffix }

func (s *store) quarantinePath(h bao.Hash) string {
	return filepath.Join(s.root, quarDir, hexName(h))
}

// tempFile creates a file in this process's temporary directory.
func (s *store) tempFile(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(s.tmp, pattern)
	if err != nil {
		return nil, fmt.Errorf("fs store: create a temporary file in %s: %w", s.tmp, err)
	}
	return f, nil
}

// writeTemp writes data to a new read-only temporary file, synced, and
// returns its path.
func (s *store) writeTemp(pattern string, data []byte, perm os.FileMode) (string, error) {
	f, err := s.tempFile(pattern)
	if err != nil {
		return "", err
	}
	name := f.Name()
	if err := finishFile(f, data, perm); err != nil {
		_ = os.Remove(name)
		return "", fmt.Errorf("fs store: write %s: %w", name, err)
	}
	return name, nil
}

// finishFile writes data to f, syncs it, sets perm and closes it.
func finishFile(f *os.File, data []byte, perm os.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fs store: sync directory %s: %w", dir, err)
	}
	return nil
}

// commit stores a received blob: content is a temporary file (synced,
// read-only, closed) holding exactly size bytes hashing to h, ob its
// outboard. A blob already stored is kept and the temporary file removed
// (dedup reports that). Either way the blob gets a fresh lease: its
// content's modification time is set to now.
func (s *store) commit(content string, h bao.Hash, ob []byte) (dedup bool, err error) {
	defer os.Remove(content) // a no-op once renamed
	obTemp, err := s.writeTemp("obao-*", ob, 0o444)
	if err != nil {
		return false, err
	}
	defer os.Remove(obTemp)
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	cp, op := s.blobPath(h), s.obaoPath(h)
	dir := filepath.Dir(cp)
	if _, err := os.Lstat(cp); err == nil {
		if _, err := os.Lstat(op); errors.Is(err, fs.ErrNotExist) {
			if err := os.Rename(obTemp, op); err != nil {
				return false, fmt.Errorf("fs store: restore the outboard %s: %w", op, err)
			}
			if err := syncDir(dir); err != nil {
				return false, err
			}
		}
		return true, s.grantLease(h)
	}
	created := false
	if err := os.Mkdir(dir, 0o700); err == nil {
		created = true
	} else if !errors.Is(err, fs.ErrExist) {
		return false, fmt.Errorf("fs store: create %s: %w", dir, err)
	}
	if err := os.Rename(obTemp, op); err != nil {
		return false, fmt.Errorf("fs store: move the outboard to %s: %w", op, err)
	}
	if err := os.Chtimes(content, time.Time{}, s.now()); err != nil {
		return false, fmt.Errorf("fs store: set the lease of %s: %w", content, err)
	}
	if err := os.Rename(content, cp); err != nil {
		_ = os.Remove(op)
		return false, fmt.Errorf("fs store: move the blob to %s: %w", cp, err)
	}
	if err := syncDir(dir); err != nil {
		return false, err
	}
	if created {
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return false, err
		}
	}
	return false, nil
}

// grantLease keeps the stored blob h from gc for one lease from now.
// Called with the lock held.
func (s *store) grantLease(h bao.Hash) error {
	if err := os.Chtimes(s.blobPath(h), time.Time{}, s.now()); err != nil {
		return fmt.Errorf("fs store: set the lease of %s: %w", s.blobPath(h), err)
	}
	return nil
}

// leasedAt reports whether a blob committed at mtime is leased at now.
func (s *store) leasedAt(mtime, now time.Time) bool {
	return now.Before(mtime.Add(time.Duration(s.lease.Load())))
}

// blob is a stored blob opened for reading: its content, its outboard
// (mapped) and its size. Close releases both.
type blob struct {
	hash    bao.Hash
	size    int64
	content *os.File
	ob      []byte
	unmap   func()
}

func (b *blob) Close() {
	b.unmap()
	_ = b.content.Close()
}

// openBlob opens h for reading. It returns errNotFound, errQuarantined, a
// *corruptError (the files do not belong together: quarantine it) or an
// I/O error.
func (s *store) openBlob(h bao.Hash) (*blob, error) {
	f, err := os.Open(s.blobPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		if _, qerr := os.Lstat(s.quarantinePath(h)); qerr == nil {
			return nil, errQuarantined
		}
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("fs store: open %s: %w", s.blobPath(h), err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fs store: stat %s: %w", f.Name(), err)
	}
	size := st.Size()
	of, err := os.Open(s.obaoPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		_ = f.Close()
		return nil, &corruptError{"outboard missing"}
	}
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fs store: open %s: %w", s.obaoPath(h), err)
	}
	defer of.Close()
	ost, err := of.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fs store: stat %s: %w", of.Name(), err)
	}
	if want := bao.OutboardSize(size); ost.Size() != want {
		_ = f.Close()
		return nil, &corruptError{fmt.Sprintf("outboard is %d bytes, want %d for %d bytes of content", ost.Size(), want, size)}
	}
	ob, unmap, err := mapFile(of, int(ost.Size()))
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("fs store: map %s: %w", of.Name(), err)
	}
	if got := binary.LittleEndian.Uint64(ob); got != uint64(size) {
		unmap()
		_ = f.Close()
		return nil, &corruptError{fmt.Sprintf("outboard is for %d bytes, content has %d", got, size)}
	}
	return &blob{hash: h, size: size, content: f, ob: ob, unmap: unmap}, nil
}

// quarantine moves h's files to quarantine/, where nothing serves them.
// It reports whether it moved the content (false: already gone).
func (s *store) quarantine(h bao.Hash) (bool, error) {
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	q := s.quarantinePath(h)
	err = os.Rename(s.blobPath(h), q)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("fs store: move %s to %s: %w", s.blobPath(h), q, err)
	}
	if err := os.Rename(s.obaoPath(h), q+obaoSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return true, fmt.Errorf("fs store: move %s to quarantine: %w", s.obaoPath(h), err)
	}
	return true, syncDir(filepath.Join(s.root, quarDir))
}

// tagsDoc is the format of tags.json.
type tagsDoc struct {
	Tags map[string]bao.Hash `json:"tags"`
}

func (s *store) readTags() (map[string]bao.Hash, error) {
	p := filepath.Join(s.root, tagsFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bao.Hash{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fs store: read %s: %w", p, err)
	}
	var d tagsDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("fs store: %s is not a tags file (%v): restore it from a backup or move it away to start with no tags", p, err)
	}
	if d.Tags == nil {
		d.Tags = map[string]bao.Hash{}
	}
	return d.Tags, nil
}

// writeTags replaces tags.json atomically. Called with the lock held.
func (s *store) writeTags(tags map[string]bao.Hash) error {
	b, err := json.MarshalIndent(tagsDoc{Tags: tags}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := s.writeTemp("tags-*", append(b, '\n'), 0o600)
	if err != nil {
		return err
	}
	p := filepath.Join(s.root, tagsFile)
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("fs store: replace %s: %w", p, err)
	}
	return syncDir(s.root)
}

func tagsOf(tags map[string]bao.Hash, h bao.Hash) []string {
	out := []string{}
	for name, t := range tags {
		if t == h {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// blobInfo is what stat reports.
type blobInfo struct {
	Size        int64
	Present     bool
	Quarantined bool
	Tags        []string
	Leased      bool
}

// stat describes h; errNotFound if nothing knows it (no content, no tag,
// not quarantined).
func (s *store) stat(h bao.Hash) (blobInfo, error) {
	tags, err := s.readTags()
	if err != nil {
		return blobInfo{}, err
	}
	info := blobInfo{Tags: tagsOf(tags, h)}
	if st, err := os.Stat(s.blobPath(h)); err == nil {
		info.Present, info.Size, info.Leased = true, st.Size(), s.leasedAt(st.ModTime(), s.now())
	} else if st, err := os.Stat(s.quarantinePath(h)); err == nil {
		info.Quarantined, info.Size = true, st.Size()
	}
	if !info.Present && !info.Quarantined && len(info.Tags) == 0 {
		return blobInfo{}, errNotFound
	}
	return info, nil
}

// size returns the size of the stored blob h, or -1 if it is not stored.
func (s *store) size(h bao.Hash) int64 {
	st, err := os.Stat(s.blobPath(h))
	if err != nil {
		return -1
	}
	return st.Size()
}

// tagEntry is one tag of list.
type tagEntry struct {
	Name string
	Hash bao.Hash
	Size int64 // -1: the blob is not stored
}

func (s *store) list() ([]tagEntry, error) {
	tags, err := s.readTags()
	if err != nil {
		return nil, err
	}
	out := make([]tagEntry, 0, len(tags))
	for name, h := range tags {
		out = append(out, tagEntry{Name: name, Hash: h, Size: s.size(h)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// tag points name at h, which must be stored; it returns the hash the
// tag pointed at before, if any.
func (s *store) tag(name string, h bao.Hash) (prev *bao.Hash, err error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := os.Lstat(s.blobPath(h)); err != nil {
		return nil, errNotFound
	}
	tags, err := s.readTags()
	if err != nil {
		return nil, err
	}
	if old, ok := tags[name]; ok {
		if old == h {
			return &old, nil
		}
		prev = &old
	}
	tags[name] = h
	return prev, s.writeTags(tags)
}

// untag removes name and returns the hash it pointed at.
func (s *store) untag(name string) (bao.Hash, error) {
	unlock, err := s.lock()
	if err != nil {
		return bao.Hash{}, err
	}
	defer unlock()
	tags, err := s.readTags()
	if err != nil {
		return bao.Hash{}, err
	}
	h, ok := tags[name]
	if !ok {
		return bao.Hash{}, errNotFound
	}
	delete(tags, name)
	return h, s.writeTags(tags)
}

// errTagged refuses to delete a tagged blob.
type errTagged struct{ tags []string }

func (e *errTagged) Error() string { return "tagged " + strings.Join(e.tags, ", ") }

// remove deletes the stored blob h. A tagged blob is refused unless
// force, which removes its tags too (returned).
func (s *store) remove(h bao.Hash, force bool) (size int64, untagged []string, err error) {
	unlock, err := s.lock()
	if err != nil {
		return 0, nil, err
	}
	defer unlock()
	st, err := os.Stat(s.blobPath(h))
	if err != nil {
		return 0, nil, errNotFound
	}
	tags, err := s.readTags()
	if err != nil {
		return 0, nil, err
	}
	untagged = tagsOf(tags, h)
	if len(untagged) > 0 {
		if !force {
			return 0, nil, &errTagged{untagged}
		}
		for _, name := range untagged {
			delete(tags, name)
		}
		if err := s.writeTags(tags); err != nil {
			return 0, nil, err
		}
	}
	if err := s.removeFiles(h); err != nil {
		return 0, untagged, err
	}
	return st.Size(), untagged, nil
}

// removeFiles deletes h's content, then its outboard. Called with the lock
// held.
func (s *store) removeFiles(h bao.Hash) error {
	for _, p := range []string{s.blobPath(h), s.obaoPath(h)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("fs store: remove %s: %w", p, err)
		}
	}
	return nil
}

// gcResult is what gc did.
type gcResult struct {
	Removed    []bao.Hash
	Kept       int
	BytesFreed int64
}

// gc removes every stored blob that has no tag and no live lease, and
// outboards left without their content.
func (s *store) gc() (gcResult, error) {
	unlock, err := s.lock()
	if err != nil {
		return gcResult{}, err
	}
	defer unlock()
	tags, err := s.readTags()
	if err != nil {
		return gcResult{}, err
	}
	tagged := map[bao.Hash]bool{}
	for _, h := range tags {
		tagged[h] = true
	}
	// The files of a tagged collection are kept with it: a tree is put as
	// its files (untagged) and then the collection, which alone is tagged.
	for _, h := range tags {
		for _, member := range s.collectionMembers(h) {
			tagged[member] = true
		}
	}
	now := s.now()
	res := gcResult{Removed: []bao.Hash{}}
	top := filepath.Join(s.root, blobsDir)
	prefixes, err := os.ReadDir(top)
	if err != nil {
		return res, fmt.Errorf("fs store: read %s: %w", top, err)
	}
	for _, pd := range prefixes {
		if !pd.IsDir() || len(pd.Name()) != 2 {
			continue
		}
		dir := filepath.Join(top, pd.Name())
		entries, err := os.ReadDir(dir)
		if err != nil {
			return res, fmt.Errorf("fs store: read %s: %w", dir, err)
		}
		contents := map[string]bool{}
		for _, e := range entries {
			contents[e.Name()] = true
		}
		for _, e := range entries {
			name := e.Name()
			base, isOb := strings.CutSuffix(name, obaoSuffix)
			h, err := bao.ParseHash("blake3:" + base)
			if err != nil || !strings.HasPrefix(base, pd.Name()) {
				continue // not the store's
			}
			if isOb {
				if !contents[base] { // an outboard without content
					res.BytesFreed += fileSize(filepath.Join(dir, name))
					if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
						return res, fmt.Errorf("fs store: remove %s: %w", name, err)
					}
				}
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return res, fmt.Errorf("fs store: stat %s: %w", s.blobPath(h), err)
			}
			if tagged[h] || s.leasedAt(info.ModTime(), now) {
				res.Kept++
				continue
			}
			freed := info.Size() + fileSize(s.obaoPath(h))
			if err := s.removeFiles(h); err != nil {
				return res, err
			}
			res.BytesFreed += freed
			res.Removed = append(res.Removed, h)
		}
		_ = os.Remove(dir) // only if it is now empty
	}
	slices.SortFunc(res.Removed, func(a, b bao.Hash) int { return strings.Compare(hexName(a), hexName(b)) })
	return res, nil
}

// collectionMembers lists the blobs a stored collection h names (none
// when h is not a collection). Stored content was verified when it was
// put, so it is read as it is.
func (s *store) collectionMembers(h bao.Hash) []bao.Hash {
	p := s.blobPath(h)
	st, err := os.Stat(p)
	if err != nil || st.Size() > wire.MaxCollection || st.Size() < int64(len(collectionPrefix)) {
		return nil
	}
	b, err := os.ReadFile(p)
	if err != nil || !bytes.HasPrefix(b, []byte(collectionPrefix)) {
		return nil
	}
	c, err := wire.ParseCollection(b)
	if err != nil {
		return nil
	}
	out := make([]bao.Hash, 0, len(c.Entries))
	for _, e := range c.Entries {
		out = append(out, e.Hash)
	}
	return out
}

// collectionPrefix starts every collection blob (wire.Collection.Marshal).
const collectionPrefix = `{"alknet_collection":`

func fileSize(p string) int64 {
	st, err := os.Lstat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}
