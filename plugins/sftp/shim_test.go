package sftp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pkg/sftp"
)

// rawClient speaks SFTP packets to a shim over a pipe.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	id   uint32
	done chan error
}

func newNamespace(t *testing.T, read, write bool) (*namespace, string) {
	t.Helper()
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &namespace{home: &mount{dir: dir, root: root, usage: &usage{}}, shared: map[string]*mount{}, read: read, write: write}
	t.Cleanup(n.close)
	return n, dir
}

func startShim(t *testing.T, n *namespace, handles int) *rawClient {
	t.Helper()
	a, b := net.Pipe()
	c := &rawClient{t: t, conn: a, br: bufio.NewReader(a), done: make(chan error, 1)}
	go func() { c.done <- newShim(b, handlers{n}, handles).serve(); _ = b.Close() }()
	t.Cleanup(func() { _ = a.Close(); <-c.done })
	return c
}

func (c *rawClient) send(typ byte, fields ...any) uint32 {
	c.t.Helper()
	c.id++
	p := []byte{typ}
	if typ != fxpInit {
		p = binary.BigEndian.AppendUint32(p, c.id)
	}
	for _, f := range fields {
		switch v := f.(type) {
		case string:
			p = appendString(p, v)
		case uint32:
			p = binary.BigEndian.AppendUint32(p, v)
		case uint64:
			p = binary.BigEndian.AppendUint64(p, v)
		case []byte:
			p = append(p, v...)
		}
	}
	c.raw(p)
	return c.id
}

func (c *rawClient) raw(p []byte) {
	c.t.Helper()
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(p)))
	if _, err := c.conn.Write(append(hdr[:], p...)); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one packet: type and the rest (id included).
func (c *rawClient) recv() (byte, *decoder) {
	c.t.Helper()
	p, err := readPacket(c.br, nil)
	if err != nil {
		c.t.Fatalf("read a packet: %v", err)
	}
	return p[0], &decoder{b: p[1:]}
}

// status reads a STATUS answer: code and message.
func (c *rawClient) status() (uint32, string) {
	c.t.Helper()
	typ, d := c.recv()
	if typ != fxpStatus {
		c.t.Fatalf("got packet type %d, want STATUS", typ)
	}
	d.u32()
	code := d.u32()
	return code, d.str()
}

func (c *rawClient) handle() string {
	c.t.Helper()
	typ, d := c.recv()
	if typ != fxpHandle {
		c.t.Fatalf("got packet type %d, want HANDLE", typ)
	}
	d.u32()
	return d.str()
}

func (c *rawClient) init() map[string]string {
	c.t.Helper()
	c.send(fxpInit, uint32(3))
	typ, d := c.recv()
	if typ != fxpVersion {
		c.t.Fatalf("got packet type %d, want VERSION", typ)
	}
	if v := d.u32(); v != 3 {
		c.t.Fatalf("version %d", v)
	}
	ext := map[string]string{}
	for len(d.b) > 0 && d.err == nil {
		k, v := d.str(), d.str()
		ext[k] = v
	}
	return ext
}

// Every OpenSSH extension stock clients use is advertised, and each one
// advertised is answered (none with OP_UNSUPPORTED).
func TestShimExtensions(t *testing.T) {
	n, dir := newNamespace(t, true, true)
	c := startShim(t, n, 0)
	ext := c.init()
	for _, want := range []string{"posix-rename@openssh.com", "statvfs@openssh.com", "fstatvfs@openssh.com", "fsync@openssh.com",
		"hardlink@openssh.com", "lsetstat@openssh.com", "limits@openssh.com", "expand-path@openssh.com", "copy-data"} {
		if _, ok := ext[want]; !ok {
			t.Errorf("VERSION does not advertise %s (got %v)", want, ext)
		}
	}

	// limits: 256 KiB packets, 255 KiB reads and writes.
	c.send(fxpExtended, "limits@openssh.com")
	typ, d := c.recv()
	d.u32()
	if got := [4]uint64{d.u64(), d.u64(), d.u64(), d.u64()}; typ != fxpExtendedReply || got != [4]uint64{256 << 10, 255 << 10, 255 << 10, defaultHandles} {
		t.Fatalf("limits: type %d %v", typ, got)
	}
	// expand-path: ~ is the root.
	c.send(fxpExtended, "expand-path@openssh.com", "~/docs/../a")
	typ, d = c.recv()
	d.u32()
	if d.u32(); typ != fxpName || d.str() != "/a" {
		t.Fatalf("expand-path ~/docs/../a: type %d", typ)
	}

	// A file written through one handle, fsync'ed, then copied with
	// copy-data into a second file.
	c.send(fxpOpen, "/src", uint32(fxfRead|fxfWrite|0x08), uint32(0))
	src := c.handle()
	c.send(6, src, uint64(0), "0123456789") // WRITE
	if code, msg := c.status(); code != fxOK {
		t.Fatalf("write: %d %s", code, msg)
	}
	c.send(fxpExtended, "fsync@openssh.com", src)
	if code, msg := c.status(); code != fxOK {
		t.Fatalf("fsync: %d %s", code, msg)
	}
	c.send(fxpExtended, "fstatvfs@openssh.com", src)
	if typ, _ := c.recv(); typ != fxpExtendedReply {
		t.Fatalf("fstatvfs: type %d", typ)
	}
	c.send(fxpOpen, "/dst", uint32(fxfWrite|0x08), uint32(0))
	dst := c.handle()
	c.send(fxpExtended, "copy-data", src, uint64(2), uint64(5), dst, uint64(1))
	if code, msg := c.status(); code != fxOK {
		t.Fatalf("copy-data: %d %s", code, msg)
	}
	// copy-data refuses a destination opened read-only.
	c.send(fxpExtended, "copy-data", dst, uint64(0), uint64(0), src, uint64(0))
	if code, msg := c.status(); code != 3 || !strings.Contains(msg, "not open for reading") {
		t.Fatalf("copy-data from a write-only handle: %d %q", code, msg)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "dst")); string(got) != "\x0023456" {
		t.Fatalf("copy-data wrote %q", got)
	}
	// lsetstat on a symlink changes nothing on its target.
	if err := os.Symlink("src", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	c.send(fxpExtended, "lsetstat@openssh.com", "/l", uint32(attrPermissions), uint32(0o600))
	if code, msg := c.status(); code != fxOK {
		t.Fatalf("lsetstat: %d %s", code, msg)
	}
	if st, _ := os.Stat(filepath.Join(dir, "src")); st.Mode().Perm() == 0o600 {
		t.Fatal("lsetstat followed the symlink")
	}
	c.send(fxpExtended, "lsetstat@openssh.com", "/src", uint32(attrPermissions), uint32(0o600))
	if code, msg := c.status(); code != fxOK {
		t.Fatalf("lsetstat: %d %s", code, msg)
	}
	if st, _ := os.Stat(filepath.Join(dir, "src")); st.Mode().Perm() != 0o600 {
		t.Fatalf("lsetstat on a file: mode %v", st.Mode())
	}
	// An extension nobody implements is refused by pkg/sftp.
	c.send(fxpExtended, "nobody@example.org")
	if code, _ := c.status(); code != fxUnsupported {
		t.Fatalf("unknown extension: code %d", code)
	}
}

// fstatvfs of a handle reports the root's filesystem, and with a byte
// quota the quota.
func TestStatVFSOfTheRoot(t *testing.T) {
	n, dir := newNamespace(t, true, true)
	n.home.usage = &usage{bytesLimit: 64 << 20}
	st, err := n.home.statvfs()
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks*st.Frsize != 64<<20 {
		t.Fatalf("statvfs with a 64 MiB quota: %d blocks of %d", st.Blocks, st.Frsize)
	}
	n.home.usage = nil
	st, err = n.home.statvfs()
	if err != nil {
		t.Fatal(err)
	}
	var want syscall.Statfs_t
	if err := syscall.Statfs(dir, &want); err != nil {
		t.Fatal(err)
	}
	if st.Blocks != want.Blocks || st.Fsid != uint64(want.Fsid.X__val[0])<<32|uint64(uint32(want.Fsid.X__val[1])) {
		t.Fatalf("statvfs: %+v, statfs of the root: %+v", st, want)
	}
}

// Garbage and oversized packets end the session with a bad-packet error;
// the handle bound refuses opens past it without ending the session.
func TestShimBadPackets(t *testing.T) {
	for name, p := range map[string][]byte{
		"oversized": nil,
		"empty":     {},
		"truncated": {fxpOpen, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			n, _ := newNamespace(t, true, true)
			c := startShim(t, n, 0)
			c.init()
			if name == "oversized" {
				var hdr [4]byte
				binary.BigEndian.PutUint32(hdr[:], maxPacket+1)
				go func() { _, _ = c.conn.Write(hdr[:]) }()
			} else {
				c.raw(p)
			}
			var bad *errPacket
			if err := <-c.done; !errors.As(err, &bad) {
				t.Fatalf("session ended with %v, want a bad-packet error", err)
			}
			c.done <- nil // for the cleanup
		})
	}
	n, _ := newNamespace(t, true, true)
	if err := os.WriteFile(filepath.Join(n.home.dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startShim(t, n, 2)
	c.init()
	for range 2 {
		c.send(fxpOpen, "/f", uint32(fxfRead), uint32(0))
		c.handle()
	}
	c.send(fxpOpen, "/f", uint32(fxfRead), uint32(0))
	if code, msg := c.status(); code != fxFailure || !strings.Contains(msg, "too many open files") {
		t.Fatalf("third open with max_open_handles = 2: %d %q", code, msg)
	}
	c.send(fxpOpendir, "/")
	if code, _ := c.status(); code != fxFailure {
		t.Fatalf("opendir past the bound: %d", code)
	}
}

// A read-only identity can list and read but changes nothing.
func TestReadOnlyIdentity(t *testing.T) {
	n, dir := newNamespace(t, true, false)
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	go func() { _ = newShim(b, handlers{n}, 0).serve(); _ = b.Close() }()
	c, err := sftp.NewClientPipe(a, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if f, err := c.Open("/f"); err != nil {
		t.Fatal(err)
	} else if got, _ := io.ReadAll(f); string(got) != "data" {
		t.Fatalf("read %q", got)
	}
	for what, err := range map[string]error{
		"create": func() error { _, err := c.Create("/g"); return err }(),
		"mkdir":  c.Mkdir("/d"),
		"remove": c.Remove("/f"),
		"rename": c.Rename("/f", "/g"),
		"chmod":  c.Chmod("/f", 0o600),
	} {
		if !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s without sftp:write: %v, want permission denied", what, err)
		}
	}
}

func TestResolveStaysInsideRoots(t *testing.T) {
	n, _ := newNamespace(t, true, true)
	n.shared["team"] = &mount{name: "team"}
	for in, want := range map[string]string{
		"/": ".", "": ".", "/a/b": "a/b", "../../etc/passwd": "etc/passwd", "/team": ".", "/team/x/../y": "y",
		"/teams": "teams", "//team//z": "z",
	} {
		_, rel := n.resolve(in)
		if rel != want {
			t.Errorf("resolve(%q) = %q, want %q", in, rel, want)
		}
	}
}

func TestEscapes(t *testing.T) {
	for _, c := range []struct {
		dir, target string
		out         bool
	}{
		{".", "a", false}, {".", "..", true}, {"a/b", "../../c", false}, {"a/b", "../../../c", true},
		{"a", "b/../../..", true}, {"a", "./../b", false},
	} {
		if got := escapes(c.dir, c.target); got != c.out {
			t.Errorf("escapes(%q, %q) = %v", c.dir, c.target, got)
		}
	}
}

// BenchmarkSessionGet reads a 64 MiB file through the shim and pkg/sftp's
// request server over a Unix socket pair (no node, no SSH): what the SFTP
// plugin alone moves.
func BenchmarkSessionGet(b *testing.B) {
	dir := b.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		b.Fatal(err)
	}
	n := &namespace{home: &mount{dir: dir, root: root}, shared: map[string]*mount{}, read: true, write: true}
	defer n.close()
	const size = 64 << 20
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, size), 0o644); err != nil {
		b.Fatal(err)
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		b.Fatal(err)
	}
	cs, _ := net.FileConn(os.NewFile(uintptr(fds[0]), "client"))
	ss, _ := net.FileConn(os.NewFile(uintptr(fds[1]), "server"))
	go func() { _ = newShim(ss, handlers{n}, 0).serve(); _ = ss.Close() }()
	c, err := sftp.NewClientPipe(cs, cs, sftp.MaxPacketUnchecked(maxReadWrite), sftp.UseConcurrentReads(true))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(size)
	for b.Loop() {
		f, err := c.Open("/f")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
	}
}
