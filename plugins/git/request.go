package git

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Services a stream may ask for.
const (
	ServiceUploadPack    = "git-upload-pack"    // fetch and clone (git:read)
	ServiceReceivePack   = "git-receive-pack"   // push (git:write; git:create for a new repository)
	ServiceUploadArchive = "git-upload-archive" // git archive --remote (git:read)
)

// maxRepoName bounds a repository name as the client sends it.
const maxRepoName = 200

// maxHeaderLine bounds the SSH bridge's JSON header line.
const maxHeaderLine = 4096

// request is what a stream asks for.
type request struct {
	service string
	// path is the repository as the client sent it; repo is its
	// canonical name (see repoName).
	path string
	repo string
	// version is the git protocol version the client asked for (0, 1 or
	// 2; 0 also when it asked for none).
	version int
	// form is how the request arrived: "daemon" or "ssh".
	form string
}

// requestError is a request the plugin refuses; its message goes to the
// client as an ERR line.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{msg: fmt.Sprintf(format, args...)}
}

// readRequest reads the opening of a stream: the SSH bridge's JSON header
// line when the first byte is '{', a git-daemon request pkt-line
// otherwise (a pkt-line starts with a hex digit, never '{').
func readRequest(br *bufio.Reader) (*request, error) {
	first, err := br.Peek(1)
	if err != nil {
		return nil, err
	}
	if first[0] == '{' {
		line, err := readLine(br, maxHeaderLine)
		if err != nil {
			return nil, err
		}
		return parseHeader(line)
	}
	payload, kind, err := readPkt(br, nil)
	if err != nil {
		if errors.Is(err, errPktLength) {
			return nil, badRequest("expected a git-daemon request pkt-line (\"git-upload-pack /<repo>\\0host=<host>\\0\") or a JSON header line: %v", err)
		}
		return nil, err
	}
	if kind != pktData {
		return nil, badRequest("expected a git-daemon request pkt-line, got a special packet")
	}
	return parseRequestLine(payload)
}

// readLine reads up to and without '\n', at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max+1 {
			return nil, badRequest("the JSON header line is longer than %d bytes", max)
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, badRequest("the JSON header line has no end (a newline)")
		default:
			return nil, err
		}
	}
}

// header is the SSH bridge's opening line (docs/spec/handlers.md, SSH,
// Bridges): {"service":"git-upload-pack","path":"/team/app.git"}, with
// "protocol":"version=2" when the SSH client sent GIT_PROTOCOL.
type header struct {
	Service  string `json:"service"`
	Path     string `json:"path"`
	Protocol string `json:"protocol,omitempty"`
}

// parseHeader reads the JSON header of a bridged stream. Unknown fields
// are ignored, so an SSH plugin of a later version still reaches this one.
func parseHeader(line []byte) (*request, error) {
	var h header
	if err := json.Unmarshal(line, &h); err != nil {
		return nil, badRequest("the JSON header line does not parse: %v", err)
	}
	if !validService(h.Service) {
		return nil, badRequest("unknown service %q: want git-upload-pack, git-receive-pack or git-upload-archive", clip(h.Service))
	}
	r := &request{service: h.Service, path: h.Path, form: "ssh"}
	switch h.Protocol {
	case "", "version=0":
	case "version=1":
		r.version = 1
	case "version=2":
		r.version = 2
	default:
		return nil, badRequest("unsupported protocol %q: want version=0, version=1 or version=2", clip(h.Protocol))
	}
	repo, err := repoName(h.Path)
	if err != nil {
		return nil, err
	}
	r.repo = repo
	return r, nil
}

// parseRequestLine reads a git-daemon request, the payload of the first
// pkt-line of a direct stream, as git's daemon.c does:
//
//	git-upload-pack /team/app.git\0host=node.example\0\0version=2\0
//
// The host parameter is optional and not used (a node serves one set of
// repositories). Extra parameters follow a second NUL, each ended by
// NUL; version=N asks for protocol version N (the highest one counts, as
// in git), others are ignored.
func parseRequestLine(p []byte) (*request, error) {
	p = bytes.TrimSuffix(p, []byte("\n")) // as git daemon does
	head, rest, _ := bytes.Cut(p, []byte{0})
	service, path, ok := bytes.Cut(head, []byte(" "))
	if !ok {
		return nil, badRequest("bad request line %q: want \"git-upload-pack /<repo>\"", clip(string(head)))
	}
	if !validService(string(service)) {
		return nil, badRequest("unknown service %q: want git-upload-pack, git-receive-pack or git-upload-archive", clip(string(service)))
	}
	r := &request{service: string(service), path: string(path), form: "daemon"}
	if len(rest) > 0 && rest[0] != 0 {
		// host=<host>\0
		if len(rest) < 5 || !strings.EqualFold(string(rest[:5]), "host=") {
			return nil, badRequest("bad request line: after the repository comes host=<host> or extra parameters")
		}
		end := bytes.IndexByte(rest, 0)
		if end < 0 {
			return nil, badRequest("bad request line: the host parameter is not ended by NUL")
		}
		rest = rest[end+1:]
		if len(rest) > 0 && rest[0] != 0 {
			return nil, badRequest("bad request line: after host=<host> come extra parameters, after a NUL")
		}
	}
	if len(rest) > 0 {
		// \0 then param\0 param\0 …
		rest = rest[1:]
		for len(rest) > 0 {
			arg, tail, ended := bytes.Cut(rest, []byte{0})
			if !ended {
				return nil, badRequest("bad request line: an extra parameter is not ended by NUL")
			}
			if v, ok := bytes.CutPrefix(arg, []byte("version=")); ok {
				if n, err := strconv.Atoi(string(v)); err == nil && n >= 0 && n <= 2 && n > r.version {
					r.version = n
				}
			}
			rest = tail
		}
	}
	repo, err := repoName(r.path)
	if err != nil {
		return nil, err
	}
	r.repo = repo
	return r, nil
}

func validService(s string) bool {
	return s == ServiceUploadPack || s == ServiceReceivePack || s == ServiceUploadArchive
}

// repoName checks a repository path as a client sends it and returns the
// canonical name: one leading '/' and one trailing ".git" dropped
// ("/team/app.git" → "team/app"); stored as <root>/<name>.git.
//
// The path is at most maxRepoName bytes of [A-Za-z0-9._/-]; its elements
// are not empty, do not start with '.' or '-' (so no "." or ".." and no
// option-like names) and, after the suffix is dropped, do not end in
// ".git" (a repository never sits inside another, and "x" and "x.git"
// are the same name).
func repoName(p string) (string, error) {
	if p == "" {
		return "", badRequest("no repository named: ask for /<name>, e.g. /team/app.git")
	}
	if len(p) > maxRepoName {
		return "", badRequest("repository name longer than %d bytes", maxRepoName)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '/' || c == '-') {
			return "", badRequest("repository name %q: use letters, digits and . _ - / only", clip(p))
		}
	}
	name := strings.TrimPrefix(p, "/")
	if strings.HasPrefix(name, "/") {
		return "", badRequest("repository name %q: not an absolute path; ask for /<name>", p)
	}
	name = strings.TrimSuffix(name, ".git")
	if name == "" {
		return "", badRequest("repository name %q: no name", p)
	}
	for _, e := range strings.Split(name, "/") {
		switch {
		case e == "":
			return "", badRequest("repository name %q: empty path element", p)
		case e[0] == '.' || e[0] == '-':
			return "", badRequest("repository name %q: an element may not start with '.' or '-'", p)
		case strings.HasSuffix(e, ".git"):
			return "", badRequest("repository name %q: only the last element may end in .git", p)
		}
	}
	return name, nil
}

// clip shortens client text for messages and logs.
func clip(s string) string { return clipN(s, 64) }

// clipN shortens s to max bytes.
func clipN(s string, max int) string {
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
