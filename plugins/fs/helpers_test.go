package fs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

const G = bao.GroupSize

var (
	reader = &sdk.Identity{ID: "reader", Scopes: []string{ScopeRead}}
	writer = &sdk.Identity{ID: "writer", Scopes: []string{ScopeRead, ScopeWrite}}
)

func content(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 42))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fakeClock is the injectable clock of leases.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer collects log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a plugin running in the in-process harness on a store in a
// temporary directory.
type env struct {
	t     *testing.T
	root  string
	p     *Plugin
	h     *sdktest.Harness
	clock *fakeClock
	logs  *syncBuffer
}

func start(t *testing.T, settings map[string]any) *env {
	t.Helper()
	root := t.TempDir()
	return startAt(t, root, settings)
}

func startAt(t *testing.T, root string, settings map[string]any) *env {
	t.Helper()
	e := &env{t: t, root: root, clock: newClock(), logs: &syncBuffer{}}
	e.p = &Plugin{now: e.clock.now, log: hclog.New(&hclog.LoggerOptions{Output: e.logs, JSONFormat: true, Level: hclog.Debug})}
	s := map[string]any{"root": root}
	for k, v := range settings {
		s[k] = v
	}
	e.h = sdktest.Start(t, e.p, sdktest.Options{Settings: s})
	t.Cleanup(e.p.closeStore)
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// stream opens a stream to the plugin as id.
func (e *env) stream(id *sdk.Identity) *sdktest.Stream {
	e.t.Helper()
	c, err := e.h.Connect(ctx(e.t), sdk.Auth{ALPN: wire.ALPN, Identity: id})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	s, err := c.OpenStream(ctx(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// exchange sends a request header and body, half-closes, and returns
// the response header and what followed it (with the error that ended
// the stream: nil at a clean end).
func (e *env) exchange(id *sdk.Identity, req any, body []byte) (*wire.Response, []byte, error) {
	e.t.Helper()
	s := e.stream(id)
	defer s.Close()
	go func() { // owner: exchange, which reads until the plugin ends the stream
		var hb bytes.Buffer
		switch r := req.(type) {
		case []byte:
			hb.Write(r)
		default:
			_ = wire.WriteHeader(&hb, r)
		}
		_, _ = s.Write(append(hb.Bytes(), body...))
		_ = s.CloseWrite()
	}()
	br := bufio.NewReader(s)
	var resp wire.Response
	if err := wire.ReadHeader(br, &resp); err != nil {
		return nil, nil, err
	}
	rest, err := io.ReadAll(br)
	return &resp, rest, err
}

func (e *env) put(id *sdk.Identity, data []byte, hash *bao.Hash, tag string) *wire.Response {
	e.t.Helper()
	resp, _, err := e.exchange(id, &wire.Request{Op: wire.OpPut, Size: int64(len(data)), Hash: hash, Tag: tag}, data)
	if err != nil {
		e.t.Fatalf("put of %d bytes: %v", len(data), err)
	}
	return resp
}

func (e *env) mustPut(data []byte, tag string) bao.Hash {
	e.t.Helper()
	resp := e.put(writer, data, nil, tag)
	if resp.Error != nil || resp.Hash == nil {
		e.t.Fatalf("put of %d bytes: %+v", len(data), resp.Error)
	}
	if want := bao.Sum(data); *resp.Hash != want || resp.Size != int64(len(data)) {
		e.t.Fatalf("put answered %s (%d bytes), want %s (%d)", resp.Hash, resp.Size, want, len(data))
	}
	return *resp.Hash
}

func (e *env) get(id *sdk.Identity, h bao.Hash, ranges ...wire.Range) (*wire.Response, []byte, error) {
	e.t.Helper()
	return e.exchange(id, &wire.Request{Op: wire.OpGet, Hash: &h, Ranges: ranges}, nil)
}

// verifyRanges checks that wireBytes are the slices of ranges of data.
func verifyRanges(t *testing.T, data, wireBytes []byte, ranges ...wire.Range) {
	t.Helper()
	h, size := bao.Sum(data), int64(len(data))
	if len(ranges) == 0 {
		ranges = []wire.Range{{}}
	}
	r := bytes.NewReader(wireBytes)
	for _, g := range ranges {
		n := g.Length
		if n == 0 {
			n = size - g.Offset
		}
		got, err := io.ReadAll(bao.NewSliceVerifier(r, h, size, g.Offset, n))
		if err != nil {
			t.Fatalf("range %+v: %v", g, err)
		}
		if !bytes.Equal(got, data[g.Offset:g.Offset+n]) {
			t.Fatalf("range %+v: wrong bytes", g)
		}
	}
	if r.Len() != 0 {
		t.Fatalf("%d bytes after the slices", r.Len())
	}
}

// resetCode returns the code of the stream reset err reports.
func resetCode(err error) (uint64, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Struct && strings.HasSuffix(v.Elem().Type().Name(), "ResetError") {
			if f := v.Elem().FieldByName("Code"); f.IsValid() && f.CanUint() {
				return f.Uint(), true
			}
		}
	}
	return 0, false
}

func (e *env) call(op string, in any, id *sdk.Identity) ([]byte, error) {
	e.t.Helper()
	return e.h.Call(ctx(e.t), op, in, id)
}

// blobFiles lists the content files in blobs/.
func blobFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(root, blobsDir), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !strings.HasSuffix(p, obaoSuffix) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tmpFiles lists the files under tmp/ (directories and lock files of
// running stores aside).
func tmpFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(root, tmpDir), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !strings.HasSuffix(p, ".lock") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// flipByte flips one byte of a read-only store file.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(path, 0o444)
}
