package integration

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	gossh "golang.org/x/crypto/ssh"
)

// sftpEnv is a node serving the SFTP and SSH plugins, and clients: alice
// (sftp:read + sftp:write) and reader (sftp:read only), each with a vault
// of its own for alknet/sftp and an SSH key for the SSH plugin.
type sftpEnv struct {
	t         *testing.T
	node      *cli
	srv       *server
	plainAddr string
	knownHost string
	cfgPath   string
	users     map[string]*sftpUser
}

type sftpUser struct {
	cli *cli
	key string
}

func requireSFTP(t *testing.T) {
	t.Helper()
	for _, b := range []string{"alknet-plugin-sftp", "alknet-plugin-ssh"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			t.Fatalf("%s was not built: %v", b, err)
		}
	}
	if _, err := exec.LookPath("sftp"); err != nil {
		t.Fatalf("OpenSSH sftp not installed (.ci/run installs openssh-client): %v", err)
	}
}

// startSFTP starts a node; settings go under [plugins.sftp], extraPeers
// after the two peers (TOML).
func startSFTP(t *testing.T, settings, extraPeers string) *sftpEnv {
	t.Helper()
	requireSFTP(t)
	dir := t.TempDir()
	e := &sftpEnv{t: t, node: newCLI(t, nil), users: map[string]*sftpUser{}}
	e.plainAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	var peers strings.Builder
	for _, u := range []struct{ name, scopes string }{
		{"alice", `"ssh:sftp", "sftp:read", "sftp:write"`},
		{"reader", `"ssh:sftp", "sftp:read"`},
	} {
		c := newCLI(t, nil)
		c.ok("", "init", "--show-mnemonic-once")
		var id struct {
			Fingerprint string `json:"fingerprint"`
		}
		decodeJSON(t, "id --json", c.ok("", "id", "--json"), &id)
		key, pub := writeKey(t, dir, "id_"+u.name)
		e.users[u.name] = &sftpUser{cli: c, key: key}
		fmt.Fprintf(&peers, "[[auth.peers]]\npeer_id = %q\nfingerprints = [%q]\nssh_keys = [%q]\nscopes = [%s]\n\n",
			u.name, id.Fingerprint, gossh.FingerprintSHA256(pub), u.scopes)
	}
	cfg := fmt.Sprintf("[[listeners.plain]]\naddr = %q\nalpn = \"alknet/ssh\"\n\n[plugins.sftp]\n%s\n\n%s%s",
		e.plainAddr, settings, peers.String(), extraPeers)
	e.cfgPath = writeFile(t, filepath.Join(dir, "alknet.toml"), cfg, 0o600)
	e.node.ok("", "init", "--show-mnemonic-once")
	e.srv = startServe(t, e.node, "--config", e.cfgPath)
	hk := strings.TrimSpace(e.node.ok("", "vault", "derive", "m/74'/0'/1'/0'", "--public"))
	raw, err := hex.DecodeString(hk)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := gossh.NewPublicKey(ed25519.PublicKey(raw))
	if err != nil {
		t.Fatal(err)
	}
	e.knownHost = writeFile(t, filepath.Join(dir, "known_hosts"), "node "+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(pk)))+"\n", 0o600)
	return e
}

// home is the directory of user's own root on the node.
func (e *sftpEnv) home(user string) string { return filepath.Join(e.node.dataDir, "sftp", user) }

// sftpArgs are the stock client's arguments for one of the three ways in.
func (e *sftpEnv) sftpArgs(way, user string) []string {
	u := e.users[user]
	alknet := filepath.Join(binDir, "alknet")
	host, port, _ := net.SplitHostPort(e.srv.Addr)
	sshOpts := []string{"-F", "/dev/null", "-i", u.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + e.knownHost, "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=node",
		"-o", "ConnectTimeout=10"}
	switch way {
	case "alknet-sftp":
		return []string{"-D", fmt.Sprintf("%s --data-dir %s pipe --alpn alknet/sftp --peer %s %s %s", alknet, u.cli.dataDir, e.srv.FP, host, port)}
	case "ssh-proxycommand":
		proxy := fmt.Sprintf("%s --data-dir %s pipe --alpn alknet/ssh --peer %s %s %s", alknet, u.cli.dataDir, e.srv.FP, host, port)
		return append(sshOpts, "-o", "ProxyCommand="+proxy, user+"@node")
	case "ssh-plain-tcp":
		h, p, _ := net.SplitHostPort(e.plainAddr)
		return append(sshOpts, "-P", p, user+"@"+h)
	}
	e.t.Fatalf("unknown way %q", way)
	return nil
}

// sftp runs a batch of sftp commands in dir; it returns the transcript
// and the exit status (sftp -b stops at the first failing command unless
// it starts with '-').
func (e *sftpEnv) sftp(way, user, dir, batch string) (string, int) {
	return e.sftpT(e.t, way, user, dir, batch)
}

func (e *sftpEnv) sftpT(t *testing.T, way, user, dir, batch string) (string, int) {
	t.Helper()
	args := append([]string{"-b", "-"}, e.sftpArgs(way, user)...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sftp", args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(batch)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

func (e *sftpEnv) sftpOK(way, user, dir, batch string) string {
	return e.sftpOKT(e.t, way, user, dir, batch)
}

func (e *sftpEnv) sftpOKT(t *testing.T, way, user, dir, batch string) string {
	t.Helper()
	out, code := e.sftpT(t, way, user, dir, batch)
	if code != 0 {
		t.Fatalf("sftp (%s, %s) exit %d:\n%s", way, user, code, out)
	}
	return out
}

var sftpWays = []string{"alknet-sftp", "ssh-proxycommand", "ssh-plain-tcp"}

// writeRandom writes size pseudo-random bytes to path.
func writeRandom(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	if _, err := io.CopyN(f, r, size); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// 256 MiB put and get, byte-identical, then reput and reget resuming from
// half of the file, through each of the three ways a stock client reaches
// the handler.
func TestSFTPPutGetResume(t *testing.T) {
	e := startSFTP(t, "", "")
	src := t.TempDir()
	big := filepath.Join(src, "big.bin")
	writeRandom(t, big, 256<<20, 1)
	want := fileSum(t, big)
	for _, way := range sftpWays {
		t.Run(way, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.Link(big, filepath.Join(dir, "big.bin")); err != nil {
				t.Fatal(err)
			}
			remote := filepath.Join(e.home("alice"), way+".bin")
			e.sftpOKT(t, way, "alice", dir, fmt.Sprintf("put big.bin %s.bin\nget %s.bin back.bin\n", way, way))
			if got := fileSum(t, remote); got != want {
				t.Fatalf("put: the node's copy differs (sha256 %s, want %s)", got, want)
			}
			if got := fileSum(t, filepath.Join(dir, "back.bin")); got != want {
				t.Fatalf("get: the copy differs (sha256 %s, want %s)", got, want)
			}
			// reput: the node holds half of the file; the client sends the rest.
			if err := os.Truncate(remote, 128<<20); err != nil {
				t.Fatal(err)
			}
			e.sftpOKT(t, way, "alice", dir, fmt.Sprintf("reput big.bin %s.bin\n", way))
			if got := fileSum(t, remote); got != want {
				t.Fatalf("reput: the node's copy differs after resuming")
			}
			// reget: the local copy is half of the file.
			if err := os.Truncate(filepath.Join(dir, "back.bin"), 100<<20+12345); err != nil {
				t.Fatal(err)
			}
			e.sftpOKT(t, way, "alice", dir, fmt.Sprintf("reget %s.bin back.bin\n", way))
			if got := fileSum(t, filepath.Join(dir, "back.bin")); got != want {
				t.Fatalf("reget: the local copy differs after resuming")
			}
			if err := os.Remove(remote); err != nil {
				t.Fatal(err)
			}
		})
	}
	e.srv.waitLog("sftp session ended", "identity=alice", "bytes_written=268435456")
}

// The tree commands of OpenSSH's sftp, through each way in.
func TestSFTPTreeCommands(t *testing.T) {
	e := startSFTP(t, "", "")
	for _, way := range sftpWays {
		t.Run(way, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "hello.txt"), "hello, sftp\n", 0o644)
			d := "tree-" + way
			out := e.sftpOKT(t, way, "alice", dir, fmt.Sprintf(`mkdir %[1]s
put hello.txt %[1]s/a.txt
rename %[1]s/a.txt %[1]s/b.txt
chmod 640 %[1]s/b.txt
symlink b.txt %[1]s/link
ln %[1]s/b.txt %[1]s/hard
ls -l %[1]s
get %[1]s/link via-link.txt
df -h %[1]s
`, d))
			home := e.home("alice")
			if st, err := os.Stat(filepath.Join(home, d, "b.txt")); err != nil || st.Mode().Perm() != 0o640 {
				t.Fatalf("rename + chmod: %v %v\n%s", st, err, out)
			}
			if target, err := os.Readlink(filepath.Join(home, d, "link")); err != nil || target != "b.txt" {
				t.Fatalf("symlink: %q %v", target, err)
			}
			a, _ := os.Stat(filepath.Join(home, d, "b.txt"))
			b, err := os.Stat(filepath.Join(home, d, "hard"))
			if err != nil || !os.SameFile(a, b) {
				t.Fatalf("ln: not a hard link of b.txt: %v", err)
			}
			for _, want := range []string{"-rw-r-----    2", "b.txt", "hard", "lrwxrwxrwx", "link", "Size"} {
				if !strings.Contains(out, want) {
					t.Fatalf("ls -l / df -h output lacks %q:\n%s", want, out)
				}
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "via-link.txt")); string(got) != "hello, sftp\n" {
				t.Fatalf("get through the symlink: %q", got)
			}
			e.sftpOKT(t, way, "alice", dir, fmt.Sprintf("rm %[1]s/link\nrm %[1]s/hard\nrm %[1]s/b.txt\nrmdir %[1]s\n", d))
			if _, err := os.Stat(filepath.Join(home, d)); !os.IsNotExist(err) {
				t.Fatalf("rm + rmdir left %s: %v", d, err)
			}
		})
	}
}

// df -h shows the root's filesystem: with a byte quota, the quota.
func TestSFTPDfShowsTheRoot(t *testing.T) {
	e := startSFTP(t, `quota_bytes = "3GiB"`, "")
	dir := t.TempDir()
	out := e.sftpOK("alknet-sftp", "alice", dir, "df\n")
	// df prints 1K blocks: Size, Used, Avail, (root), %Capacity.
	lines := strings.Split(strings.TrimSpace(out), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 3 || fields[0] != fmt.Sprint(3<<20) {
		t.Fatalf("df with a 3 GiB quota: %q, want a size of %d KiB", out, 3<<20)
	}
	// Without a quota: the filesystem the root is on (as statfs reports it).
	e2 := startSFTP(t, "", "")
	out = e2.sftpOK("alknet-sftp", "alice", dir, "df\n")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	fields = strings.Fields(lines[len(lines)-1])
	var st syscall.Statfs_t
	if err := syscall.Statfs(e2.home("alice"), &st); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprint(st.Blocks * uint64(st.Frsize) / 1024); len(fields) < 1 || fields[0] != want {
		t.Fatalf("df: %q, want size %s KiB (statfs of the root)", out, want)
	}
}

// An identity with sftp:read only cannot change anything; nobody leaves
// their root through "..", absolute paths, symlinks or hard links.
func TestSFTPAccessAndEscapes(t *testing.T) {
	e := startSFTP(t, "", "")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.txt"), "data\n", 0o644)
	for _, way := range []string{"alknet-sftp", "ssh-plain-tcp"} {
		out, code := e.sftp(way, "reader", dir, "put f.txt\n")
		if code == 0 || !strings.Contains(out, "Permission denied") {
			t.Fatalf("%s: put without sftp:write: exit %d\n%s", way, code, out)
		}
		for _, cmd := range []string{"mkdir x", "rm f.txt", "rename a b", "chmod 600 a", "symlink a b", "ln a b"} {
			if out, code := e.sftp(way, "reader", dir, cmd+"\n"); code == 0 {
				t.Fatalf("%s: %s without sftp:write succeeded:\n%s", way, cmd, out)
			}
		}
	}
	// A file outside every root, and links to it planted in alice's root.
	secret := writeFile(t, filepath.Join(t.TempDir(), "secret"), "outside\n", 0o644)
	home := e.home("alice")
	e.sftpOK("alknet-sftp", "alice", dir, "put f.txt\n")
	if err := os.Symlink(secret, filepath.Join(home, "abs-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../../../../../../.."+secret, filepath.Join(home, "rel-link")); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"get ../../etc/passwd", "get /etc/passwd", "get abs-link", "get rel-link",
		"get ../../../../../../../../.." + secret, "ln " + secret + " hard"} {
		out, code := e.sftp("alknet-sftp", "alice", dir, cmd+" got\n")
		if code == 0 {
			t.Fatalf("%q succeeded:\n%s", cmd, out)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "got")); err == nil && bytes.Contains(b, []byte("outside")) {
			t.Fatalf("%q read a file outside the root", cmd)
		}
	}
	// Symlinks the client creates cannot point outside either.
	for _, cmd := range []string{"symlink ../../../etc/passwd up"} {
		if out, code := e.sftp("alknet-sftp", "alice", dir, cmd+"\n"); code == 0 || !strings.Contains(out, "ermission denied") {
			t.Fatalf("%q: exit %d\n%s", cmd, code, out)
		}
	}
	if _, err := os.Lstat(filepath.Join(home, "hard")); !os.IsNotExist(err) {
		t.Fatalf("a hard link to a file outside the root was created: %v", err)
	}
}

// A write past the quota fails with the quota message; sftp/usage reports
// what the identity stores.
func TestSFTPQuota(t *testing.T) {
	e := startSFTP(t, "quota_bytes = \"1MiB\"\nquota_files = 3", "")
	dir := t.TempDir()
	writeRandom(t, filepath.Join(dir, "small.bin"), 300<<10, 2)
	writeRandom(t, filepath.Join(dir, "big.bin"), 2<<20, 3)
	e.sftpOK("alknet-sftp", "alice", dir, "put small.bin\n")
	// OpenSSH's sftp prints only the status code's text ...
	out, code := e.sftp("ssh-plain-tcp", "alice", dir, "put big.bin\n")
	if code == 0 || !strings.Contains(out, `write remote "/big.bin": Failure`) {
		t.Fatalf("put past the 1 MiB quota: exit %d\n%s", code, out)
	}
	e.srv.waitLog("sftp write refused", "identity=alice", "quota exceeded: bytes would pass this identity's limit of 1 MiB")
	// ... clients that show the server's message (pkg/sftp, WinSCP,
	// FileZilla) show the quota message.
	c := e.goClient("alice")
	f, err := c.Create("/other.bin")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(make([]byte, 2<<20))
	if err == nil || !strings.Contains(err.Error(), "quota exceeded: bytes would pass this identity's limit of 1 MiB") {
		t.Fatalf("write past the quota through pkg/sftp: %v", err)
	}
	_ = f.Close()
	_ = c.Remove("/other.bin")
	// The file quota: small.bin and what was written of big.bin are two
	// files; a third is fine, a fourth refused.
	if _, err := c.Create("/three"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create("/four"); err == nil || !strings.Contains(err.Error(), "quota exceeded: files would pass this identity's limit of 3 files") {
		t.Fatalf("a fourth file past quota_files = 3: %v", err)
	}
	if err := c.Remove("/three"); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(e.home("alice"), "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var u struct {
		Identity   string `json:"identity"`
		Bytes      int64  `json:"bytes"`
		Files      int64  `json:"files"`
		QuotaBytes int64  `json:"quota_bytes"`
		QuotaFiles int64  `json:"quota_files"`
	}
	alice := e.users["alice"].cli
	res := alice.ok("", "call", "--peer", e.srv.FP, e.srv.Addr, "/sftp/usage", "{}")
	if err := json.Unmarshal([]byte(res), &u); err != nil {
		t.Fatalf("sftp/usage: %v: %s", err, res)
	}
	if u.Identity != "alice" || u.QuotaBytes != 1<<20 || u.QuotaFiles != 3 || u.Files != 2 || u.Bytes != 300<<10+int64(st.Size()) {
		t.Fatalf("sftp/usage: %+v", u)
	}
}

// goClient is a pkg/sftp client on an alknet/sftp stream opened by
// `alknet pipe` as user.
func (e *sftpEnv) goClient(user string) *sftp.Client {
	e.t.Helper()
	host, port, _ := net.SplitHostPort(e.srv.Addr)
	cmd := exec.Command(filepath.Join(binDir, "alknet"), "--data-dir", e.users[user].cli.dataDir, "pipe", "--alpn", "alknet/sftp", "--peer", e.srv.FP, host, port)
	in, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	c, err := sftp.NewClientPipe(out, in)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		e.t.Fatalf("sftp over alknet pipe: %v", err)
	}
	e.t.Cleanup(func() {
		_ = c.Close()
		_ = in.Close()
		_ = cmd.Wait()
	})
	return c
}

// sshfs mounts the node over SSH: a tree copied in, a file edited in place
// (truncate + write on an O_RDWR handle, and sed -i's rename over it) and
// the mount compares equal to the original, before and after unmounting.
func TestSSHFSMount(t *testing.T) {
	for _, b := range []string{"sshfs", "fusermount3", "diff"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not installed (.ci/run installs sshfs and fuse3): %v", b, err)
		}
	}
	e := startSFTP(t, "", "")
	u := e.users["alice"]
	host, port, _ := net.SplitHostPort(e.srv.Addr)
	proxy := fmt.Sprintf("%s --data-dir %s pipe --alpn alknet/ssh --peer %s %s %s", filepath.Join(binDir, "alknet"), u.cli.dataDir, e.srv.FP, host, port)
	mnt := t.TempDir()
	cmd := exec.Command("sshfs", "-F", "/dev/null",
		"-o", "IdentityFile="+u.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile="+e.knownHost, "-o", "StrictHostKeyChecking=yes", "-o", "HostKeyAlias=node",
		"-o", "ProxyCommand="+proxy, "alice@node:/", mnt)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sshfs: %v\n%s", err, out)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
				t.Errorf("fusermount3 -u: %v\n%s", err, out)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)

	// A tree: nested directories, sizes around the 255 KiB request size,
	// a relative symlink, modes.
	src := filepath.Join(t.TempDir(), "tree")
	for i, size := range []int64{0, 1, 4095, 255 << 10, 256<<10 + 1, 5<<20 + 3} {
		d := filepath.Join(src, fmt.Sprintf("d%d", i%3), "sub")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		writeRandom(t, filepath.Join(d, fmt.Sprintf("f%d.bin", i)), size, uint64(10+i))
	}
	writeFile(t, filepath.Join(src, "notes.txt"), strings.Repeat("a line of notes\n", 2000), 0o600)
	if err := os.Symlink("notes.txt", filepath.Join(src, "notes.link")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", src, filepath.Join(mnt, "tree")).CombinedOutput(); err != nil {
		t.Fatalf("cp -a into the mount: %v\n%s", err, out)
	}
	// Edit in place, the same way on both sides: truncate + write through
	// one O_RDWR handle, and sed -i (a new file renamed over the old one).
	for _, root := range []string{src, filepath.Join(mnt, "tree")} {
		f, err := os.OpenFile(filepath.Join(root, "d2", "sub", "f5.bin"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(1 << 20); err != nil {
			t.Fatalf("truncate an open file in %s: %v", root, err)
		}
		if _, err := f.WriteAt([]byte("edited in place"), 4096); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(bytes.Repeat([]byte{7}, 300<<10), 900<<10); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("close after editing in %s: %v", root, err)
		}
		if out, err := exec.Command("sed", "-i", "s/notes/NOTES/", filepath.Join(root, "notes.txt")).CombinedOutput(); err != nil {
			t.Fatalf("sed -i in %s: %v\n%s", root, err, out)
		}
	}
	diff := func(a, b string) {
		t.Helper()
		if out, err := exec.Command("diff", "-r", "--no-dereference", a, b).CombinedOutput(); err != nil {
			t.Fatalf("diff -r %s %s: %v\n%s", a, b, err, out)
		}
	}
	diff(src, filepath.Join(mnt, "tree"))
	unmount()
	diff(src, filepath.Join(e.home("alice"), "tree"))
}

// Garbage and an oversized packet on an alknet/sftp stream end that
// session only: another session keeps working and the plugin stays up.
func TestSFTPBadPacketsIsolated(t *testing.T) {
	e := startSFTP(t, "", "")
	c := e.goClient("alice")
	if err := c.Mkdir("/kept"); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(e.srv.Addr)
	for name, in := range map[string][]byte{
		"oversized": {0x00, 0x10, 0x00, 0x00, 1, 0, 0, 0, 3},
		"garbage":   []byte("GET / HTTP/1.1\r\nHost: node\r\n\r\n"),
	} {
		cmd := exec.Command(filepath.Join(binDir, "alknet"), "--data-dir", e.users["alice"].cli.dataDir, "pipe", "--alpn", "alknet/sftp", "--peer", e.srv.FP, host, port)
		cmd.Stdin = bytes.NewReader(in)
		out, _ := cmd.CombinedOutput()
		if bytes.Contains(out, []byte{2}) {
			t.Fatalf("%s: the node answered with an SFTP VERSION: %q", name, out)
		}
	}
	e.srv.waitLog("sftp session ended: bad packet", "larger than the 262144-byte limit")
	if _, err := c.Stat("/kept"); err != nil {
		t.Fatalf("the other session after a bad one: %v", err)
	}
	if strings.Contains(e.srv.logs.String(), "plugin process exited") {
		t.Fatalf("the plugin restarted:\n%s", e.srv.logs)
	}
}
