package sftp

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzShimPackets feeds arbitrary client bytes to a session: the shim's
// packet parser and the extensions it answers must never panic, never
// hang, and never touch anything outside the root.
func FuzzShimPackets(f *testing.F) {
	str := func(s string) []byte { return appendString(nil, s) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	frame := func(typ byte, fields ...[]byte) []byte {
		p := []byte{typ}
		for _, x := range fields {
			p = append(p, x...)
		}
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(p))), p...)
	}
	init := frame(fxpInit, u32(3))
	f.Add(init)
	f.Add(append(init, frame(fxpExtended, u32(1), str("limits@openssh.com"))...))
	f.Add(append(init, frame(fxpExtended, u32(2), str("expand-path@openssh.com"), str("~/../../etc"))...))
	f.Add(append(init, frame(fxpExtended, u32(3), str("lsetstat@openssh.com"), str("/x"), u32(0x80000004), u32(0o644), u32(1))...))
	f.Add(append(init, frame(fxpExtended, u32(4), str("copy-data"), str("h"), make([]byte, 16), str("h"), make([]byte, 8))...))
	f.Add(append(init, frame(fxpOpen, u32(5), str("../../etc/passwd"), u32(1), u32(0))...))
	f.Add(append(init, frame(fxpClose, u32(6), str("1"))...))
	f.Add([]byte{0, 0, 0, 1, 200})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		outside := t.TempDir()
		n, dir := newNamespace(t, true, true)
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("inside"), 0o644); err != nil {
			t.Fatal(err)
		}
		a, b := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- newShim(b, handlers{n}, 4).serve(); _ = b.Close() }()
		go func() { _, _ = io.Copy(io.Discard, a) }()
		_ = a.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = a.Write(in)
		_ = a.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the session did not end after the client closed")
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Fatalf("something was written outside the root: %v", entries)
		}
	})
}

// FuzzParseRequest: the packet parser never panics and never reads past
// the packet.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte{fxpInit, 0, 0, 0, 3})
	f.Add([]byte{fxpOpen, 0, 0, 0, 1, 0, 0, 0, 1, 'a', 0, 0, 0, 1})
	f.Add([]byte{fxpExtended, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := parseRequest(p)
		if err != nil {
			var bad *errPacket
			if !errors.As(err, &bad) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(r.path) > len(p) || len(r.handle) > len(p) || len(r.body) > len(p) {
			t.Fatal("fields longer than the packet")
		}
	})
}

// FuzzResolve: whatever path a client sends, it resolves to a path local
// to one of the session's roots, and symlink targets accepted by escapes
// never climb above the root.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"/", "..", "../../etc/passwd", "/team/../x", "team/a", "a/./b/../../..", "\x00", "/teams/x"} {
		f.Add(s, "../x")
	}
	f.Fuzz(func(t *testing.T, p, target string) {
		n := &namespace{home: &mount{}, shared: map[string]*mount{"team": {name: "team"}}}
		m, rel := n.resolve(p)
		if m == nil || (rel != "." && !filepath.IsLocal(rel)) || strings.HasPrefix(rel, "/") {
			t.Fatalf("resolve(%q) = %q", p, rel)
		}
		dir := path.Dir(rel)
		if !escapes(dir, target) && !path.IsAbs(target) {
			joined := path.Join(dir, target)
			if joined == ".." || strings.HasPrefix(joined, "../") {
				t.Fatalf("escapes(%q, %q) = false, but it resolves to %q", dir, target, joined)
			}
		}
	})
}
