package trampoline

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	o, err := parse(strings.Fields("-ppid 7 -exec /run/exec/alknet-plugin-echo -nofile 64 -data 1024 -nproc 9 -uid 10 -gid 11 -cgroup /a -cgroup /b -- alknet-plugin-echo -x"))
	if err != nil {
		t.Fatal(err)
	}
	want := &options{ppid: 7, nofile: 64, nproc: 9, uid: 10, gid: 11, data: 1024, link: "/run/exec/alknet-plugin-echo",
		cgroups: []string{"/a", "/b"}, argv: []string{"alknet-plugin-echo", "-x"}}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got %+v\nwant %+v", o, want)
	}
	if o, err := parse([]string{"--", "p"}); err != nil || o.uid != -1 || o.gid != -1 || len(o.argv) != 1 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	for _, bad := range []string{"-ppid x -- p", "-nofile", "-what 1 -- p", "-ppid 1", ""} {
		if _, err := parse(strings.Fields(bad)); err == nil || !strings.Contains(err.Error(), "not by hand") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestDirBase(t *testing.T) {
	for in, want := range map[string][2]string{"/a/b/c": {"/a/b", "c"}, "/c": {"/", "c"}, "c": {".", "c"}} {
		if d, b := dirBase(in); d != want[0] || b != want[1] {
			t.Errorf("%s: %s %s", in, d, b)
		}
	}
}

// The package runs from an initializer ahead of the node's other packages
// only while it imports nothing that Go initializes after them.
func TestImportsOnlyEarlyPackages(t *testing.T) {
	allowed := map[string]bool{"errors": true, "os": true, "runtime": true, "strconv": true, "syscall": true}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[p] {
				t.Errorf("%s imports %s: the trampoline would wait for packages initialized after it (see the package comment)", f, p)
			}
		}
	}
}
