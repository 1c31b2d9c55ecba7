package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the module's root (integration/ is one level down).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The core never depends on the plugin SDK, and plugins depend on nothing
// of the module but the SDK and proto/ (docs/architecture.md D15): the
// boundary holds in the import graph.
func TestImportBoundaries(t *testing.T) {
	root := repoRoot(t)
	golist := func(args ...string) *exec.Cmd {
		cmd := exec.Command("go", append([]string{"list"}, args...)...)
		cmd.Dir = root
		return cmd
	}
	out, err := golist("-deps", "./core/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "alknet.dev/alknet/plugins/") || strings.HasPrefix(p, "alknet.dev/alknet/cmd/") {
			t.Errorf("core depends on %s", p)
		}
	}
	out, err = golist("-f", `{{.ImportPath}}: {{join .Imports " "}}`, "./plugins/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ": ")
		if strings.HasPrefix(pkg, "alknet.dev/alknet/plugins/sdk/sdktest") {
			continue // a test helper: it runs the core's machinery on purpose
		}
		for _, imp := range strings.Fields(imports) {
			if strings.HasPrefix(imp, "alknet.dev/alknet/") && !strings.HasPrefix(imp, "alknet.dev/alknet/plugins/") && !strings.HasPrefix(imp, "alknet.dev/alknet/proto/") {
				t.Errorf("%s imports %s", pkg, imp)
			}
			own := strings.Join(strings.Split(pkg, "/")[:4], "/") // alknet.dev/alknet/plugins/<name>
			if strings.HasPrefix(imp, "alknet.dev/alknet/plugins/") && !strings.HasPrefix(imp, "alknet.dev/alknet/plugins/sdk") && imp != own && !strings.HasPrefix(imp, own+"/") {
				t.Errorf("%s imports another plugin, %s", pkg, imp)
			}
		}
	}
}

var docRef = regexp.MustCompile(`[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b`)

// Every document the code, the docs and the READMEs cite is in the
// repository (docs/architecture.md D13): a reference resolves from the
// repository's root, from the citing file's directory, or — for the
// specifications — from docs/.
func TestDocumentReferencesResolve(t *testing.T) {
	root := repoRoot(t)
	checked := 0
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		ext := filepath.Ext(path)
		if (ext != ".go" && ext != ".md" && ext != ".proto") || strings.HasSuffix(path, ".pb.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, ref := range docRef.FindAllString(string(b), -1) {
			checked++
			if strings.HasPrefix(ref, "spec/") && !strings.HasPrefix(rel, "docs/") {
				t.Errorf("%s cites %s: the specifications are docs/%s", rel, ref, ref)
				continue
			}
			found := false
			for _, base := range []string{root, filepath.Dir(path), filepath.Join(root, "docs")} {
				if p := filepath.Join(base, ref); isInside(root, p) && exists(p) {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("%s cites %s, which is not in the repository", rel, ref)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 30 {
		t.Fatalf("only %d references found: is the walk broken?", checked)
	}
}

func isInside(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && !strings.HasPrefix(rel, "..")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
