package git

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// FuzzRequestLine feeds arbitrary request lines (and the same bytes as a
// whole stream opening) to the parsers: they must never panic, and what
// they accept must name a known service and a repository inside the root.
func FuzzRequestLine(f *testing.F) {
	for _, s := range []string{
		"git-upload-pack /team/app.git\x00host=node.example\x00",
		"git-upload-pack /team/app.git\x00host=node.example:4433\x00\x00version=2\x00",
		"git-receive-pack /p\x00\x00version=1\x00object-format=sha1\x00",
		"git-upload-archive /a/b/c.git\x00host=x\x00",
		"git-upload-pack /../../etc\x00host=x\x00",
		"git-upload-pack //etc\x00",
		"git-upload-pack /a.git/b.git\x00",
		"git-upload-pack /p\n",
		"git-upload-pack /p\x00host=x\x00junk",
		`{"service":"git-upload-pack","path":"/team/app.git","protocol":"version=2"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		check := func(how string, r *request) {
			if !validService(r.service) {
				t.Fatalf("%s: accepted service %q", how, r.service)
			}
			if r.version < 0 || r.version > 2 {
				t.Fatalf("%s: version %d", how, r.version)
			}
			if len(r.repo) == 0 || len(r.repo) > maxRepoName || strings.HasPrefix(r.repo, "/") || strings.HasSuffix(r.repo, "/") {
				t.Fatalf("%s: repository %q", how, r.repo)
			}
			for _, e := range strings.Split(r.repo, "/") {
				if e == "" || e == "." || e == ".." || strings.HasSuffix(e, ".git") {
					t.Fatalf("%s: repository %q has element %q", how, r.repo, e)
				}
			}
			again, err := repoName(r.repo)
			if err != nil || again != r.repo {
				t.Fatalf("%s: canonical name %q reads back as %q, %v", how, r.repo, again, err)
			}
		}
		if r, err := parseRequestLine(in); err == nil {
			check("request line", r)
		}
		var stream []byte
		if len(in) > 0 && in[0] == '{' {
			stream = append(append(stream, in...), '\n')
		} else if len(in) <= pktDataMax {
			stream = appendPkt(nil, in)
		}
		if r, err := readRequest(bufio.NewReaderSize(bytes.NewReader(stream), 64<<10)); err == nil {
			check("framed", r)
		}
		if r, err := readRequest(bufio.NewReaderSize(bytes.NewReader(in), 64<<10)); err == nil {
			check("stream", r)
		}
	})
}
