package fs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
	"alknet.dev/alknet/plugins/sdk"
)

// stream is what one request is served on: an *sdk.Stream.
type stream interface {
	io.Reader
	io.Writer
	CloseWrite() error
	CancelWrite(code uint64)
	SetReadDeadline(t time.Time) error
	Close() error
}

// Error codes of response headers besides those wire.Error lists.
const codeUnavailable = "UNAVAILABLE" // over max_puts: try again later

// copyBuffer is the buffer size a put reads with.
const copyBuffer = 256 << 10

// serveStream serves the one request of s and closes s.
func (p *Plugin) serveStream(id *sdk.Identity, remote string, s stream) {
	defer s.Close()
	st, cfg := p.store.Load(), p.cfg.Load()
	if st == nil || cfg == nil {
		p.refuse(s, "INTERNAL", "the fs plugin has no store (it is not configured or is stopping); try again")
		return
	}
	headerTimeout := p.headerTimeout
	if headerTimeout == 0 {
		headerTimeout = HeaderTimeout
	}
	_ = s.SetReadDeadline(time.Now().Add(headerTimeout))
	dr := &deadlineReader{s: s}
	br := bufio.NewReaderSize(dr, 16<<10)
	req, err := wire.ParseRequest(br)
	if err != nil {
		switch {
		case dr.n == 0 && errors.Is(err, io.EOF):
			// The client closed the stream without a request.
		case errors.Is(err, os.ErrDeadlineExceeded):
			p.refuse(s, "INVALID_INPUT", fmt.Sprintf("no request header within %s: send one JSON line first", headerTimeout))
		default:
			p.refuse(s, "INVALID_INPUT", fmt.Sprintf("request refused: %v; send one JSON line such as {\"op\":\"get\",\"hash\":\"blake3:…\"}", err))
		}
		return
	}
	_ = s.SetReadDeadline(time.Time{})
	who := "anonymous caller"
	if id != nil {
		who = id.ID
	}
	scope := ScopeRead
	if req.Op == wire.OpPut {
		scope = ScopeWrite
	}
	if !id.HasScope(scope) {
		p.logger().Info("fs request refused", "op", req.Op, "identity", who, "remote_addr", remote, "reason", "needs scope "+scope)
		p.refuse(s, "FORBIDDEN", fmt.Sprintf("%s needs scope %s, which %s does not have: ask the node's operator to grant it", req.Op, scope, who))
		return
	}
	switch req.Op {
	case wire.OpGet:
		p.get(st, req, s)
	case wire.OpPut:
		dr.idle = p.idle()
		p.put(st, cfg, req, br, s, who, remote)
	}
}

// refuse answers with an error header and ends the stream. The header
// goes out before the end of the stream (FIN), never a reset: a reset
// would let the header be dropped in flight, and the client would not
// learn why it was refused.
func (p *Plugin) refuse(s stream, code, msg string) {
	if err := wire.WriteHeader(s, &wire.Response{Error: &wire.Error{Code: code, Message: msg}}); err != nil {
		s.CancelWrite(wire.CodeRefused)
		return
	}
	_ = s.CloseWrite()
}

// deadlineReader gives every read of a put idle time to make progress.
type deadlineReader struct {
	s    stream
	idle time.Duration // 0: reads keep the deadline set on s
	n    int64         // bytes read
}

func (d *deadlineReader) Read(b []byte) (int, error) {
	if d.idle > 0 {
		_ = d.s.SetReadDeadline(time.Now().Add(d.idle))
	}
	n, err := d.s.Read(b)
	d.n += int64(n)
	return n, err
}

// get sends the response header, then the bao slice of each range.
func (p *Plugin) get(st *store, req *wire.Request, s stream) {
	p.stats.getsActive.Add(1)
	defer p.stats.getsActive.Add(-1)
	h := *req.Hash
	b, err := st.openBlob(h)
	var ce *corruptError
	switch {
	case errors.Is(err, errNotFound):
		p.refuse(s, "NOT_FOUND", fmt.Sprintf("blob %s is not stored on this node", h))
		return
	case errors.Is(err, errQuarantined):
		p.refuse(s, "NOT_FOUND", fmt.Sprintf("blob %s was quarantined as corrupted and is not served; put it again to restore it", h))
		return
	case errors.As(err, &ce):
		p.corrupted(st, h, "reason", ce.reason)
		p.refuse(s, "CORRUPT", fmt.Sprintf("blob %s failed verification (%s) and was quarantined; put it again to restore it", h, ce.reason))
		return
	case err != nil:
		p.logger().Error("fs get failed", "hash", h.String(), "error", err)
		p.refuse(s, "INTERNAL", fmt.Sprintf("reading blob %s failed on the node; its log says why", h))
		return
	}
	defer b.Close()
	type span struct{ off, n int64 }
	spans := make([]span, 0, max(1, len(req.Ranges)))
	for i, r := range req.Ranges {
		n := r.Length
		if r.Offset > b.size || n > b.size-r.Offset {
			p.refuse(s, "INVALID_INPUT", fmt.Sprintf("range %d {offset %d, length %d} is outside blob %s of %d bytes", i, r.Offset, r.Length, h, b.size))
			return
		}
		if n == 0 {
			n = b.size - r.Offset
		}
		spans = append(spans, span{r.Offset, n})
	}
	if len(spans) == 0 {
		spans = append(spans, span{0, b.size})
	}
	if err := wire.WriteHeader(s, &wire.Response{Size: b.size}); err != nil {
		s.CancelWrite(wire.CodeRefused)
		return
	}
	for _, sp := range spans {
		w := p.newSliceWriter(s, b.size, sp.off, sp.n)
		err := bao.WriteSlice(w, b.content, b.ob, h, b.size, sp.off, sp.n)
		var ge *bao.GroupError
		switch {
		case err == nil:
			continue
		case errors.As(err, &ge):
			// Quarantined before the reset, so that a client retrying at
			// once is told the blob is gone rather than sent it again.
			part := "content"
			if ge.Node {
				part = "outboard"
			}
			p.corrupted(st, h, "group", ge.Index, "bad", part)
			s.CancelWrite(wire.CodeCorrupt)
		case w.err != nil:
			// The client went away.
			s.CancelWrite(wire.CodeRefused)
		default:
			s.CancelWrite(wire.CodeRefused)
			p.logger().Error("fs get failed", "hash", h.String(), "error", err)
		}
		return
	}
	p.stats.gets.Add(1)
	_ = s.CloseWrite()
}

// corrupted quarantines h, counts it and logs it at ERROR.
func (p *Plugin) corrupted(st *store, h bao.Hash, fields ...any) {
	moved, err := st.quarantine(h)
	if moved {
		p.stats.corrupt.Add(1)
	}
	fields = append([]any{"hash", h.String()}, fields...)
	p.logger().Error("blob failed verification", append(fields, "quarantined", moved)...)
	if err != nil {
		p.logger().Error("blob not quarantined", "hash", h.String(), "error", err)
	}
}

// sliceWriter writes one slice to the stream and counts it. bao.WriteSlice
// writes each group in one Write, preceded in it by the proof nodes before
// the group (and, in the first, the slice header), so a Write that ends
// with the next group of the slice is recognised by its length.
type sliceWriter struct {
	p         *Plugin
	w         io.Writer
	size      int64
	next, end int64 // groups of the slice still to come
	header    bool  // the slice header is still to come
	corrupt   int64 // group whose sent bytes to corrupt (-1: none)
	scratch   []byte
	err       error // the stream's write error
}

func (p *Plugin) newSliceWriter(w io.Writer, size, off, n int64) *sliceWriter {
	first, end, _ := bao.SliceGroups(size, off, n)
	return &sliceWriter{p: p, w: w, size: size, next: first, end: end, header: true, corrupt: p.corruptGroup.Load()}
}

func (sw *sliceWriter) Write(b []byte) (int, error) {
	glen := int64(-1)
	if sw.next < sw.end {
		_, glen = bao.GroupSpan(sw.size, sw.next)
		rest := int64(len(b)) - glen
		if sw.header {
			rest -= 8
		}
		if rest < 0 || rest%64 != 0 {
			glen = -1 // not a group
		}
	}
	out := b
	if glen > 0 && sw.next == sw.corrupt {
		sw.scratch = append(sw.scratch[:0], b...)
		sw.scratch[len(b)-int(glen)] ^= 0x80
		out = sw.scratch
	}
	n, err := sw.w.Write(out)
	sw.p.stats.bytesSent.Add(int64(n))
	if n > 0 {
		sw.header = false
	}
	if glen >= 0 && n == len(b) {
		sw.p.stats.contentBytesSent.Add(glen)
		sw.next++
	}
	if err != nil {
		sw.err = err
	}
	return n, err
}

// countingReader counts the bytes a put reads and keeps its read error.
type countingReader struct {
	r   io.Reader
	n   int64
	p   *Plugin
	err error
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	c.p.stats.bytesReceived.Add(int64(n))
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// put receives exactly req.Size bytes into a temporary file while hashing
// them, then commits the blob (or refuses it: nothing is stored).
func (p *Plugin) put(st *store, cfg *config, req *wire.Request, br *bufio.Reader, s stream, who, remote string) {
	log := p.logger().With("identity", who, "remote_addr", remote, "size", req.Size)
	if req.Size > cfg.maxBlobSize {
		log.Info("fs put refused", "reason", "over max_blob_size")
		p.refuse(s, "TOO_LARGE", fmt.Sprintf("a blob of %d bytes is larger than this node stores (max_blob_size = %d)", req.Size, cfg.maxBlobSize))
		return
	}
	if n := p.putsActive.Add(1); n > int64(cfg.maxPuts) {
		p.putsActive.Add(-1)
		log.Info("fs put refused", "reason", "over max_puts")
		p.refuse(s, codeUnavailable, fmt.Sprintf("this node is receiving %d puts, the most it takes at once (max_puts); try again later", cfg.maxPuts))
		return
	}
	defer p.putsActive.Add(-1)
	f, err := st.tempFile("put-*")
	if err != nil {
		log.Error("fs put failed", "error", err)
		p.refuse(s, "INTERNAL", "the node could not create a temporary file; its log says why")
		return
	}
	name := f.Name()
	defer os.Remove(name) // a no-op once committed
	// discard removes the temporary file before a refusal is sent, so
	// that nothing of the put is left once the client reads it.
	discard := func() {
		_ = f.Close()
		_ = os.Remove(name)
	}
	cr := &countingReader{r: io.LimitReader(br, req.Size), p: p}
	ow := bao.NewOutboardWriter()
	_, err = io.CopyBuffer(io.MultiWriter(f, ow), cr, make([]byte, copyBuffer))
	got := cr.n
	if err == nil && got < req.Size {
		discard()
		log.Info("fs put refused", "reason", "stream ended early", "received", got)
		p.refuse(s, "INVALID_INPUT", fmt.Sprintf("the stream ended after %d of the %d bytes announced: nothing was stored", got, req.Size))
		return
	}
	if err != nil {
		discard()
		switch {
		case errors.Is(cr.err, os.ErrDeadlineExceeded):
			log.Info("fs put refused", "reason", "idle", "received", got)
			p.refuse(s, "INVALID_INPUT", fmt.Sprintf("no bytes for %s after %d of %d: nothing was stored", p.idle(), got, req.Size))
		case cr.err != nil:
			log.Info("fs put aborted", "received", got, "error", cr.err)
			s.CancelWrite(wire.CodeRefused)
		default:
			log.Error("fs put failed", "error", err)
			p.refuse(s, "INTERNAL", "the node could not write the blob (see its log; is the disk full?): nothing was stored")
		}
		return
	}
	root, ob := ow.Sum()
	if req.Hash != nil && *req.Hash != root {
		discard()
		log.Info("fs put refused", "reason", "hash mismatch", "want", req.Hash.String(), "got", root.String())
		p.refuse(s, "INVALID_INPUT", fmt.Sprintf("the %d bytes received hash to %s, not %s: nothing was stored", got, root, *req.Hash))
		return
	}
	if err := finishFile(f, nil, 0o444); err != nil {
		_ = os.Remove(name)
		log.Error("fs put failed", "error", err)
		p.refuse(s, "INTERNAL", "the node could not sync the blob to disk (see its log): nothing was stored")
		return
	}
	dedup, err := st.commit(name, root, ob)
	if err != nil {
		log.Error("fs put failed", "hash", root.String(), "error", err)
		p.refuse(s, "INTERNAL", "the node could not commit the blob (see its log): nothing was stored")
		return
	}
	if req.Tag != "" {
		if _, err := st.tag(req.Tag, root); err != nil {
			log.Error("fs put: tag failed", "hash", root.String(), "tag", req.Tag, "error", err)
			p.refuse(s, "INTERNAL", fmt.Sprintf("blob %s is stored, but tagging it %q failed (see the node's log); tag it with fs/tag", root, req.Tag))
			return
		}
	}
	p.stats.puts.Add(1)
	log.Info("blob stored", "hash", root.String(), "dedup", dedup, "tag", req.Tag)
	if err := wire.WriteHeader(s, &wire.Response{Size: got, Hash: &root}); err != nil {
		s.CancelWrite(wire.CodeRefused)
		return
	}
	_ = s.CloseWrite()
}

// idle is how long a put may go without receiving a byte.
func (p *Plugin) idle() time.Duration {
	if p.idleTimeout > 0 {
		return p.idleTimeout
	}
	return IdleTimeout
}
