package fsclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"alknet.dev/alknet/plugins/fs/bao"
)

// Span is the groups [First, End) of a blob (bao.GroupSize bytes each,
// the last one possibly shorter).
type Span struct {
	First int64 `json:"first"`
	End   int64 `json:"end"`
}

// groupSet is a set of groups kept as sorted, disjoint, non-adjacent
// spans.
type groupSet struct{ spans []Span }

// add adds the groups [first, end).
func (g *groupSet) add(first, end int64) {
	if first >= end {
		return
	}
	// The first span that ends at or after first: it may merge.
	i := sort.Search(len(g.spans), func(i int) bool { return g.spans[i].End >= first })
	j := i
	for j < len(g.spans) && g.spans[j].First <= end {
		first = min(first, g.spans[j].First)
		end = max(end, g.spans[j].End)
		j++
	}
	g.spans = append(g.spans[:i], append([]Span{{first, end}}, g.spans[j:]...)...)
}

// has reports whether group i is in the set.
func (g *groupSet) has(i int64) bool {
	k := sort.Search(len(g.spans), func(k int) bool { return g.spans[k].End > i })
	return k < len(g.spans) && g.spans[k].First <= i
}

// missing returns the spans of [0, n) not in the set.
func (g *groupSet) missing(n int64) []Span {
	var out []Span
	at := int64(0)
	for _, s := range g.spans {
		if s.First >= n {
			break
		}
		if s.First > at {
			out = append(out, Span{at, s.First})
		}
		at = max(at, s.End)
	}
	if at < n {
		out = append(out, Span{at, n})
	}
	return out
}

// bytes returns how many content bytes the groups of the set hold in a
// blob of the given size.
func (g *groupSet) bytes(size int64) int64 {
	var n int64
	for _, s := range g.spans {
		n += min(s.End*bao.GroupSize, size) - min(s.First*bao.GroupSize, size)
	}
	return n
}

func (g *groupSet) clone() []Span { return append([]Span(nil), g.spans...) }

// progressFormat names the version of the progress file.
const progressFormat = "alknet-fsprogress-1"

// ProgressSuffix is appended to a file's name to name its progress file.
const ProgressSuffix = ".fsprogress"

// Progress is the content of a progress file: which groups of a download
// have been verified and made durable (fsync'ed) in the output file.
type Progress struct {
	Format    string   `json:"format"`
	Hash      bao.Hash `json:"hash"`
	Size      int64    `json:"size"`
	GroupSize int64    `json:"group_size"`
	Path      string   `json:"path,omitempty"` // entry path, in a tree's progress directory
	Verified  []Span   `json:"verified"`
}

// VerifiedBytes returns how many content bytes the verified groups hold.
func (p *Progress) VerifiedBytes() int64 {
	g := groupSet{spans: p.Verified}
	return g.bytes(p.Size)
}

// ReadProgress reads and checks a progress file.
func ReadProgress(b []byte) (*Progress, error) {
	var p Progress
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("not a progress file: %w", err)
	}
	if p.Format != progressFormat {
		return nil, fmt.Errorf("progress format %q: this client reads %q", p.Format, progressFormat)
	}
	if p.GroupSize != bao.GroupSize {
		return nil, fmt.Errorf("progress file counts groups of %d bytes, want %d", p.GroupSize, bao.GroupSize)
	}
	if p.Size < 0 {
		return nil, fmt.Errorf("progress file has negative size %d", p.Size)
	}
	n := bao.NumGroups(p.Size)
	var prev int64
	for i, s := range p.Verified {
		if s.First < prev || s.First >= s.End || s.End > n || (i > 0 && s.First == prev) {
			return nil, fmt.Errorf("progress file: verified span %d [%d, %d) is not sorted, disjoint and within the %d groups", i, s.First, s.End, n)
		}
		prev = s.End
	}
	return &p, nil
}

// progressFile is where one download's progress is kept: name in root.
type progressFile struct {
	root *os.Root
	name string
	path string // entry path, recorded for a tree's files
	// keepDone keeps the file, recording every group, once the download
	// completes (a tree's files: a rerun skips those complete).
	keepDone bool
}

// load reads the progress file; nil if there is none.
func (p *progressFile) load() (*Progress, error) {
	b, err := p.root.ReadFile(p.name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the progress file %s: %w", p.where(), err)
	}
	pr, err := ReadProgress(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w; remove it (and the partial output) to start over", p.where(), err)
	}
	return pr, nil
}

// save replaces the progress file atomically: a temporary file, fsync'ed,
// renamed over it.
func (p *progressFile) save(h bao.Hash, size int64, verified []Span) error {
	b, err := json.Marshal(&Progress{Format: progressFormat, Hash: h, Size: size, GroupSize: bao.GroupSize,
		Path: p.path, Verified: append([]Span{}, verified...)})
	if err != nil {
		return err
	}
	tmp := p.name + ".tmp"
	f, err := p.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("record the progress in %s: %w", p.where(), err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.root.Rename(tmp, p.name)
	}
	if err != nil {
		_ = p.root.Remove(tmp)
		return fmt.Errorf("record the progress in %s: %w", p.where(), err)
	}
	return nil
}

func (p *progressFile) remove() error {
	if err := p.root.Remove(p.name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the progress file %s: %w", p.where(), err)
	}
	return nil
}

func (p *progressFile) where() string {
	return p.root.Name() + string(os.PathSeparator) + p.name
}
