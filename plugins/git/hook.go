package git

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-git/go-billy/v5/helper/mount"
	"github.com/go-git/go-billy/v5/helper/polyfill"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// hookCommand is the first argument with which git's pre-receive hook
// runs the plugin's executable (see Main).
const hookCommand = "pre-receive"

// rulesFormat is the version of the rules file's format.
const rulesFormat = 1

// rulesFile is what the plugin writes at every Configure for its hooks:
// the push rules of every repository that has some.
type rulesFile struct {
	Format int                      `json:"format"`
	Repos  map[string]*RepoSettings `json:"repos"`
}

// maxRulesFile bounds the rules file the hook reads.
const maxRulesFile = 16 << 20

// writeRules writes the rules file for cfg at path, atomically.
func writeRules(path string, cfg *config) error {
	f := rulesFile{Format: rulesFormat, Repos: map[string]*RepoSettings{}}
	for name, r := range cfg.repos {
		if r.FastForwardOnly || r.DenyDelete || r.DenyTagOverwrite || len(r.Protected) > 0 {
			f.Repos[name] = r
		}
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write the push rules file %s: %w", path, err)
	}
	return nil
}

// readRules reads the rules of repository name from the rules file.
func readRules(path, name string) (*RepoSettings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRulesFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxRulesFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxRulesFile)
	}
	var rf rulesFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rf.Format != rulesFormat {
		return nil, fmt.Errorf("%s has format %d, this program reads format %d", path, rf.Format, rulesFormat)
	}
	return rf.Repos[name], nil
}

// runHook is the pre-receive hook: args are the rules file and the
// repository's name; stdin has one "<old> <new> <ref>" line per update.
// It writes each refusal on stderr (git shows it to the pusher as
// "remote: …") and returns 1 to refuse the push, 0 to accept it.
func runHook(args []string, stdin io.Reader, stderr io.Writer) int {
	if len(args) != 2 {
		fmt.Fprintf(stderr, "alknet: usage: alknet-plugin-git %s <rules file> <repository>; git runs this from the repository's hook\n", hookCommand)
		return 1
	}
	rulesPath, name := args[0], args[1]
	rules, err := readRules(rulesPath, name)
	if err != nil {
		// Fail closed: a push must not skip rules it cannot read.
		fmt.Fprintf(stderr, "alknet: push refused: cannot read the push rules (%v); the node's operator should restart the git plugin, which rewrites them\n", err)
		return 1
	}
	var updates []refUpdate
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 4096), 4096)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		u, err := parseUpdate(sc.Text())
		if err != nil {
			fmt.Fprintf(stderr, "alknet: push refused: %v\n", err)
			return 1
		}
		updates = append(updates, u)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "alknet: push refused: reading the ref updates: %v\n", err)
		return 1
	}
	if rules == nil {
		return 0
	}
	var objects storer.EncodedObjectStorer
	needObjects := rules.FastForwardOnly || len(rules.Protected) > 0
	if needObjects {
		dir := os.Getenv("GIT_DIR")
		if dir == "" {
			dir = "."
		}
		objects, err = hookObjects(dir, os.Getenv("GIT_QUARANTINE_PATH"))
		if err != nil {
			fmt.Fprintf(stderr, "alknet: push refused: cannot open the repository to check fast-forwards: %v\n", err)
			return 1
		}
	}
	refused := false
	for _, u := range updates {
		if msg := check(rules, objects, u); msg != "" {
			fmt.Fprintf(stderr, "alknet: %s refused: %s\n", u.ref, msg)
			refused = true
		}
	}
	if refused {
		fmt.Fprintf(stderr, "alknet: push rules of %s: see [[plugins.git.repos]] in the node's configuration\n", name)
		return 1
	}
	return 0
}

// refUpdate is one line of the hook's input.
type refUpdate struct {
	old, new plumbing.Hash
	ref      string
}

func parseUpdate(line string) (refUpdate, error) {
	f := strings.Fields(line)
	if len(f) != 3 || !isHash(f[0]) || !isHash(f[1]) {
		return refUpdate{}, fmt.Errorf("bad ref update line %q", clip(line))
	}
	return refUpdate{old: plumbing.NewHash(f[0]), new: plumbing.NewHash(f[1]), ref: f[2]}, nil
}

func isHash(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(s[i] >= '0' && s[i] <= '9' || s[i] >= 'a' && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// check applies rules to one update and returns why it is refused ("":
// accepted).
func check(rules *RepoSettings, objects storer.EncodedObjectStorer, u refUpdate) string {
	branch, isBranch := strings.CutPrefix(u.ref, "refs/heads/")
	_, isTag := strings.CutPrefix(u.ref, "refs/tags/")
	protected := ""
	if isBranch {
		for _, pat := range rules.Protected {
			if m, _ := path.Match(pat, branch); m {
				protected = pat
				break
			}
		}
	}
	switch {
	case u.new.IsZero() && u.old.IsZero():
		return ""
	case u.new.IsZero():
		if protected != "" {
			return fmt.Sprintf("the branch is protected (protected = %q): it cannot be deleted", protected)
		}
		if rules.DenyDelete {
			return "deleting branches and tags is not allowed here (deny_delete)"
		}
		return ""
	case u.old.IsZero():
		return "" // a new ref
	case isTag && rules.DenyTagOverwrite:
		return "tags cannot be moved here (deny_tag_overwrite); push a new tag instead"
	case isBranch && (protected != "" || rules.FastForwardOnly):
		ff, err := fastForward(objects, u.old, u.new)
		if err != nil {
			return fmt.Sprintf("cannot check that the update is a fast-forward: %v", err)
		}
		if ff {
			return ""
		}
		if protected != "" {
			return fmt.Sprintf("the branch is protected (protected = %q): no force push; %s is not an ancestor of %s (fetch, merge or rebase, then push)", protected, short(u.old), short(u.new))
		}
		return fmt.Sprintf("only fast-forward updates are allowed here (fast_forward_only); %s is not an ancestor of %s (fetch, merge or rebase, then push)", short(u.old), short(u.new))
	}
	return ""
}

func short(h plumbing.Hash) string { return h.String()[:12] }

// fastForward reports whether commit old is an ancestor of commit new.
func fastForward(objects storer.EncodedObjectStorer, old, new plumbing.Hash) (bool, error) {
	if old == new {
		return true, nil
	}
	oc, err := object.GetCommit(objects, old)
	if err != nil {
		return false, fmt.Errorf("read commit %s: %w", short(old), err)
	}
	nc, err := object.GetCommit(objects, new)
	if err != nil {
		return false, fmt.Errorf("read commit %s: %w", short(new), err)
	}
	return oc.IsAncestor(nc)
}

// hookObjects is the object database a pre-receive hook sees: the
// repository's, plus the quarantine directory where git keeps the pushed
// objects until the hook accepts them (GIT_QUARANTINE_PATH).
func hookObjects(gitDir, quarantine string) (storer.EncodedObjectStorer, error) {
	abs, err := filepath.Abs(gitDir)
	if err != nil {
		return nil, err
	}
	main := filesystem.NewStorage(osfs.New(abs), cache.NewObjectLRUDefault())
	if quarantine == "" {
		return main, nil
	}
	// go-git reads objects from <dir>/objects: mount the quarantine there.
	qfs := polyfill.New(mount.New(memfs.New(), "objects", osfs.New(quarantine)))
	q := filesystem.NewStorage(qfs, cache.NewObjectLRUDefault())
	return &unionObjects{EncodedObjectStorer: main, first: q}, nil
}

// unionObjects reads objects from first, then from the embedded storer.
type unionObjects struct {
	storer.EncodedObjectStorer
	first storer.EncodedObjectStorer
}

func (u *unionObjects) EncodedObject(t plumbing.ObjectType, h plumbing.Hash) (plumbing.EncodedObject, error) {
	o, err := u.first.EncodedObject(t, h)
	if err == nil || !errors.Is(err, plumbing.ErrObjectNotFound) {
		return o, err
	}
	return u.EncodedObjectStorer.EncodedObject(t, h)
}

func (u *unionObjects) HasEncodedObject(h plumbing.Hash) error {
	if u.first.HasEncodedObject(h) == nil {
		return nil
	}
	return u.EncodedObjectStorer.HasEncodedObject(h)
}

func (u *unionObjects) EncodedObjectSize(h plumbing.Hash) (int64, error) {
	if n, err := u.first.EncodedObjectSize(h); err == nil {
		return n, nil
	}
	return u.EncodedObjectStorer.EncodedObjectSize(h)
}
