package sftp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/pkg/sftp"
)

// The shim sits between the client's stream and pkg/sftp's request server.
// It is hand-written because pkg/sftp advertises and implements only
// posix-rename, statvfs and hardlink of the OpenSSH extensions, and has no
// hook to add more: the shim reads every client packet (bounding its size
// and the open handles), answers the extensions pkg/sftp lacks itself,
// adds them to the server's VERSION packet, and passes everything else
// through unchanged. It follows the handles the server hands out, so that
// handle-based extensions (fsync, fstatvfs, copy-data) reach the same file.

// SFTP v3 packet types (draft-ietf-secsh-filexfer-02) the shim reads.
const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpOpen          = 3
	fxpClose         = 4
	fxpOpendir       = 11
	fxpStatus        = 101
	fxpHandle        = 102
	fxpName          = 104
	fxpExtended      = 200
	fxpExtendedReply = 201

	fxOK          = 0
	fxFailure     = 4
	fxBadMessage  = 5
	fxUnsupported = 8

	fxfRead  = 0x01
	fxfWrite = 0x02
)

// Packet bounds, as OpenSSH's sftp-server has them: a packet of at most
// 256 KiB, reads and writes of up to 255 KiB (advertised by limits@openssh.com).
const (
	maxPacket      = 256 << 10
	maxReadWrite   = maxPacket - 1024
	defaultHandles = 256
)

// shimExtensions are the extensions the shim adds to pkg/sftp's three, with
// their versions as OpenSSH's sftp-server advertises them.
var shimExtensions = [][2]string{
	{"fstatvfs@openssh.com", "2"},
	{"fsync@openssh.com", "1"},
	{"lsetstat@openssh.com", "1"},
	{"limits@openssh.com", "1"},
	{"expand-path@openssh.com", "1"},
	{"copy-data", "1"},
}

// errPacket is a client packet the shim will not pass on: the session ends.
type errPacket struct{ msg string }

func (e *errPacket) Error() string { return "bad SFTP packet: " + e.msg }

// readPacket reads one length-prefixed packet and returns its type byte
// and payload.
func readPacket(r io.Reader, buf []byte) ([]byte, error) {
	f, err := readFrame(r, buf)
	if err != nil {
		return nil, err
	}
	return f[4:], nil
}

// readFrame reads one packet with its 4-byte length into buf, growing it
// up to maxPacket+4: the frame is passed on with a single write.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	if cap(buf) < 4 {
		buf = make([]byte, 4, 64<<10)
	}
	buf = buf[:4]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(buf)
	if n == 0 {
		return nil, &errPacket{"empty packet"}
	}
	if n > maxPacket {
		return nil, &errPacket{fmt.Sprintf("packet of %d bytes is larger than the %d-byte limit", n, maxPacket)}
	}
	if cap(buf) < int(n)+4 {
		nb := make([]byte, 4, int(n)+4)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:int(n)+4]
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// decoder reads SFTP wire fields; the first failure sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) u32() uint32 {
	if d.err != nil || len(d.b) < 4 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) str() string {
	n := d.u32()
	if d.err != nil || uint64(n) > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = &errPacket{"truncated field"}
	}
}

// request is what the shim reads of a client packet.
type request struct {
	typ    byte
	id     uint32
	path   string // open, opendir: the path; extended: the extension name
	pflags uint32 // open
	handle string // close
	body   []byte // extended: the extension's own fields
}

// parseRequest decodes the fields the shim needs; other packets only need
// a type and (except INIT) an id.
func parseRequest(p []byte) (request, error) {
	if len(p) < 1 {
		return request{}, &errPacket{"no type"}
	}
	r := request{typ: p[0]}
	if r.typ == fxpInit {
		return r, nil
	}
	d := &decoder{b: p[1:]}
	r.id = d.u32()
	switch r.typ {
	case fxpOpen:
		r.path = d.str()
		r.pflags = d.u32()
	case fxpOpendir:
		r.path = d.str()
	case fxpClose:
		r.handle = d.str()
	case fxpExtended:
		r.path = d.str()
		r.body = d.b
	}
	return r, d.err
}

// openFile is a handle the server gave for a file the shim saw opened.
type openFile struct {
	path   string
	pflags uint32
}

// shim is one SFTP session's packet shim.
type shim struct {
	client  io.ReadWriter // the stream
	h       handlers
	handles int // max-open-handles

	wmu sync.Mutex // one packet at a time towards the client

	mu          sync.Mutex
	cond        *sync.Cond
	outstanding int                 // requests passed to the server, not yet answered
	pending     map[uint32]openFile // open requests awaiting their handle
	opens       map[uint32]bool     // open/opendir ids awaiting an answer (handle bound)
	files       map[string]openFile // handle → file
	open        int                 // handles the server holds
	closing     map[uint32]string   // close id → handle
	serverDone  bool
}

func newShim(client io.ReadWriter, h handlers, maxHandles int) *shim {
	if maxHandles <= 0 {
		maxHandles = defaultHandles
	}
	s := &shim{client: client, h: h, handles: maxHandles, pending: map[uint32]openFile{},
		opens: map[uint32]bool{}, files: map[string]openFile{}, closing: map[uint32]string{}}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// serve runs the session until the client or the server ends it. The
// error is nil when the client closed the session.
func (s *shim) serve() error {
	toServerR, toServerW := io.Pipe()
	fromServerR, fromServerW := io.Pipe()
	rs := sftp.NewRequestServer(pipeRWC{toServerR, fromServerW}, s.h.sftpHandlers(),
		sftp.WithRSMaxTxPacket(maxReadWrite), sftp.WithStartDirectory("/"), sftp.WithRSAllocator())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // owner: serve; ends when the server's input is closed
		defer wg.Done()
		_ = rs.Serve()
		_ = fromServerW.Close()
	}()
	outErr := make(chan error, 1)
	go func() { // owner: serve; ends with the server's output
		defer wg.Done()
		err := s.fromServer(fromServerR)
		s.mu.Lock()
		s.serverDone = true
		s.cond.Broadcast()
		s.mu.Unlock()
		_ = fromServerR.CloseWithError(io.ErrClosedPipe)
		outErr <- err
	}()
	err := s.fromClient(toServerW)
	_ = toServerW.Close()
	_ = rs.Close()
	wg.Wait()
	if err == nil || errors.Is(err, io.EOF) {
		err = <-outErr
		if errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.EOF) {
			err = nil
		}
	}
	return err
}

type pipeRWC struct {
	*io.PipeReader
	*io.PipeWriter
}

func (p pipeRWC) Close() error {
	_ = p.PipeReader.Close()
	return p.PipeWriter.Close()
}

// fromClient reads client packets until EOF or a bad packet.
func (s *shim) fromClient(server io.Writer) error {
	br := bufio.NewReaderSize(s.client, 64<<10)
	var buf []byte
	for {
		frame, err := readFrame(br, buf)
		if err != nil {
			return err
		}
		buf = frame
		p := frame[4:]
		r, err := parseRequest(p)
		if err != nil {
			return err
		}
		switch r.typ {
		case fxpOpen, fxpOpendir:
			s.mu.Lock()
			full := s.open+len(s.opens) >= s.handles
			if !full {
				s.opens[r.id] = true
				if r.typ == fxpOpen {
					s.pending[r.id] = openFile{path: r.path, pflags: r.pflags}
				}
			}
			s.mu.Unlock()
			if full {
				if err := s.status(r.id, fxFailure, fmt.Sprintf("too many open files: this session may hold %d handles", s.handles)); err != nil {
					return err
				}
				continue
			}
		case fxpClose:
			s.mu.Lock()
			s.closing[r.id] = r.handle
			s.mu.Unlock()
		case fxpExtended:
			if handled, err := s.extended(r); handled || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		if r.typ != fxpInit {
			s.mu.Lock()
			s.outstanding++
			s.mu.Unlock()
		}
		if _, err := server.Write(frame); err != nil {
			return err
		}
	}
}

// fromServer passes the server's packets to the client, adding the shim's
// extensions to VERSION and following handles.
func (s *shim) fromServer(server io.Reader) error {
	br := bufio.NewReaderSize(server, 64<<10)
	var buf []byte
	for {
		frame, err := readFrame(br, buf)
		if err != nil {
			return err
		}
		buf = frame
		if frame[4] == fxpVersion {
			err = s.send(addExtensions(frame[4:]))
		} else {
			s.answered(frame[4:])
			err = s.sendFrame(frame)
		}
		if err != nil {
			return err
		}
	}
}

// answered follows handles through the server's answers.
func (s *shim) answered(p []byte) {
	d := &decoder{b: p[1:]}
	id := d.u32()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outstanding--
	s.cond.Broadcast()
	if s.opens[id] {
		delete(s.opens, id)
		f, isFile := s.pending[id]
		delete(s.pending, id)
		if p[0] == fxpHandle {
			if h := d.str(); d.err == nil {
				s.open++
				if isFile {
					s.files[h] = f
				}
			}
		}
		return
	}
	if h, ok := s.closing[id]; ok {
		delete(s.closing, id)
		// pkg/sftp forgets a handle on close whatever the status says.
		if s.open > 0 {
			s.open--
		}
		delete(s.files, h)
	}
}

// addExtensions appends the shim's extensions to a VERSION packet.
func addExtensions(p []byte) []byte {
	out := append([]byte(nil), p...)
	for _, e := range shimExtensions {
		out = appendString(out, e[0])
		out = appendString(out, e[1])
	}
	return out
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// send writes one packet (type byte and payload) to the client.
func (s *shim) send(p []byte) error {
	frame := binary.BigEndian.AppendUint32(make([]byte, 0, len(p)+4), uint32(len(p)))
	return s.sendFrame(append(frame, p...))
}

// sendFrame writes a packet with its length, in one write.
func (s *shim) sendFrame(frame []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.client.Write(frame)
	return err
}

func (s *shim) status(id, code uint32, msg string) error {
	p := []byte{fxpStatus}
	p = binary.BigEndian.AppendUint32(p, id)
	p = binary.BigEndian.AppendUint32(p, code)
	p = appendString(p, msg)
	p = appendString(p, "en")
	return s.send(p)
}

// statusErr answers id with err as pkg/sftp would: its code and message.
func (s *shim) statusErr(id uint32, err error) error {
	if err == nil {
		return s.status(id, fxOK, "")
	}
	var se *sftp.StatusError
	code := uint32(fxFailure)
	switch {
	case errors.As(err, &se):
		code = se.Code
	case errors.Is(err, sftp.ErrSSHFxPermissionDenied) || errors.Is(err, os.ErrPermission):
		code = 3
	case errors.Is(err, os.ErrNotExist):
		code = 2
	case errors.Is(err, sftp.ErrSSHFxOpUnsupported):
		code = fxUnsupported
	case errors.Is(err, sftp.ErrSSHFxBadMessage):
		code = fxBadMessage
	}
	return s.status(id, code, err.Error())
}

// barrier waits until the server has answered every request passed to it
// before this one: an extension then sees the effect of earlier writes,
// as it would with a server that handles requests in order.
func (s *shim) barrier() {
	s.mu.Lock()
	for s.outstanding > 0 && !s.serverDone {
		s.cond.Wait()
	}
	s.mu.Unlock()
}

func (s *shim) file(handle string) (openFile, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.files[handle]
	return f, ok
}

// extended answers the extensions the shim implements; handled is false
// for the others (pkg/sftp's, or unknown ones it refuses itself).
func (s *shim) extended(r request) (handled bool, err error) {
	known := false
	for _, e := range shimExtensions {
		known = known || e[0] == r.path
	}
	if !known {
		return false, nil
	}
	s.barrier()
	d := &decoder{b: r.body}
	bad := func() error { return s.status(r.id, fxBadMessage, "malformed "+r.path+" request") }
	switch r.path {
	case "limits@openssh.com":
		p := []byte{fxpExtendedReply}
		p = binary.BigEndian.AppendUint32(p, r.id)
		for _, v := range []uint64{maxPacket, maxReadWrite, maxReadWrite, uint64(s.handles)} {
			p = binary.BigEndian.AppendUint64(p, v)
		}
		return true, s.send(p)
	case "expand-path@openssh.com":
		in := d.str()
		if d.err != nil {
			return true, bad()
		}
		out, err := expandPath(in)
		if err != nil {
			return true, s.status(r.id, 2, err.Error())
		}
		p := []byte{fxpName}
		p = binary.BigEndian.AppendUint32(p, r.id)
		p = binary.BigEndian.AppendUint32(p, 1)
		p = appendString(p, out)
		p = appendString(p, out)
		p = binary.BigEndian.AppendUint32(p, 0) // no attributes
		return true, s.send(p)
	case "fsync@openssh.com":
		h := d.str()
		f, ok := s.file(h)
		if d.err != nil {
			return true, bad()
		}
		if !ok {
			return true, s.status(r.id, fxFailure, "fsync: not an open file handle")
		}
		return true, s.statusErr(r.id, s.h.fsync(f.path))
	case "fstatvfs@openssh.com":
		h := d.str()
		f, ok := s.file(h)
		if d.err != nil {
			return true, bad()
		}
		if !ok {
			return true, s.status(r.id, fxFailure, "fstatvfs: not an open file handle")
		}
		m, _ := s.h.n.resolve(f.path)
		st, err := m.statvfs()
		if err != nil {
			return true, s.statusErr(r.id, err)
		}
		st.ID = r.id
		p, err := st.MarshalBinary()
		if err != nil {
			return true, s.statusErr(r.id, err)
		}
		return true, s.send(p[4:])
	case "lsetstat@openssh.com":
		p := d.str()
		flags := d.u32()
		attrs, ok := parseAttrs(d, flags)
		if d.err != nil || !ok {
			return true, bad()
		}
		return true, s.statusErr(r.id, s.h.n.seen(s.h.setstat(path.Clean("/"+p), attrFlags(flags), attrs, true)))
	case "copy-data":
		rh, roff, rlen := d.str(), d.u64(), d.u64()
		wh, woff := d.str(), d.u64()
		if d.err != nil {
			return true, bad()
		}
		src, ok1 := s.file(rh)
		dst, ok2 := s.file(wh)
		switch {
		case !ok1 || !ok2:
			return true, s.status(r.id, fxFailure, "copy-data: not an open file handle")
		case src.pflags&fxfRead == 0:
			return true, s.status(r.id, 3, "copy-data: the source handle is not open for reading")
		case dst.pflags&fxfWrite == 0:
			return true, s.status(r.id, 3, "copy-data: the destination handle is not open for writing")
		}
		return true, s.statusErr(r.id, s.h.copyData(src.path, int64(roff), int64(rlen), dst.path, int64(woff)))
	}
	return false, nil
}

// expandPath is expand-path@openssh.com: "~" and "~/…" are the session's
// root; "~user" names nobody here.
func expandPath(p string) (string, error) {
	switch {
	case p == "~" || p == "":
		return "/", nil
	case strings.HasPrefix(p, "~/"):
		return path.Clean("/" + p[2:]), nil
	case strings.HasPrefix(p, "~"):
		return "", fmt.Errorf("%s: no other users' home directories here", p)
	}
	return path.Clean("/" + p), nil
}

// SFTP v3 attribute flags.
const (
	attrSize        = 0x01
	attrUIDGID      = 0x02
	attrPermissions = 0x04
	attrACModTime   = 0x08
	attrExtended    = 0x80000000
)

func attrFlags(f uint32) sftp.FileAttrFlags {
	return sftp.FileAttrFlags{Size: f&attrSize != 0, UidGid: f&attrUIDGID != 0,
		Permissions: f&attrPermissions != 0, Acmodtime: f&attrACModTime != 0}
}

// parseAttrs reads an ATTRS structure (draft-02 §5).
func parseAttrs(d *decoder, flags uint32) (*sftp.FileStat, bool) {
	a := &sftp.FileStat{}
	if flags&attrSize != 0 {
		a.Size = d.u64()
	}
	if flags&attrUIDGID != 0 {
		a.UID, a.GID = d.u32(), d.u32()
	}
	if flags&attrPermissions != 0 {
		a.Mode = d.u32()
	}
	if flags&attrACModTime != 0 {
		a.Atime, a.Mtime = d.u32(), d.u32()
	}
	if flags&attrExtended != 0 {
		n := d.u32()
		if n > 64 {
			return nil, false
		}
		for range n {
			_, _ = d.str(), d.str()
		}
	}
	return a, d.err == nil
}
