package fs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
	"alknet.dev/alknet/plugins/sdk"
)

// pipeStream is the plugin's end of a stream made of two pipes, for
// driving serveStream without the node.
type pipeStream struct {
	r *io.PipeReader // from the client
	w *io.PipeWriter // to the client

	mu    sync.Mutex
	timer *time.Timer
}

type pipeReset struct{ Code uint64 }

func (e *pipeReset) Error() string { return fmt.Sprintf("stream reset (code %d)", e.Code) }

// newPipeStream returns the plugin's end and the client's reader and writer.
func newPipeStream() (*pipeStream, *io.PipeReader, *io.PipeWriter) {
	cr, sw := io.Pipe()
	sr, cw := io.Pipe()
	return &pipeStream{r: sr, w: sw}, cr, cw
}

func (s *pipeStream) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s *pipeStream) Write(b []byte) (int, error) { return s.w.Write(b) }
func (s *pipeStream) CloseWrite() error           { return s.w.Close() }
func (s *pipeStream) CancelWrite(code uint64)     { _ = s.w.CloseWithError(&pipeReset{code}) }
func (s *pipeStream) Close() error {
	s.SetReadDeadline(time.Time{})
	_ = s.w.Close()
	return s.r.Close()
}

// SetReadDeadline fails the read side once t passes (for good: enough for
// a request, which ends at its first timeout).
func (s *pipeStream) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !t.IsZero() {
		s.timer = time.AfterFunc(time.Until(t), func() { _ = s.r.CloseWithError(os.ErrDeadlineExceeded) })
	}
	return nil
}

// serveBytes runs one request made of in on p as id, and returns what
// the plugin sent back and how the stream ended.
func serveBytes(p *Plugin, id *sdk.Identity, in []byte) ([]byte, error) {
	s, cr, cw := newPipeStream()
	done := make(chan struct{})
	go func() { // owner: serveBytes, which waits for it
		defer close(done)
		p.serveStream(id, "fuzz", s)
	}()
	go func() { // owner: serveBytes; ends when the plugin closes its read side
		_, _ = cw.Write(in)
		_ = cw.Close()
	}()
	out, err := io.ReadAll(cr)
	<-done
	return out, err
}

// storeState lists the stored blobs and the tags.
func storeState(t *testing.T, st *store) (blobs []string, tags map[string]bao.Hash) {
	t.Helper()
	for _, f := range blobFiles(t, st.root) {
		blobs = append(blobs, f[strings.LastIndexByte(f, '/')+1:])
	}
	sort.Strings(blobs)
	tags, err := st.readTags()
	if err != nil {
		t.Fatal(err)
	}
	return blobs, tags
}

// FuzzRequestHeader sends arbitrary bytes as a request to the plugin, as
// a caller holding both scopes: it never panics, always answers with a
// response header (or nothing, for a stream closed before any byte),
// leaves no temporary file and stores nothing but the blob of a valid put
// whose bytes all arrived and match its hash.
func FuzzRequestHeader(f *testing.F) {
	stored := []byte("stored before the fuzzing")
	sh := bao.Sum(stored)
	line := func(v any) []byte {
		var b bytes.Buffer
		_ = wire.WriteHeader(&b, v)
		return b.Bytes()
	}
	f.Add([]byte{})
	f.Add([]byte("\n"))
	f.Add(line(&wire.Request{Op: wire.OpGet, Hash: &sh}))
	f.Add(line(&wire.Request{Op: wire.OpGet, Hash: &sh, Ranges: []wire.Range{{Offset: 3, Length: 4}, {Offset: 30}}}))
	f.Add(append(line(&wire.Request{Op: wire.OpPut, Size: 5, Tag: "t"}), "hello"...))
	f.Add(append(line(&wire.Request{Op: wire.OpPut, Size: 5, Hash: &sh}), "hello"...))
	f.Add(append(line(&wire.Request{Op: wire.OpPut, Size: 9}), "short"...))
	f.Add([]byte(`{"op":"put","size":-1}` + "\n"))
	f.Add([]byte(`{"op":"get","hash":"blake3:zz"}` + "\n"))
	f.Add([]byte(`{"op":"get","hash":null,"ranges":[{"offset":1e3}]}` + "\n"))
	f.Add([]byte(`{"op":"put","size":1}{"op":"get"}` + "\n"))
	f.Add([]byte(strings.Repeat("[", 70000)))

	root, err := os.MkdirTemp("", "fs-fuzz-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = os.RemoveAll(root) })
	p := &Plugin{log: hclog.NewNullLogger()}
	if err := p.Configure(context.Background(), json.RawMessage(`{"root":"`+root+`","max_blob_size":"1MiB"}`), &sdk.Host{}); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(p.closeStore)
	if out, err := serveBytes(p, writer, append(line(&wire.Request{Op: wire.OpPut, Size: int64(len(stored))}), stored...)); err != nil || !bytes.Contains(out, []byte(sh.String())) {
		f.Fatalf("seeding the store: %s %v", out, err)
	}
	st := p.store.Load()

	f.Fuzz(func(t *testing.T, in []byte) {
		blobsBefore, tagsBefore := storeState(t, st)
		out, err := serveBytes(p, writer, in)
		var re *pipeReset
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("stream ended with %v", err)
		}
		if len(out) > 0 || len(in) > 0 {
			var resp wire.Response
			if herr := wire.ReadHeader(bufio.NewReader(bytes.NewReader(out)), &resp); herr != nil && re == nil {
				t.Fatalf("no response header in %q: %v", out, herr)
			}
		}
		if files := tmpFiles(t, st.root); len(files) != 0 {
			t.Fatalf("temporary files left: %v", files)
		}

		// What a valid put of these bytes would store.
		var want *bao.Hash
		var tag string
		br := bufio.NewReader(bytes.NewReader(in))
		if req, err := wire.ParseRequest(br); err == nil && req.Op == wire.OpPut && req.Size <= 1<<20 {
			body, _ := io.ReadAll(io.LimitReader(br, req.Size))
			if h := bao.Sum(body); int64(len(body)) == req.Size && (req.Hash == nil || *req.Hash == h) {
				want, tag = &h, req.Tag
			}
		}
		blobsAfter, tagsAfter := storeState(t, st)
		wantBlobs := append([]string(nil), blobsBefore...)
		wantTags := map[string]bao.Hash{}
		for k, v := range tagsBefore {
			wantTags[k] = v
		}
		if want != nil {
			if x := hexName(*want); !containsString(wantBlobs, x) {
				wantBlobs = append(wantBlobs, x)
				sort.Strings(wantBlobs)
			}
			if tag != "" {
				wantTags[tag] = *want
			}
		}
		if strings.Join(blobsAfter, ",") != strings.Join(wantBlobs, ",") {
			t.Fatalf("blobs %v, want %v", blobsAfter, wantBlobs)
		}
		if len(tagsAfter) != len(wantTags) {
			t.Fatalf("tags %v, want %v", tagsAfter, wantTags)
		}
		for k, v := range wantTags {
			if tagsAfter[k] != v {
				t.Fatalf("tags %v, want %v", tagsAfter, wantTags)
			}
		}
		// Back to the seeded store for the next input.
		if want != nil && *want != sh {
			if _, _, err := st.remove(*want, true); err != nil {
				t.Fatal(err)
			}
		}
		if want != nil && *want == sh && tag != "" {
			if _, err := st.untag(tag); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
