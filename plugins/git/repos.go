package git

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// The repositories are bare repositories <root>/<name>.git, made and read
// with go-git; git's own programs serve the wire protocol (D12).

var (
	errRepoExists   = errors.New("repository exists")
	errRepoNotFound = errors.New("repository not found")
)

// repoDir is where repository name lives.
func repoDir(root, name string) string {
	return filepath.Join(root, filepath.FromSlash(name)+".git")
}

// isRepo reports whether dir holds a bare repository.
func isRepo(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, "HEAD"))
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	st, err = os.Stat(filepath.Join(dir, "objects"))
	return err == nil && st.IsDir()
}

// createRepo makes repository name, with the pre-receive hook script.
// Its HEAD names main until a push brings other branches (fixHead).
func createRepo(root, name string, hook []byte) error {
	dir := repoDir(root, name)
	if isRepo(dir) {
		return errRepoExists
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("create the directory of repository %s: %w", name, err)
	}
	_, err := gogit.PlainInitWithOptions(dir, &gogit.PlainInitOptions{Bare: true,
		InitOptions: gogit.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName("main")}})
	if errors.Is(err, gogit.ErrRepositoryAlreadyExists) {
		return errRepoExists
	}
	if err != nil {
		return fmt.Errorf("create repository %s in %s: %w", name, dir, err)
	}
	if err := installHook(dir, hook); err != nil {
		return err
	}
	return nil
}

// deleteRepo removes repository name and the directories above it that
// it leaves empty (up to root).
func deleteRepo(root, name string) error {
	dir := repoDir(root, name)
	if !isRepo(dir) {
		return errRepoNotFound
	}
	// Rename first: a fetch starting now finds nothing rather than half a
	// repository.
	trash := filepath.Join(filepath.Dir(dir), fmt.Sprintf(".%s.deleting-%d", filepath.Base(dir), os.Getpid()))
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("delete repository %s: %w", name, err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("delete repository %s: remove %s: %w", name, trash, err)
	}
	for d := filepath.Dir(dir); d != root && strings.HasPrefix(d, root+string(filepath.Separator)); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break // not empty
		}
	}
	return nil
}

// walkRepos calls fn for every repository under root, in name order, and
// does not descend into repositories.
func walkRepos(root string, fn func(name, dir string) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil // unreadable: skip
		}
		if !d.IsDir() || p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if strings.HasSuffix(rel, ".git") {
			if name, err := repoName(rel); err == nil && name+".git" == rel && isRepo(p) {
				if err := fn(name, p); err != nil {
					return err
				}
			}
			return filepath.SkipDir
		}
		if strings.HasPrefix(d.Name(), ".") || len(rel) > maxRepoName {
			return filepath.SkipDir
		}
		return nil
	})
}

// hookScript is the pre-receive hook of every repository: it runs the
// plugin's executable (exe) with the rules file and the repository's
// name, so the hook needs nothing from the node.
func hookScript(exe, rulesFile, name string) []byte {
	return fmt.Appendf(nil, "#!/bin/sh\n# Push rules of %s, checked by the Alknet git plugin ([[plugins.git.repos]]).\n# Rewritten by the plugin when it differs (at start, before each push): do not edit.\nexec %s %s %s %s\n",
		name, shellQuote(exe), hookCommand, shellQuote(rulesFile), shellQuote(name))
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// installHook writes hooks/pre-receive of the repository in dir unless it
// already has exactly that content.
func installHook(dir string, script []byte) error {
	hooks := filepath.Join(dir, "hooks")
	if err := os.MkdirAll(hooks, 0o700); err != nil {
		return fmt.Errorf("install the pre-receive hook in %s: %w", dir, err)
	}
	p := filepath.Join(hooks, "pre-receive")
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, script) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o100 != 0 {
			return nil
		}
	}
	if err := writeFileAtomic(p, script, 0o700); err != nil {
		return fmt.Errorf("install the pre-receive hook in %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic replaces path with data: a temporary file beside it,
// synced, then renamed over it.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	syncDir(filepath.Dir(path))
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// installSelf copies the running executable to dst (mode 0700) unless dst
// already holds the same bytes, for hooks to run. The node executes a
// plugin through a descriptor of the file it verified, from its plugin
// store, whose versions come and go (docs/architecture.md D6) and whose
// directories the plugin's user may not be able to reach; a copy in the
// plugin's own state directory stays where the hooks expect it.
func installSelf(dst string) error {
	src, err := openSelf()
	if err != nil {
		return err
	}
	defer src.Close()
	return copyIfChanged(src, dst)
}

// openSelf opens the running executable, even if its path has gone.
func openSelf() (*os.File, error) {
	if f, err := os.Open("/proc/self/exe"); err == nil {
		return f, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the plugin's own executable: %w", err)
	}
	return os.Open(exe)
}

// copyIfChanged writes src to dst (atomically, mode 0700) unless dst has
// the same content.
func copyIfChanged(src io.ReadSeeker, dst string) error {
	want, err := digest(src)
	if err != nil {
		return fmt.Errorf("read the plugin's executable: %w", err)
	}
	if f, err := os.Open(dst); err == nil {
		have, err := digest(f)
		_ = f.Close()
		if err == nil && bytes.Equal(have, want) {
			return os.Chmod(dst, 0o700)
		}
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("copy the plugin's executable to %s: %w", dst, err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return fmt.Errorf("copy the plugin's executable to %s: %w", dst, err)
	}
	tmp := f.Name()
	_, err = io.Copy(f, src)
	if err == nil {
		err = f.Chmod(0o700)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("copy the plugin's executable to %s: %w", dst, err)
	}
	syncDir(filepath.Dir(dst))
	return nil
}

func digest(r io.Reader) ([]byte, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// fixHead points HEAD of a repository whose HEAD names a branch that does
// not exist at a branch that does: main, else master, else the first by
// name. A first push of "master" to a new repository (whose HEAD names
// main) then clones with master checked out.
func fixHead(dir string) error {
	r, err := gogit.PlainOpen(dir)
	if err != nil {
		return err
	}
	head, err := r.Storer.Reference(plumbing.HEAD)
	if err != nil || head.Type() != plumbing.SymbolicReference {
		return err
	}
	if _, err := r.Storer.Reference(head.Target()); err == nil {
		return nil
	}
	iter, err := r.Branches()
	if err != nil {
		return err
	}
	var names []plumbing.ReferenceName
	_ = iter.ForEach(func(ref *plumbing.Reference) error {
		names = append(names, ref.Name())
		return nil
	})
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	pick := names[0]
	for _, want := range []plumbing.ReferenceName{plumbing.NewBranchReferenceName("main"), plumbing.Master} {
		if slices.Contains(names, want) {
			pick = want
			break
		}
	}
	return r.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, pick))
}

// RepoInfo describes a repository (git/list, git/create).
type RepoInfo struct {
	Name   string `json:"name"`
	Public bool   `json:"public"`
	// Head is the branch HEAD names ("main"); HeadHash its commit, empty
	// while the branch does not exist.
	Head     string `json:"head,omitempty"`
	HeadHash string `json:"head_hash,omitempty"`
	// Size is the bytes the repository takes on disk.
	Size int64 `json:"size"`
}

// repoInfo reads what git/list reports of the repository in dir.
func repoInfo(cfg *config, name, dir string) RepoInfo {
	info := RepoInfo{Name: name, Public: cfg.public(name), Size: dirSize(dir)}
	r, err := gogit.PlainOpen(dir)
	if err != nil {
		return info
	}
	if head, err := r.Storer.Reference(plumbing.HEAD); err == nil {
		if head.Type() == plumbing.SymbolicReference {
			info.Head = head.Target().Short()
			if ref, err := r.Storer.Reference(head.Target()); err == nil {
				info.HeadHash = ref.Hash().String()
			}
		} else {
			info.HeadHash = head.Hash().String()
		}
	}
	return info
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Ref is one reference of a repository (git/refs).
type Ref struct {
	Name string `json:"name"`
	Hash string `json:"hash,omitempty"`
	// Target is what a symbolic reference (HEAD) names.
	Target string `json:"target,omitempty"`
}

// maxRefs bounds what git/refs returns.
const maxRefs = 10000

// listRefs reads HEAD and the references of the repository in dir, HEAD
// first and the others by name.
func listRefs(dir string) ([]Ref, error) {
	r, err := gogit.PlainOpen(dir)
	if err != nil {
		return nil, err
	}
	var out []Ref
	if head, err := r.Storer.Reference(plumbing.HEAD); err == nil {
		ref := Ref{Name: "HEAD"}
		if head.Type() == plumbing.SymbolicReference {
			ref.Target = head.Target().String()
			if t, err := r.Storer.Reference(head.Target()); err == nil {
				ref.Hash = t.Hash().String()
			}
		} else {
			ref.Hash = head.Hash().String()
		}
		out = append(out, ref)
	}
	iter, err := r.Storer.IterReferences()
	if err != nil {
		return nil, err
	}
	var refs []Ref
	err = iter.ForEach(func(ref *plumbing.Reference) error {
		if ref.Name() == plumbing.HEAD {
			return nil
		}
		if len(refs) >= maxRefs {
			return storer.ErrStop
		}
		if ref.Type() == plumbing.SymbolicReference {
			refs = append(refs, Ref{Name: ref.Name().String(), Target: ref.Target().String()})
		} else {
			refs = append(refs, Ref{Name: ref.Name().String(), Hash: ref.Hash().String()})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(refs, func(a, b Ref) int { return strings.Compare(a.Name, b.Name) })
	return append(out, refs...), nil
}
