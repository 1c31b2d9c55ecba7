package sftp

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"
)

// Errors with the SFTP status a client shows for them. pkg/sftp sends the
// wrapped message as the status message and the wrapped code as the code.
var (
	errReadOnly = coded(sftp.ErrSSHFxPermissionDenied, "permission denied: this identity has no %s scope", ScopeWrite)
	errNoRead   = coded(sftp.ErrSSHFxPermissionDenied, "permission denied: this identity has no %s scope", ScopeRead)
	errEscapes  = coded(sftp.ErrSSHFxPermissionDenied, "permission denied: the path leaves this identity's root")
	errCrossFS  = coded(sftp.ErrSSHFxFailure, "cannot rename or link between two roots")
	errChown    = coded(sftp.ErrSSHFxPermissionDenied, "permission denied: a file's owner and group cannot be changed")
)

// mount is one root a session sees: the identity's own (at /) or a shared
// root granted by name (at /<name>).
type mount struct {
	name  string // "" for the identity's own root
	dir   string // the host directory (for logs and statvfs)
	root  *os.Root
	usage *usage // nil: no quota accounting (shared roots)
}

// namespace is what one SFTP session sees. Every path a client sends is
// resolved here, into a mount and a path relative to its os.Root: os.Root
// refuses to leave the directory it was opened on (through "..", absolute
// symlinks or symlinks pointing outside), so a client never reaches a host
// path outside its roots.
type namespace struct {
	home   *mount
	shared map[string]*mount
	read   bool // sftp:read
	write  bool // sftp:write

	// Counters for the session's log line.
	bytesRead, bytesWritten atomic.Int64
	filesRead, filesWritten atomic.Int64

	// overQuota is called once, for the session's first refusal for the
	// quota (the node's log says so; the client sees the status).
	overQuota func(error)
	quotaHit  atomic.Bool
}

// seen passes err through, noting the session's first quota refusal.
func (n *namespace) seen(err error) error {
	var q *quotaErr
	if errors.As(err, &q) && n.quotaHit.CompareAndSwap(false, true) && n.overQuota != nil {
		n.overQuota(err)
	}
	return err
}

func (n *namespace) close() {
	_ = n.home.root.Close()
	for _, m := range n.shared {
		if m.root != nil {
			_ = m.root.Close()
		}
	}
}

// resolve maps a client path (pkg/sftp has cleaned it to an absolute path)
// to a mount and a path relative to its root ("." for the root itself).
func (n *namespace) resolve(p string) (*mount, string) {
	p = path.Clean("/" + p)
	rest := strings.TrimPrefix(p, "/")
	first, tail, _ := strings.Cut(rest, "/")
	if m, ok := n.shared[first]; ok && first != "" {
		if tail == "" {
			return m, "."
		}
		return m, tail
	}
	if rest == "" {
		return n.home, "."
	}
	return n.home, rest
}

// fsErr gives an os.Root error the status a client should see.
func fsErr(err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "path escapes from parent") {
		return errEscapes
	}
	return err
}

// handlers implements pkg/sftp's request-server interfaces on a namespace.
type handlers struct{ n *namespace }

func (h handlers) sftpHandlers() sftp.Handlers {
	return sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h}
}

var (
	_ sftp.FileReader           = handlers{}
	_ sftp.OpenFileWriter       = handlers{}
	_ sftp.PosixRenameFileCmder = handlers{}
	_ sftp.StatVFSFileCmder     = handlers{}
	_ sftp.LstatFileLister      = handlers{}
	_ sftp.RealPathFileLister   = handlers{}
	_ sftp.ReadlinkFileLister   = handlers{}
)

// Fileread opens a file for reading.
func (h handlers) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	if !h.n.read {
		return nil, errNoRead
	}
	m, rel := h.n.resolve(r.Filepath)
	f, err := m.root.Open(rel)
	if err != nil {
		return nil, fsErr(err)
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		_ = f.Close()
		return nil, coded(sftp.ErrSSHFxFailure, "%s is a directory", r.Filepath)
	}
	h.n.filesRead.Add(1)
	return &file{f: f, n: h.n}, nil
}

// Filewrite opens a file for writing (SFTP open without the read flag).
func (h handlers) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	f, err := h.openWrite(r, false)
	if err != nil {
		return nil, h.n.seen(err)
	}
	return f, nil
}

// OpenFile opens a file for reading and writing (sshfs opens O_RDWR).
func (h handlers) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) {
	if !h.n.read {
		return nil, errNoRead
	}
	f, err := h.openWrite(r, true)
	if err != nil {
		return nil, h.n.seen(err)
	}
	return f, nil
}

func (h handlers) openWrite(r *sftp.Request, read bool) (*file, error) {
	if !h.n.write {
		return nil, errReadOnly
	}
	m, rel := h.n.resolve(r.Filepath)
	pf := r.Pflags()
	flags := os.O_WRONLY
	if read {
		flags = os.O_RDWR
	}
	if pf.Creat {
		flags |= os.O_CREATE
	}
	if pf.Excl {
		flags |= os.O_EXCL
	}
	perm := os.FileMode(0o644)
	// For an open, pkg/sftp leaves the attributes undecoded, their flags
	// included (Request.Flags holds the open flags).
	d := &decoder{b: r.Attrs}
	if af := d.u32(); af&attrPermissions != 0 {
		if a, ok := parseAttrs(d, af); ok {
			perm = os.FileMode(a.Mode) & 0o777
		}
	}
	old, statErr := m.root.Lstat(rel)
	existed := statErr == nil
	if existed && !old.Mode().IsRegular() && old.Mode()&fs.ModeSymlink == 0 {
		return nil, coded(sftp.ErrSSHFxFailure, "%s is not a regular file", r.Filepath)
	}
	if !existed && m.usage != nil {
		if err := m.usage.addFiles(1); err != nil {
			return nil, err
		}
	}
	f, err := m.root.OpenFile(rel, flags, perm)
	if err != nil {
		if !existed && m.usage != nil {
			m.usage.addFiles(-1)
		}
		return nil, fsErr(err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		_ = f.Close()
		return nil, coded(sftp.ErrSSHFxFailure, "%s is not a regular file", r.Filepath)
	}
	size := st.Size()
	if pf.Trunc && size > 0 {
		if err := f.Truncate(0); err != nil {
			_ = f.Close()
			return nil, err
		}
		if m.usage != nil {
			m.usage.addBytes(-size)
		}
		size = 0
	}
	h.n.filesWritten.Add(1)
	return &file{f: f, n: h.n, usage: m.usage, size: size, openSize: size, append: pf.Append}, nil
}

// file is an open handle: reads and writes are counted, and writes that
// grow the file are charged to the identity's quota before they happen.
type file struct {
	f      *os.File
	n      *namespace
	usage  *usage
	append bool

	mu       sync.Mutex
	size     int64 // the size this handle knows of (for quota accounting)
	openSize int64 // the size at open
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.f.ReadAt(p, off)
	f.n.bytesRead.Add(int64(n))
	return n, err
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.writeAt(p, off)
	return n, f.n.seen(err)
}

func (f *file) writeAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.append && off < f.openSize {
		// SSH_FXF_APPEND: writes land at the end. OpenSSH's reput sends
		// the file offsets of an append (from the size at open on), and
		// pkg/sftp may run a handle's writes out of order, so an offset
		// past the size at open is taken as given; only a client that
		// sends offsets before it means "at the end".
		off = f.size
	}
	end := off + int64(len(p))
	grow := end - f.size
	if grow > 0 && f.usage != nil {
		if err := f.usage.addBytes(grow); err != nil {
			return 0, err
		}
	}
	n, err := f.f.WriteAt(p, off)
	if got := off + int64(n); got > f.size {
		if f.usage != nil && got < end {
			f.usage.addBytes(got - end) // give back what was not written
		}
		f.size = got
	} else if grow > 0 && f.usage != nil {
		f.usage.addBytes(-grow)
	}
	f.n.bytesWritten.Add(int64(n))
	return n, err
}

func (f *file) Close() error { return f.f.Close() }

// Filecmd runs the commands that change the tree.
func (h handlers) Filecmd(r *sftp.Request) error {
	return h.n.seen(h.filecmd(r))
}

func (h handlers) filecmd(r *sftp.Request) error {
	if !h.n.write {
		return errReadOnly
	}
	switch r.Method {
	case "Setstat":
		return h.setstat(r.Filepath, r.AttrFlags(), attrsOf(r), false)
	case "Rename":
		return h.rename(r.Filepath, r.Target, false)
	case "Rmdir":
		m, rel := h.n.resolve(r.Filepath)
		if rel == "." {
			return coded(sftp.ErrSSHFxPermissionDenied, "cannot remove a root")
		}
		st, err := m.root.Lstat(rel)
		if err != nil {
			return fsErr(err)
		}
		if !st.IsDir() {
			return coded(sftp.ErrSSHFxFailure, "%s is not a directory", r.Filepath)
		}
		return fsErr(m.root.Remove(rel))
	case "Mkdir":
		m, rel := h.n.resolve(r.Filepath)
		perm := os.FileMode(0o755)
		if r.AttrFlags().Permissions {
			perm = os.FileMode(attrsOf(r).Mode) & 0o777
		}
		return fsErr(m.root.Mkdir(rel, perm))
	case "Link":
		return h.link(r.Filepath, r.Target)
	case "Symlink":
		return h.symlink(r.Filepath, r.Target)
	case "Remove":
		m, rel := h.n.resolve(r.Filepath)
		st, err := m.root.Lstat(rel)
		if err != nil {
			return fsErr(err)
		}
		if st.IsDir() {
			return coded(sftp.ErrSSHFxFailure, "%s is a directory (use rmdir)", r.Filepath)
		}
		if err := m.root.Remove(rel); err != nil {
			return fsErr(err)
		}
		m.usage.removed(st)
		return nil
	}
	return coded(sftp.ErrSSHFxOpUnsupported, "%s is not supported", r.Method)
}

// PosixRename is posix-rename@openssh.com: rename, replacing the target.
func (h handlers) PosixRename(r *sftp.Request) error {
	if !h.n.write {
		return errReadOnly
	}
	return h.rename(r.Filepath, r.Target, true)
}

func (h handlers) rename(from, to string, replace bool) error {
	m, relFrom := h.n.resolve(from)
	m2, relTo := h.n.resolve(to)
	if m != m2 {
		return errCrossFS
	}
	if relFrom == "." || relTo == "." {
		return coded(sftp.ErrSSHFxPermissionDenied, "cannot rename a root")
	}
	old, err := m.root.Lstat(relTo)
	if err == nil && !replace {
		// SFTP v3 rename never replaces (OpenSSH's sftp-server behaves
		// the same); posix-rename does.
		return coded(sftp.ErrSSHFxFailure, "%s already exists", to)
	}
	if err := m.root.Rename(relFrom, relTo); err != nil {
		return fsErr(err)
	}
	if old != nil && old.Mode().IsRegular() {
		m.usage.removed(old)
	}
	return nil
}

func (h handlers) link(oldpath, newpath string) error {
	m, relOld := h.n.resolve(oldpath)
	m2, relNew := h.n.resolve(newpath)
	if m != m2 {
		return errCrossFS
	}
	st, err := m.root.Lstat(relOld)
	if err != nil {
		return fsErr(err)
	}
	if !st.Mode().IsRegular() {
		return coded(sftp.ErrSSHFxFailure, "%s is not a regular file", oldpath)
	}
	if err := m.usage.addFiles(1); err != nil {
		return err
	}
	if err := m.root.Link(relOld, relNew); err != nil {
		m.usage.addFiles(-1)
		return fsErr(err)
	}
	return nil
}

// symlink creates linkpath pointing at target. An absolute target is a
// path of the client's view, so it is stored relative to the link (the
// host path it would name on disk is not the client's); a target in
// another root, or one climbing above the root, is refused: following it
// would fail anyway, and refusing it keeps the tree self-contained.
func (h handlers) symlink(target, linkpath string) error {
	m, rel := h.n.resolve(linkpath)
	if path.IsAbs(target) {
		tm, trel := h.n.resolve(target)
		if tm != m {
			return coded(sftp.ErrSSHFxPermissionDenied, "symlink target %q is in another root", target)
		}
		r, err := filepath.Rel(path.Dir("/"+rel), "/"+trel)
		if err != nil {
			return coded(sftp.ErrSSHFxFailure, "symlink target %q: %v", target, err)
		}
		target = filepath.ToSlash(r)
	}
	if escapes(path.Dir(rel), target) {
		return coded(sftp.ErrSSHFxPermissionDenied, "symlink target %q leaves the root", target)
	}
	return fsErr(m.root.Symlink(target, rel))
}

// escapes reports whether target, read relative to directory dir of a
// root, climbs above the root.
func escapes(dir, target string) bool {
	depth := 0
	for _, part := range strings.Split(path.Clean(dir), "/") {
		if part != "" && part != "." {
			depth++
		}
	}
	for _, part := range strings.Split(target, "/") {
		switch part {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// setstat applies attributes; nofollow is lsetstat@openssh.com.
func (h handlers) setstat(p string, flags sftp.FileAttrFlags, attrs *sftp.FileStat, nofollow bool) error {
	if !h.n.write {
		return errReadOnly
	}
	m, rel := h.n.resolve(p)
	st, err := m.root.Lstat(rel)
	if err != nil {
		return fsErr(err)
	}
	// Owners never change; setting the ones a file has (cp -a, rsync -o
	// as the node's user) is a no-op, as with a server run by that user.
	if flags.UidGid {
		if sys, ok := st.Sys().(*syscall.Stat_t); !ok || sys.Uid != attrs.UID || sys.Gid != attrs.GID {
			return errChown
		}
	}
	if nofollow && st.Mode()&fs.ModeSymlink != 0 {
		// Linux cannot change a symlink's mode; only times would apply,
		// and os.Root has no lchtimes: nothing to do, as OpenSSH's
		// sftp-server does for the mode.
		return nil
	}
	if flags.Size {
		f, err := m.root.OpenFile(rel, os.O_WRONLY, 0)
		if err != nil {
			return fsErr(err)
		}
		defer f.Close()
		cur, err := f.Stat()
		if err != nil {
			return err
		}
		if !cur.Mode().IsRegular() {
			return coded(sftp.ErrSSHFxFailure, "%s is not a regular file", p)
		}
		delta := int64(attrs.Size) - cur.Size()
		if delta > 0 {
			if err := m.usage.addBytes(delta); err != nil {
				return err
			}
		}
		if err := f.Truncate(int64(attrs.Size)); err != nil {
			if delta > 0 {
				m.usage.addBytes(-delta)
			}
			return err
		}
		if delta < 0 {
			m.usage.addBytes(delta)
		}
	}
	if flags.Permissions {
		if err := m.root.Chmod(rel, os.FileMode(attrs.Mode)&0o7777&^(os.ModeSetuid|os.ModeSetgid)); err != nil {
			return fsErr(err)
		}
	}
	if flags.Acmodtime {
		if err := m.root.Chtimes(rel, time.Unix(int64(attrs.Atime), 0), time.Unix(int64(attrs.Mtime), 0)); err != nil {
			return fsErr(err)
		}
	}
	return nil
}

// StatVFS is statvfs@openssh.com: the filesystem of the root the path is
// in, never the host's (df -h).
func (h handlers) StatVFS(r *sftp.Request) (*sftp.StatVFS, error) {
	m, _ := h.n.resolve(r.Filepath)
	return m.statvfs()
}

func (m *mount) statvfs() (*sftp.StatVFS, error) {
	d, err := m.root.Open(".")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(int(d.Fd()), &st); err != nil {
		return nil, err
	}
	v := &sftp.StatVFS{
		Bsize: uint64(st.Bsize), Frsize: uint64(st.Frsize), Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail,
		Files: st.Files, Ffree: st.Ffree, Favail: st.Ffree, Fsid: uint64(st.Fsid.X__val[0])<<32 | uint64(uint32(st.Fsid.X__val[1])),
		Flag: uint64(st.Flags), Namemax: uint64(st.Namelen),
	}
	if v.Frsize == 0 {
		v.Frsize = v.Bsize
	}
	// With a byte quota the identity sees its quota as the filesystem:
	// what `df -h` shows is what it may still write.
	if m.usage != nil {
		if limit, used := m.usage.bytesLimit, m.usage.bytesUsed(); limit > 0 && v.Frsize > 0 {
			blocks := uint64(limit) / v.Frsize
			free := uint64(0)
			if used < limit {
				free = uint64(limit-used) / v.Frsize
			}
			v.Blocks, v.Bfree, v.Bavail = blocks, min(free, v.Bfree), min(free, v.Bavail)
		}
	}
	return v, nil
}

// Filelist answers List (a directory), Stat and Readlink.
func (h handlers) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	m, rel := h.n.resolve(r.Filepath)
	switch r.Method {
	case "List":
		d, err := m.root.Open(rel)
		if err != nil {
			return nil, fsErr(err)
		}
		defer d.Close()
		entries, err := d.Readdir(-1)
		if err != nil {
			return nil, fsErr(err)
		}
		if m == h.n.home && rel == "." {
			entries = h.withShared(entries)
		}
		return listerAt(entries), nil
	case "Stat":
		st, err := m.root.Stat(rel)
		if err != nil {
			return nil, fsErr(err)
		}
		return listerAt{named(st, path.Base(r.Filepath))}, nil
	case "Readlink":
		target, err := m.root.Readlink(rel)
		if err != nil {
			return nil, fsErr(err)
		}
		return listerAt{nameOnly(target)}, nil
	}
	return nil, coded(sftp.ErrSSHFxOpUnsupported, "%s is not supported", r.Method)
}

// withShared lists the granted shared roots in /, in place of any entry of
// the identity's own root with the same name (which they shadow).
func (h handlers) withShared(entries []os.FileInfo) []os.FileInfo {
	if len(h.n.shared) == 0 {
		return entries
	}
	entries = slices.DeleteFunc(entries, func(e os.FileInfo) bool { _, ok := h.n.shared[e.Name()]; return ok })
	for name, m := range h.n.shared {
		if st, err := m.root.Stat("."); err == nil {
			entries = append(entries, named(st, name))
		}
	}
	return entries
}

// Lstat answers lstat without following a final symlink.
func (h handlers) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	m, rel := h.n.resolve(r.Filepath)
	st, err := m.root.Lstat(rel)
	if err != nil {
		return nil, fsErr(err)
	}
	return listerAt{named(st, path.Base(r.Filepath))}, nil
}

// RealPath resolves a client path to the absolute path the client sees.
func (h handlers) RealPath(p string) (string, error) {
	return path.Clean("/" + p), nil
}

// Readlink returns a symlink's target.
func (h handlers) Readlink(p string) (string, error) {
	m, rel := h.n.resolve(p)
	target, err := m.root.Readlink(rel)
	return target, fsErr(err)
}

type listerAt []os.FileInfo

func (l listerAt) ListAt(out []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if n < len(out) {
		return n, io.EOF
	}
	return n, nil
}

// namedInfo is a FileInfo under another name (a shared root listed in /).
type namedInfo struct {
	os.FileInfo
	name string
}

func (n namedInfo) Name() string { return n.name }

func named(st os.FileInfo, name string) os.FileInfo {
	if name == "/" || name == "." || name == "" {
		name = st.Name()
	}
	return namedInfo{st, name}
}

// nameOnly is a readlink answer: a name without attributes.
type nameOnly string

func (n nameOnly) Name() string       { return string(n) }
func (n nameOnly) Size() int64        { return 0 }
func (n nameOnly) Mode() os.FileMode  { return 0 }
func (n nameOnly) ModTime() time.Time { return time.Time{} }
func (n nameOnly) IsDir() bool        { return false }
func (n nameOnly) Sys() any           { return nil }

// fsync is fsync@openssh.com on the file an open handle names: an fsync
// of any descriptor of a file flushes the file.
func (h handlers) fsync(p string) error {
	m, rel := h.n.resolve(p)
	f, err := m.root.Open(rel)
	if err != nil {
		return fsErr(err)
	}
	defer f.Close()
	return f.Sync()
}

// copyData is copy-data: length bytes (0: to the end) of src from srcOff,
// written into dst at dstOff, on the node without passing through the
// client; growth is charged to the quota as any write is.
func (h handlers) copyData(src string, srcOff, length int64, dst string, dstOff int64) error {
	if !h.n.read {
		return errNoRead
	}
	if !h.n.write {
		return errReadOnly
	}
	if srcOff < 0 || dstOff < 0 || length < 0 {
		return coded(sftp.ErrSSHFxBadMessage, "copy-data: offsets and length must fit in 63 bits")
	}
	ms, rs := h.n.resolve(src)
	in, err := ms.root.Open(rs)
	if err != nil {
		return fsErr(err)
	}
	defer in.Close()
	md, rd := h.n.resolve(dst)
	out, err := md.root.OpenFile(rd, os.O_WRONLY, 0)
	if err != nil {
		return fsErr(err)
	}
	st, err := out.Stat()
	if err != nil {
		_ = out.Close()
		return err
	}
	w := &file{f: out, n: h.n, usage: md.usage, size: st.Size()}
	defer w.Close()
	var r io.Reader = io.NewSectionReader(in, srcOff, 1<<62)
	if length > 0 {
		r = io.LimitReader(r, length)
	}
	_, err = io.CopyBuffer(io.NewOffsetWriter(w, dstOff), r, make([]byte, 256<<10))
	return err
}

// codedErr is a message for the client with the SFTP status code it
// travels with: pkg/sftp sends Error() as the status message and takes
// the code from the wrapped status.
type codedErr struct {
	msg  string
	code error
}

func (e *codedErr) Error() string { return e.msg }
func (e *codedErr) Unwrap() error { return e.code }

func coded(code error, format string, args ...any) error {
	return &codedErr{msg: fmt.Sprintf(format, args...), code: code}
}

// attrsOf is the request's attributes; pkg/sftp gives nil for attributes
// it cannot decode, which then set nothing.
func attrsOf(r *sftp.Request) *sftp.FileStat {
	if a := r.Attributes(); a != nil {
		return a
	}
	return &sftp.FileStat{}
}
