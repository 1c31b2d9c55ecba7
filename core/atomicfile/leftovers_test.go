package atomicfile

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// bothWays runs f once with unnamed temporary files (where the kernel has
// them) and once the named way other systems take.
func bothWays(t *testing.T, f func(t *testing.T)) {
	for _, anonymous := range []bool{true, false} {
		t.Run(fmt.Sprintf("anonymous=%v", anonymous), func(t *testing.T) {
			old := tryAnonymous
			tryAnonymous = anonymous
			t.Cleanup(func() { tryAnonymous = old })
			f(t)
		})
	}
}

func temps(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if isTemp(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// A process killed while it writes the vault must not leave the seed on
// disk under a name: where the kernel has unnamed files, nothing named
// exists while the data is written.
func TestWriteFileNamesNoTempWhileWriting(t *testing.T) {
	dir := t.TempDir()
	f, err := openAnonymous(dir)
	if err != nil {
		t.Skipf("no unnamed temporary files here (%v): WriteFile names its temporary file from the start", err)
	}
	f.Close()
	var seen []string
	ran := false
	testHookWritten = func() { seen, ran = temps(t, dir), true }
	t.Cleanup(func() { testHookWritten = nil })
	if err := WriteFile(filepath.Join(dir, "vault.json"), []byte(`{"seed":"secret"}`)); err != nil {
		t.Fatal(err)
	}
	if !ran {
		t.Fatal("the hook did not run")
	}
	if len(seen) != 0 {
		t.Fatalf("while the data was written the directory held %v", seen)
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Fatalf("after the write the directory holds %v", left)
	}
}

func TestWriteFileErrorLeavesNoTemp(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		dir := t.TempDir()
		// Renaming a file over a directory fails after the data is written.
		target := filepath.Join(dir, "vault.json")
		if err := os.Mkdir(target, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err := WriteFile(target, []byte("seed"))
		if err == nil || !strings.Contains(err.Error(), target) {
			t.Fatalf("write over a directory: %v", err)
		}
		if left := temps(t, dir); len(left) != 0 {
			t.Fatalf("a failed write left %v", left)
		}
	})
}

// A temporary file or staging directory whose process is gone is removed;
// one whose process is alive, anything that is not a temporary entry of
// this package, and symbolic links are kept.
func TestRemoveLeftoversRemovesOnlyAbandoned(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	abandonedFile := mk(".vault.json.tmp-abc123")
	abandonedDir := filepath.Join(dir, ".install.tmp-42")
	if err := os.MkdirAll(filepath.Join(abandonedDir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	keep := []string{mk("vault.json"), mk("vault.json.lock"), mk(".hidden")}
	link := filepath.Join(dir, ".link.tmp-1")
	if err := os.Symlink(keep[0], link); err != nil {
		t.Fatal(err)
	}
	liveDir, release, err := MkdirTemp(dir, "install")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	liveFile, err := createLocked(dir, "auth.json", func(dir, pattern string) (string, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return "", err
		}
		return f.Name(), f.Close()
	}, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer liveFile.Close()

	removed, err := RemoveLeftovers(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 || !contains(removed, abandonedFile) || !contains(removed, abandonedDir) {
		t.Fatalf("removed %v, want %s and %s", removed, abandonedFile, abandonedDir)
	}
	for _, p := range append(keep, link, liveDir, liveFile.Name()) {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	if removed, err := RemoveLeftovers(filepath.Join(dir, "missing")); err != nil || len(removed) != 0 {
		t.Fatalf("missing directory: %v %v", removed, err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Writers and cleaners run at once, as when every command cleans the data
// directory: no write fails and no write is lost.
func TestWriteFileWithConcurrentRemoveLeftovers(t *testing.T) {
	bothWays(t, func(t *testing.T) {
		dir := t.TempDir()
		stop := make(chan struct{})
		var cleaners sync.WaitGroup
		for range 2 {
			cleaners.Add(1)
			go func() {
				defer cleaners.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := RemoveLeftovers(dir); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		var writers sync.WaitGroup
		for w := range 4 {
			writers.Add(1)
			go func() {
				defer writers.Done()
				p := filepath.Join(dir, fmt.Sprintf("f%d", w))
				for i := range 100 {
					want := fmt.Sprint(i)
					if err := WriteFile(p, []byte(want)); err != nil {
						t.Error(err)
						return
					}
					if b, _ := os.ReadFile(p); string(b) != want {
						t.Errorf("%s holds %q, want %q", p, b, want)
						return
					}
				}
			}()
		}
		writers.Wait()
		close(stop)
		cleaners.Wait()
		if left := temps(t, dir); len(left) != 0 {
			t.Fatalf("left %v", left)
		}
	})
}

// The helper process writes like a command that is then killed with -9:
// it holds a temporary file and a staging directory until it dies.
func TestHelperHoldsTemporaries(t *testing.T) {
	dir := os.Getenv("ATOMICFILE_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process for TestKilledWriterLeftoversRemoved")
	}
	tryAnonymous = false
	f, err := createLocked(dir, "vault.json", func(dir, pattern string) (string, error) {
		f, err := os.CreateTemp(dir, pattern)
		if err != nil {
			return "", err
		}
		return f.Name(), f.Close()
	}, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if err := fill(f, []byte("seed in clear")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := MkdirTemp(dir, "install"); err != nil {
		t.Fatal(err)
	}
	fmt.Println("holding")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until killed
}

func TestKilledWriterLeftoversRemoved(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldsTemporaries$")
	cmd.Env = append(os.Environ(), "ATOMICFILE_HELPER_DIR="+dir)
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "holding" {
	}
	if len(temps(t, dir)) != 2 {
		t.Fatalf("helper holds %v", temps(t, dir))
	}
	// Alive: a cleaner must keep what it is writing.
	if removed, err := RemoveLeftovers(dir); err != nil || len(removed) != 0 {
		t.Fatalf("removed %v (%v) while their writer lives", removed, err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	removed, err := RemoveLeftovers(dir)
	if err != nil || len(removed) != 2 {
		t.Fatalf("after kill -9: removed %v, %v", removed, err)
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Fatalf("left %v", left)
	}
}
