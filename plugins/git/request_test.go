package git

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRepoName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/team/app.git", "team/app"},
		{"/team/app", "team/app"},
		{"team/app.git", "team/app"},
		{"proj", "proj"},
		{"proj.git", "proj"},
		{"/a/b/c_d-e.f", "a/b/c_d-e.f"},
		{"/x.gitx", "x.gitx"},
		{"/" + strings.Repeat("a", maxRepoName-1), strings.Repeat("a", maxRepoName-1)},
	} {
		got, err := repoName(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("repoName(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{
		"", "/", "//etc/passwd", "/../x", "/team/../x", "/team/./x", "/team//x", "/team/x/",
		"/.git", "/.hidden", "/team/.x", "/-x", "/team/-upload-pack=x", "/a.git/b", "/b.git.git",
		"/team/app git", "/team/app\x00", "/tëam", "~/x", "/x:y", "/x\\y", "/" + strings.Repeat("a", maxRepoName),
	} {
		if got, err := repoName(in); err == nil {
			t.Errorf("repoName(%q) = %q; want a refusal", in, got)
		} else if !errors.As(err, new(*requestError)) {
			t.Errorf("repoName(%q): %v is not a request error", in, err)
		}
	}
}

func TestParseRequestLine(t *testing.T) {
	for _, tc := range []struct {
		in      string
		service string
		repo    string
		version int
	}{
		{"git-upload-pack /team/app.git\x00host=node.example\x00", ServiceUploadPack, "team/app", 0},
		{"git-upload-pack /team/app.git\x00host=node.example:4433\x00\x00version=2\x00", ServiceUploadPack, "team/app", 2},
		{"git-upload-pack /team/app.git\x00\x00version=2\x00", ServiceUploadPack, "team/app", 2},
		{"git-upload-pack /team/app.git\x00HOST=x\x00\x00version=1\x00object-format=sha1\x00", ServiceUploadPack, "team/app", 1},
		{"git-upload-pack /team/app.git\x00host=x\x00\x00version=2\x00version=1\x00", ServiceUploadPack, "team/app", 2},
		{"git-upload-pack /team/app.git\x00host=x\x00\x00version=3\x00", ServiceUploadPack, "team/app", 0},
		{"git-upload-pack /team/app.git\x00host=x\x00\x00\x00", ServiceUploadPack, "team/app", 0},
		{"git-receive-pack /p\x00host=x\x00", ServiceReceivePack, "p", 0},
		{"git-upload-archive /p.git\x00host=x\x00", ServiceUploadArchive, "p", 0},
		{"git-upload-pack /p.git\n", ServiceUploadPack, "p", 0},
		{"git-upload-pack /p.git", ServiceUploadPack, "p", 0},
		{"git-upload-pack /p\x00host=x\x00\x00version=2\x00\n", ServiceUploadPack, "p", 2},
	} {
		r, err := parseRequestLine([]byte(tc.in))
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if r.service != tc.service || r.repo != tc.repo || r.version != tc.version || r.form != "daemon" {
			t.Errorf("%q: got %+v; want %s %s v%d", tc.in, r, tc.service, tc.repo, tc.version)
		}
	}
	for _, in := range []string{
		"",
		"git-upload-pack",
		"git-upload-pack\x00host=x\x00",
		"git-upload-pack  /p\x00",
		"git-shell /p\x00host=x\x00",
		"upload-pack /p\x00host=x\x00",
		"git-upload-pack /p\x00host=x",             // host not ended
		"git-upload-pack /p\x00hostx\x00",          // not host=
		"git-upload-pack /p\x00host=x\x00junk\x00", // junk after host without the second NUL
		"git-upload-pack /p\x00\x00version=2",      // parameter not ended
		"git-upload-pack /../etc\x00host=x\x00",    // bad name
		"git-upload-pack /p\n\x00host=x\x00",       // newline inside the path
		"git-upload-pack /p\n\n",                   // one newline is dropped, not two
	} {
		if r, err := parseRequestLine([]byte(in)); err == nil {
			t.Errorf("%q: accepted as %+v", in, r)
		}
	}
}

func TestParseHeader(t *testing.T) {
	r, err := parseHeader([]byte(`{"service":"git-upload-pack","path":"/team/app.git"}`))
	if err != nil || r.service != ServiceUploadPack || r.repo != "team/app" || r.path != "/team/app.git" || r.version != 0 || r.form != "ssh" {
		t.Fatalf("plain header: %+v %v", r, err)
	}
	r, err = parseHeader([]byte(`{"service":"git-receive-pack","path":"team/app.git","protocol":"version=2","later":1}`))
	if err != nil || r.service != ServiceReceivePack || r.repo != "team/app" || r.version != 2 {
		t.Fatalf("header with protocol: %+v %v", r, err)
	}
	for _, in := range []string{
		`{"service":"git-upload-pack"}`,
		`{"service":"git-shell","path":"/p"}`,
		`{"service":"git-upload-pack","path":"/p","protocol":"version=3"}`,
		`{"service":"git-upload-pack","path":"/p","protocol":"version=2:x"}`,
		`{"service":"git-upload-pack","path":"~/p"}`,
		`{"service":1}`,
		`{`,
	} {
		if r, err := parseHeader([]byte(in)); err == nil {
			t.Errorf("%s: accepted as %+v", in, r)
		}
	}
}

func TestReadRequest(t *testing.T) {
	read := func(b []byte) (*request, error) {
		return readRequest(bufio.NewReaderSize(bytes.NewReader(b), 64<<10))
	}
	r, err := read(appendPkt(nil, []byte("git-upload-pack /team/app.git\x00host=x\x00\x00version=2\x00")))
	if err != nil || r.repo != "team/app" || r.version != 2 {
		t.Fatalf("daemon request: %+v %v", r, err)
	}
	r, err = read([]byte("{\"service\":\"git-upload-pack\",\"path\":\"/team/app.git\"}\n0000"))
	if err != nil || r.repo != "team/app" {
		t.Fatalf("JSON header: %+v %v", r, err)
	}
	for name, in := range map[string][]byte{
		"flush first":        []byte("0000"),
		"not hex":            []byte("zzzzgit-upload-pack"),
		"length 3":           []byte("0003"),
		"too long":           []byte("fff1"),
		"header without end": []byte(`{"service":"git-upload-pack","path":"/p"}`),
		"header too long":    append([]byte(`{"service":"git-upload-pack","path":"`), bytes.Repeat([]byte("a"), maxHeaderLine+10)...),
	} {
		if r, err := read(in); err == nil {
			t.Errorf("%s: accepted as %+v", name, r)
		} else if !errors.As(err, new(*requestError)) {
			t.Errorf("%s: %v is not answered with an ERR line", name, err)
		}
	}
	// A stream that ends early is not a request (and gets no answer).
	for _, in := range [][]byte{nil, []byte("00"), []byte("0030git-upload-pack")} {
		if _, err := read(in); err == nil || errors.As(err, new(*requestError)) {
			t.Errorf("%q: %v; want a read error", in, err)
		}
	}
}

func TestPktLine(t *testing.T) {
	var b bytes.Buffer
	if err := writePkt(&b, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	_ = writeFlush(&b)
	if b.String() != "000ahello\n0000" {
		t.Fatalf("written %q", b.String())
	}
	buf := make([]byte, pktMax) // a whole line, length digits included
	p, kind, err := readPkt(&b, buf)
	if err != nil || kind != pktData || string(p) != "hello\n" {
		t.Fatalf("read %q %v %v", p, kind, err)
	}
	if _, kind, err := readPkt(&b, buf); err != nil || kind != pktFlush {
		t.Fatalf("flush: %v %v", kind, err)
	}
	if _, _, err := readPkt(&b, buf); !errors.Is(err, io.EOF) {
		t.Fatalf("at the end: %v", err)
	}
	for in, want := range map[string]pktKind{"0001": pktDelim, "0002": pktResponseEnd, "0004": pktData} {
		if _, kind, err := readPkt(strings.NewReader(in), buf); err != nil || kind != want {
			t.Errorf("%s: %v %v", in, kind, err)
		}
	}
	if _, _, err := readPkt(strings.NewReader("FFF0"), buf); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("upper-case length of a truncated line: %v", err)
	}
	long := appendPkt(nil, bytes.Repeat([]byte("x"), pktDataMax+100))
	if len(long) != pktMax || string(long[:4]) != "fff0" {
		t.Errorf("an over-long payload is cut to %d bytes, header %q", len(long), long[:4])
	}
	if got := string(errLine("no")); got != "000bERR no\n" {
		t.Errorf("errLine: %q", got)
	}
}
