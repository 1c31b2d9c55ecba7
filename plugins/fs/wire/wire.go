// Package wire is the alknet/fs transfer protocol (docs/spec/handlers.md
// §fs), shared by the fs plugin (the server) and its clients (`alknet fs`).
//
// One request per stream. The client sends a request header — one JSON
// line of at most MaxHeader bytes, ended by '\n' — and, for a put, the
// blob's bytes. The server answers with a response header line; for a get
// it then sends, for each requested range in order, the bao slice of that
// range (plugins/fs/bao: the proof nodes interleaved with the range's 16
// KiB groups), which the client verifies group by group as it arrives.
// For a put the server answers once it has received, hashed and committed
// the bytes (or refused them).
//
// A server that finds its own stored blob corrupted while sending stops at
// the first bad group and resets the stream with CodeCorrupt; a client
// that receives a group failing verification drops that source.
package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"alknet.dev/alknet/plugins/fs/bao"
)

// ALPN of the transfer protocol.
const ALPN = "alknet/fs"

// MaxHeader bounds a header line (request or response), newline included.
const MaxHeader = 64 << 10

// MaxRanges bounds the ranges of one get.
const MaxRanges = 1024

// Stream reset codes the server uses.
const (
	CodeRefused = 1 // the request was refused (the response header says why)
	CodeCorrupt = 3 // the stored blob failed verification while being sent
)

// Operations.
const (
	OpGet = "get"
	OpPut = "put"
)

// Range is a byte range of a blob; Length 0 means "to the end".
type Range struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length,omitempty"`
}

// Request is the request header.
type Request struct {
	Op string `json:"op"`
	// Hash names the blob (get: required; put: optional, then the server
	// refuses bytes that do not hash to it).
	Hash *bao.Hash `json:"hash,omitempty"`
	// Ranges of a get, in order (none: the whole blob).
	Ranges []Range `json:"ranges,omitempty"`
	// Size of a put: exactly this many bytes follow the header.
	Size int64 `json:"size,omitempty"`
	// Tag of a put: tag the blob with this name once committed.
	Tag string `json:"tag,omitempty"`
}

// Error is a refusal in a response header.
type Error struct {
	Code    string `json:"code"` // NOT_FOUND, FORBIDDEN, INVALID_INPUT, CORRUPT, TOO_LARGE, INTERNAL
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Response is the response header.
type Response struct {
	// Size of the blob (get), or of what was stored (put).
	Size int64 `json:"size"`
	// Hash of the blob stored (put).
	Hash  *bao.Hash `json:"hash,omitempty"`
	Error *Error    `json:"error,omitempty"`
}

// Validate checks a request header's fields.
func (r *Request) Validate() error {
	switch r.Op {
	case OpGet:
		if r.Hash == nil {
			return errors.New("get: hash is required")
		}
		if len(r.Ranges) > MaxRanges {
			return fmt.Errorf("get: %d ranges, at most %d", len(r.Ranges), MaxRanges)
		}
		for _, g := range r.Ranges {
			if g.Offset < 0 || g.Length < 0 {
				return fmt.Errorf("get: range {%d, %d}: offsets and lengths are not negative", g.Offset, g.Length)
			}
		}
		if r.Size != 0 || r.Tag != "" {
			return errors.New("get: size and tag belong to a put")
		}
	case OpPut:
		if r.Size < 0 {
			return fmt.Errorf("put: size %d is negative", r.Size)
		}
		if len(r.Ranges) > 0 {
			return errors.New("put: ranges belong to a get")
		}
		if r.Tag != "" {
			if err := ValidTag(r.Tag); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown op %q: want get or put", r.Op)
	}
	return nil
}

// ValidTag checks a tag name: 1–255 bytes, printable, no control
// characters.
func ValidTag(tag string) error {
	if tag == "" || len(tag) > 255 {
		return fmt.Errorf("tag %q: want 1 to 255 bytes", tag)
	}
	for _, c := range tag {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("tag %q: control characters are not allowed", tag)
		}
	}
	return nil
}

// WriteHeader writes v as one JSON line.
func WriteHeader(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b)+1 > MaxHeader {
		return fmt.Errorf("header of %d bytes is larger than %d", len(b)+1, MaxHeader)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadHeader reads one JSON line into v (unknown fields refused) from br,
// which must not have buffered past the line for the caller to read the
// bytes that follow it from br.
func ReadHeader(br *bufio.Reader, v any) error {
	line, err := readLine(br)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if dec.More() {
		return errors.New("header: more than one JSON value on the line")
	}
	return nil
}

// readLine reads up to '\n' without reading more than MaxHeader bytes.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > MaxHeader {
			return nil, fmt.Errorf("header longer than %d bytes", MaxHeader)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// ParseRequest reads and validates a request header.
func ParseRequest(br *bufio.Reader) (*Request, error) {
	var r Request
	if err := ReadHeader(br, &r); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Collection is a directory tree as one blob: the files under it, each
// with its path (slash-separated, relative), hash, size and mode.
type Collection struct {
	Format  string  `json:"alknet_collection"` // CollectionFormat
	Entries []Entry `json:"entries"`
}

// CollectionFormat names the version of the collection format.
const CollectionFormat = "1"

// MaxCollection bounds a collection blob a client will parse.
const MaxCollection = 64 << 20

// Entry is one file of a collection.
type Entry struct {
	Path string   `json:"path"`
	Hash bao.Hash `json:"hash"`
	Size int64    `json:"size"`
	Mode uint32   `json:"mode,omitempty"` // permission bits (0: 0644)
}

// ValidPath checks an entry path: relative, slash-separated, clean, no
// "." or ".." elements, no empty elements, no NUL.
func ValidPath(p string) error {
	if p == "" || len(p) > 4096 || strings.ContainsRune(p, 0) || path.IsAbs(p) || strings.Contains(p, "\\") {
		return fmt.Errorf("collection path %q: want a relative path with '/' separators", p)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("collection path %q is not clean", p)
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("collection path %q: '.', '..' and empty elements are not allowed", p)
		}
	}
	return nil
}

// Marshal encodes c with its entries sorted by path, so one tree always
// gives one hash.
func (c *Collection) Marshal() ([]byte, error) {
	out := Collection{Format: CollectionFormat, Entries: append([]Entry(nil), c.Entries...)}
	sort.Slice(out.Entries, func(i, j int) bool { return out.Entries[i].Path < out.Entries[j].Path })
	if err := out.check(); err != nil {
		return nil, err
	}
	return json.Marshal(out)
}

// ParseCollection decodes and checks a collection blob: known format,
// valid unique paths (a path is never also the directory of another),
// sizes not negative.
func ParseCollection(b []byte) (*Collection, error) {
	if len(b) > MaxCollection {
		return nil, fmt.Errorf("collection of %d bytes is larger than %d", len(b), MaxCollection)
	}
	var c Collection
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("not a collection: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a collection: data after the JSON object")
	}
	if c.Format != CollectionFormat {
		return nil, fmt.Errorf("collection format %q: this client reads %q", c.Format, CollectionFormat)
	}
	if err := c.check(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Collection) check() error {
	seen := make(map[string]bool, len(c.Entries))
	for _, e := range c.Entries {
		if err := ValidPath(e.Path); err != nil {
			return err
		}
		if e.Size < 0 {
			return fmt.Errorf("collection entry %q: negative size", e.Path)
		}
		if e.Mode&^0o777 != 0 {
			return fmt.Errorf("collection entry %q: mode %o has more than permission bits", e.Path, e.Mode)
		}
		if seen[e.Path] {
			return fmt.Errorf("collection lists %q twice", e.Path)
		}
		seen[e.Path] = true
	}
	for p := range seen {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if seen[d] {
				return fmt.Errorf("collection lists %q as a file and as the directory of %q", d, p)
			}
		}
	}
	return nil
}
