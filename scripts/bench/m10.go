package main

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// git: stock git cloning and fetching a repository of 5,000 commits and
// 100 MiB of incompressible blobs (1,000 commits and 25 MiB with -short),
// made once per benchmark with git fast-import. Alknet's side is
// `bin/alknet serve` with the git plugin (and the SSH plugin on a
// [[listeners.plain]] TCP port), reached through bin/git-remote-alknet
// (alknet:// URLs, QUIC); the anchor is git over OpenSSH against the sshd
// of m5.go (startSSHD), and, for the -daemon rows, `git daemon` (git://,
// no encryption, no authentication). Every side speaks protocol v2: git
// asks for it by itself through alknet:// and SSH to the node, and the
// sshd anchor runs `GIT_PROTOCOL=version=2 git-upload-pack` (its
// configuration does not accept the GIT_PROTOCOL variable git sends). Each
// way in serves a copy of the repository of its own, so that the fetch
// rows add 40 commits to exactly what one client fetches. The figure is
// the wall time of the git process.
var m10 = []benchmark{
	{
		Name: "git-clone", Area: "git", Unit: "ms", HigherIsBetter: false, Goal: 1 / 1.1,
		Description: "`git clone --bare` of a repository of 5,000 commits and 100 MiB of incompressible blobs (1,000 and 25 MiB with -short), wall time: through git-remote-alknet (alknet://, QUIC) to the git plugin vs git over OpenSSH to sshd; ratio sshd/alknet, goal ≤ 1.1× sshd",
		Rounds:      3, ShortRounds: 2,
		Subject: variant{Label: alknetGitLabel, Start: gitVariant(startAlknetGit, gitClone)},
		Anchor:  variant{Label: gitAnchorLabel, Start: gitVariant(startGitAnchor, gitClone)},
		Also: []companion{
			{Name: "git-clone-ssh", Unit: "ms", HigherIsBetter: false, Goal: 1 / 1.1, Informational: true,
				Description: "as git-clone over SSH: the SSH plugin on a [[listeners.plain]] TCP port, bridged to the git plugin, vs the same sshd"},
			{Name: "git-clone-daemon", Unit: "ms", HigherIsBetter: false, Goal: 1 / 1.1, Informational: true,
				Description: "as git-clone through alknet:// vs `git daemon` (git://: no encryption, no authentication)"},
		},
	},
	{
		Name: "git-fetch-40", Area: "git", Unit: "ms", HigherIsBetter: false, Goal: 1 / 1.1,
		Description: "`git fetch` of 40 new commits (each a 4 KiB blob and a counter file) into a clone of the git-clone repository, wall time: through git-remote-alknet vs git over OpenSSH to sshd; ratio sshd/alknet, goal ≤ 1.1× sshd",
		Rounds:      7, ShortRounds: 3,
		Subject: variant{Label: alknetGitLabel, Start: gitVariant(startAlknetGit, gitFetch)},
		Anchor:  variant{Label: gitAnchorLabel, Start: gitVariant(startGitAnchor, gitFetch)},
		Also: []companion{
			{Name: "git-fetch-40-ssh", Unit: "ms", HigherIsBetter: false, Goal: 1 / 1.1, Informational: true,
				Description: "as git-fetch-40 over SSH through the SSH plugin's [[listeners.plain]] TCP port vs the same sshd"},
			{Name: "git-fetch-40-daemon", Unit: "ms", HigherIsBetter: false, Goal: 1 / 1.1, Informational: true,
				Description: "as git-fetch-40 through alknet:// vs `git daemon`"},
		},
	},
}

const (
	alknetGitLabel = "bin/alknet serve + git and ssh plugins; git through bin/git-remote-alknet (alknet://, QUIC) (-ssh rows: the SSH plugin's [[listeners.plain]] port)"
	gitAnchorLabel = "git over OpenSSH /usr/sbin/sshd -D -e, temporary config, 127.0.0.1 (-daemon rows: git daemon on 127.0.0.1)"
)

// gitRepoShape is the generated repository: commits commits, the first
// blobs of which each add a file of blobSize pseudo-random bytes.
func gitRepoShape(short bool) (commits, blobs, blobSize int) {
	if short {
		return 1000, 100, 256 << 10
	}
	return 5000, 400, 256 << 10
}

// gitTarget is one way a git client reaches one copy of the repository.
type gitTarget struct {
	label string
	url   string
	env   []string // git's environment
	// uploadPack, when set, is git's --upload-pack (the sshd anchor's
	// protocol v2).
	uploadPack string
	served     string // the bare repository the server serves
	work       string // the client's scratch directory
}

// gitSide is a started server side: its distinct targets, and which of
// them each row of the benchmark (main, -ssh, -daemon) measures.
type gitSide struct {
	targets []gitTarget
	rows    [3]int
	stop    func()
}

type gitMeasure func(ctx context.Context, e *env, t gitTarget, warmup bool) (float64, error)

// gitVariant starts a side and measures each of its targets once per
// round; the rows take their figures from them (a figure can serve two
// rows, from the same round).
func gitVariant(start func(ctx context.Context, e *env) (*gitSide, error), m gitMeasure) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		s, err := start(ctx, e)
		if err != nil {
			return nil, err
		}
		var also []float64
		return &instance{
			Warmup: func(ctx context.Context) error {
				for _, t := range s.targets {
					if _, err := m(ctx, e, t, true); err != nil {
						return err
					}
				}
				return nil
			},
			Measure: func(ctx context.Context) (float64, error) {
				figures := make([]float64, len(s.targets))
				for i, t := range s.targets {
					v, err := m(ctx, e, t, false)
					if err != nil {
						return 0, err
					}
					figures[i] = v
				}
				also = []float64{figures[s.rows[1]], figures[s.rows[2]]}
				return figures[s.rows[0]], nil
			},
			Also: func() []float64 { return also },
			Stop: s.stop,
		}, nil
	}
}

// gitClone is the wall time of `git clone --bare` from t, in ms; the
// clone must hold the served main.
func gitClone(ctx context.Context, _ *env, t gitTarget, _ bool) (float64, error) {
	dst := filepath.Join(t.work, "clone.git")
	_ = os.RemoveAll(dst)
	defer os.RemoveAll(dst)
	args := []string{"clone", "--bare", "-q"}
	if t.uploadPack != "" {
		args = append(args, "--upload-pack="+t.uploadPack)
	}
	start := time.Now()
	if _, err := runGit(ctx, t.env, t.work, append(args, t.url, dst)...); err != nil {
		return 0, fmt.Errorf("%s: %w", t.label, err)
	}
	d := time.Since(start)
	if err := sameRev(ctx, t, t.served, "refs/heads/main", dst, "refs/heads/main"); err != nil {
		return 0, err
	}
	return float64(d) / float64(time.Millisecond), nil
}

// gitFetch is the wall time of `git fetch` of 40 commits from t, in ms:
// the warm-up clones the repository (without a work tree), each round
// adds 40 commits to the served copy first.
func gitFetch(ctx context.Context, _ *env, t gitTarget, warmup bool) (float64, error) {
	clone := filepath.Join(t.work, "fetch")
	var up []string
	if t.uploadPack != "" {
		up = []string{"--upload-pack=" + t.uploadPack}
	}
	if warmup {
		_ = os.RemoveAll(clone)
		args := append(append([]string{"clone", "-q", "--no-checkout"}, up...), t.url, clone)
		if _, err := runGit(ctx, t.env, t.work, args...); err != nil {
			return 0, fmt.Errorf("%s: %w", t.label, err)
		}
		return 0, nil
	}
	if err := addCommits(ctx, t.env, t.served, 40); err != nil {
		return 0, fmt.Errorf("%s: add 40 commits to %s: %w", t.label, t.served, err)
	}
	start := time.Now()
	if _, err := runGit(ctx, t.env, clone, append(append([]string{"fetch", "-q"}, up...), "origin")...); err != nil {
		return 0, fmt.Errorf("%s: %w", t.label, err)
	}
	d := time.Since(start)
	if err := sameRev(ctx, t, t.served, "refs/heads/main", clone, "refs/remotes/origin/main"); err != nil {
		return 0, err
	}
	return float64(d) / float64(time.Millisecond), nil
}

// sameRev checks that the client's ref names the served ref's commit.
func sameRev(ctx context.Context, t gitTarget, served, servedRef, client, clientRef string) error {
	want, err := runGit(ctx, t.env, served, "rev-parse", servedRef)
	if err != nil {
		return err
	}
	got, err := runGit(ctx, t.env, client, "rev-parse", clientRef)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s: the client's %s is %s, the server's %s %s", t.label, clientRef, strings.TrimSpace(got), servedRef, strings.TrimSpace(want))
	}
	return nil
}

// runGit runs git in dir and returns its stdout.
func runGit(ctx context.Context, env []string, dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, indent(stderr.String()))
	}
	return stdout.String(), nil
}

// gitEnv is a git client's environment: nothing of the user's
// configuration (HOME is home, no system configuration), no SSH agent,
// ./bin first on PATH (git-remote-alknet), and extra.
func gitEnv(home string, extra ...string) []string {
	env := []string{"PATH=" + filepath.Join(moduleRoot(), "bin") + string(os.PathListSeparator) + os.Getenv("PATH")}
	for _, kv := range sshClientEnv(filepath.Join(home, ".config")) {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "GIT_") {
			env = append(env, kv)
		}
	}
	env = append(env, "HOME="+home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@example.com", "GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@example.com")
	return append(env, extra...)
}

// --- the repository ---

// gitSource is the generated repository, shared by the sides of a
// benchmark: the first acquire makes it, the last release removes it.
var gitSource struct {
	mu   sync.Mutex
	refs int
	dir  string
}

// acquireGitRepo returns the generated bare repository.
func acquireGitRepo(ctx context.Context, short bool) (string, error) {
	gitSource.mu.Lock()
	defer gitSource.mu.Unlock()
	if gitSource.refs == 0 {
		dir, err := os.MkdirTemp("", "alknet-bench-git-")
		if err != nil {
			return "", err
		}
		repo := filepath.Join(dir, "source.git")
		commits, blobs, size := gitRepoShape(short)
		if err := makeGitRepo(ctx, repo, commits, blobs, size); err != nil {
			_ = os.RemoveAll(dir)
			return "", err
		}
		gitSource.dir = dir
	}
	gitSource.refs++
	return filepath.Join(gitSource.dir, "source.git"), nil
}

func releaseGitRepo() {
	gitSource.mu.Lock()
	defer gitSource.mu.Unlock()
	if gitSource.refs--; gitSource.refs == 0 {
		_ = os.RemoveAll(gitSource.dir)
	}
}

// makeGitRepo writes a bare repository with git fast-import: commits
// commits on main, each changing a counter file, the first blobs of them
// adding a file of blobSize pseudo-random bytes each.
func makeGitRepo(ctx context.Context, dir string, commits, blobs, blobSize int) error {
	env := gitEnv(filepath.Dir(dir))
	if _, err := runGit(ctx, env, filepath.Dir(dir), "init", "-q", "--bare", "-b", "main", dir); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'b', 'e', 'n', 'c', 'h'})
	blob := make([]byte, blobSize)
	when := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	return fastImport(ctx, env, dir, func(w *bufio.Writer) {
		for i := range commits {
			msg := fmt.Sprintf("commit %d\n", i)
			fmt.Fprintf(w, "commit refs/heads/main\ncommitter bench <bench@example.com> %d +0000\ndata %d\n%s", when+int64(i), len(msg), msg)
			counter := fmt.Sprintf("%d\n", i)
			fmt.Fprintf(w, "M 100644 inline counter.txt\ndata %d\n%s\n", len(counter), counter)
			if i < blobs {
				_, _ = rng.Read(blob)
				fmt.Fprintf(w, "M 100644 inline data/%04d.bin\ndata %d\n", i, len(blob))
				_, _ = w.Write(blob)
				_ = w.WriteByte('\n')
			}
			_ = w.WriteByte('\n')
		}
	})
}

// addCommits adds n commits to main of the bare repository dir, each
// writing a 4 KiB random file and the counter.
func addCommits(ctx context.Context, env []string, dir string, n int) error {
	blob := make([]byte, 4<<10)
	now := time.Now().Unix()
	return fastImport(ctx, env, dir, func(w *bufio.Writer) {
		for i := range n {
			msg := fmt.Sprintf("fetch round commit %d\n", i)
			fmt.Fprintf(w, "commit refs/heads/main\ncommitter bench <bench@example.com> %d +0000\ndata %d\n%s", now, len(msg), msg)
			if i == 0 {
				fmt.Fprintf(w, "from refs/heads/main^0\n")
			}
			_, _ = crand.Read(blob)
			counter := fmt.Sprintf("%d %d\n", now, i)
			fmt.Fprintf(w, "M 100644 inline counter.txt\ndata %d\n%s\n", len(counter), counter)
			fmt.Fprintf(w, "M 100644 inline fetch/%d-%d.bin\ndata %d\n", now, i, len(blob))
			_, _ = w.Write(blob)
			_, _ = w.WriteString("\n\n")
		}
	})
}

// fastImport runs `git fast-import` in the bare repository dir on the
// stream write writes.
func fastImport(ctx context.Context, env []string, dir string, write func(w *bufio.Writer)) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", "fast-import", "--quiet")
	cmd.Dir, cmd.Env = dir, env
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	w := bufio.NewWriterSize(in, 1<<20)
	write(w)
	werr := w.Flush()
	_ = in.Close()
	if err := errors.Join(cmd.Wait(), werr); err != nil {
		return fmt.Errorf("git fast-import in %s: %v\n%s", dir, err, indent(stderr.String()))
	}
	return nil
}

// copyRepo makes dst a copy of the bare repository src (its objects hard
// linked: they never change).
func copyRepo(ctx context.Context, env []string, src, dst string) error {
	_, err := runGit(ctx, env, filepath.Dir(dst), "clone", "-q", "--bare", "--local", src, dst)
	return err
}

// --- the alknet node ---

// startAlknetGit starts `alknet serve` with the git and SSH plugins alone
// (a [[listeners.plain]] TCP port for alknet/ssh), two copies of the
// repository in the git plugin's root, and a client whose vault identity
// and SSH key are one peer with git:read and git:write.
func startAlknetGit(ctx context.Context, e *env) (*gitSide, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, fmt.Errorf("%v: install git for the git rows", err)
	}
	bin, err := alknetBinary()
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"alknet-plugin-git", "alknet-plugin-ssh", "git-remote-alknet"} {
		if st, err := os.Stat(filepath.Join(filepath.Dir(bin), name)); err != nil || st.IsDir() {
			return nil, fmt.Errorf("%s not found: run `make build` first (make bench does)", filepath.Join(filepath.Dir(bin), name))
		}
	}
	others, err := otherPlugins()
	if err != nil {
		return nil, err
	}
	src, err := acquireGitRepo(ctx, e.short)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "alknet-bench-gitnode-")
	if err != nil {
		releaseGitRepo()
		return nil, err
	}
	h := &nodeHome{root: root}
	fail := func(err error) (*gitSide, error) {
		h.remove()
		releaseGitRepo()
		return nil, err
	}
	xdg, client, home, repos := filepath.Join(root, "xdg"), filepath.Join(root, "client"), filepath.Join(root, "home"), filepath.Join(root, "repos")
	for _, dir := range []string{xdg, home, repos} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fail(err)
		}
	}
	env := gitEnv(home, "ALKNET_DATA_DIR="+client)
	for _, name := range []string{"big-1.git", "big-2.git"} {
		if err := copyRepo(ctx, env, src, filepath.Join(repos, name)); err != nil {
			return fail(err)
		}
	}
	fp, err := benchClient{bin: bin, dataDir: client, xdg: xdg}.identity(ctx)
	if err != nil {
		return fail(err)
	}
	key, err := writeClientKey(filepath.Join(root, "client_ed25519"))
	if err != nil {
		return fail(err)
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return fail(err)
	}
	config := fmt.Sprintf("[[auth.peers]]\npeer_id = \"bench-admin\"\nfingerprints = [%q]\nscopes = [\"admin\"]\n\n"+
		"[[auth.peers]]\npeer_id = \"bench-git\"\nfingerprints = [%q]\nssh_keys = [%q]\nscopes = [\"git:read\", \"git:write\"]\n\n"+
		"[[listeners.plain]]\naddr = \"127.0.0.1:%d\"\nalpn = \"alknet/ssh\"\n\n"+
		"[plugins.git]\nroot = %s\n\n[plugins.echo]\ndisabled = true\n",
		benchKey().fp, fp, key.fp, port, strconv.Quote(repos))
	config += disabledExcept(others, "git", "ssh")
	if err := os.WriteFile(h.configFile(), []byte(config), 0o600); err != nil {
		return fail(err)
	}
	p, err := h.serve(ctx)
	if err != nil {
		return fail(err)
	}
	n := &node{home: h, proc: p, fp: p.fp, addr: p.addr}
	stop := func() {
		n.close()
		releaseGitRepo()
	}
	if err := pluginsReady(ctx, n, "git", "ssh"); err != nil {
		stop()
		return nil, fmt.Errorf("%w\n%s", err, p.logs)
	}
	ssh, _, err := sshTools()
	if err != nil {
		stop()
		return nil, err
	}
	sshCommand := shellWords(append([]string{ssh}, sshClientOptions(key.file)...))
	side := &gitSide{rows: [3]int{0, 1, 0}, stop: stop}
	for i, t := range []gitTarget{
		{label: "alknet:// " + n.addr, url: fmt.Sprintf("alknet://%s@%s/big-1", n.fp, n.addr), env: env},
		{label: fmt.Sprintf("ssh to the SSH plugin on 127.0.0.1:%d", port), url: fmt.Sprintf("ssh://git@127.0.0.1:%d/big-2.git", port),
			env: append(slices.Clone(env), "GIT_SSH_COMMAND="+sshCommand)},
	} {
		t.served = filepath.Join(repos, fmt.Sprintf("big-%d.git", i+1))
		t.work = filepath.Join(root, fmt.Sprintf("work-%d", i+1))
		if err := os.MkdirAll(t.work, 0o700); err != nil {
			stop()
			return nil, err
		}
		side.targets = append(side.targets, t)
	}
	return side, nil
}

// shellWords quotes words for /bin/sh (GIT_SSH_COMMAND runs in a shell).
func shellWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = shellQuote(w)
	}
	return strings.Join(q, " ")
}

// --- the anchors: sshd and git daemon ---

// startGitAnchor starts m5.go's sshd and a `git daemon`, each serving a
// copy of the repository of its own from a temporary directory.
func startGitAnchor(ctx context.Context, e *env) (*gitSide, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, fmt.Errorf("%v: install git for the git rows", err)
	}
	src, err := acquireGitRepo(ctx, e.short)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "alknet-bench-gitanchor-")
	if err != nil {
		releaseGitRepo()
		return nil, err
	}
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		_ = os.RemoveAll(root)
		releaseGitRepo()
	}
	fail := func(err error) (*gitSide, error) {
		stop()
		return nil, err
	}
	home, repos := filepath.Join(root, "home"), filepath.Join(root, "repos")
	for _, dir := range []string{home, repos} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fail(err)
		}
	}
	env := gitEnv(home)
	for _, name := range []string{"big-1.git", "big-2.git"} {
		if err := copyRepo(ctx, env, src, filepath.Join(repos, name)); err != nil {
			return fail(err)
		}
	}
	sshd, err := startSSHD(ctx)
	if err != nil {
		return fail(err)
	}
	stops = append(stops, sshd.stop)
	sshCommand, hostPort, err := gitSSHCommand(sshd.plain)
	if err != nil {
		return fail(err)
	}
	daemonAddr, stopDaemon, err := startGitDaemon(ctx, env, repos)
	if err != nil {
		return fail(err)
	}
	stops = append(stops, stopDaemon)
	side := &gitSide{rows: [3]int{0, 0, 1}, stop: stop}
	for i, t := range []gitTarget{
		{label: "git over ssh to " + sshd.plain.label, url: "ssh://" + hostPort + filepath.Join(repos, "big-1.git"),
			env: append(slices.Clone(env), "GIT_SSH_COMMAND="+sshCommand), uploadPack: "GIT_PROTOCOL=version=2 git-upload-pack"},
		{label: "git daemon on " + daemonAddr, url: "git://" + daemonAddr + "/big-2.git", env: env},
	} {
		t.served = filepath.Join(repos, fmt.Sprintf("big-%d.git", i+1))
		t.work = filepath.Join(root, fmt.Sprintf("work-%d", i+1))
		if err := os.MkdirAll(t.work, 0o700); err != nil {
			return fail(err)
		}
		side.targets = append(side.targets, t)
	}
	return side, nil
}

// gitSSHCommand turns the sshd target's ssh command line (options, "-p",
// port, host) into GIT_SSH_COMMAND and the host:port of an ssh:// URL.
func gitSSHCommand(t sshTarget) (string, string, error) {
	n := len(t.args)
	if n < 3 || t.args[n-3] != "-p" {
		return "", "", fmt.Errorf("%s: unexpected ssh arguments %q", t.label, t.args)
	}
	return shellWords(append([]string{t.client}, t.args[:n-3]...)), net.JoinHostPort(t.args[n-1], t.args[n-2]), nil
}

// startGitDaemon runs `git daemon` on a free loopback port, serving every
// repository under base, and waits until it accepts connections.
func startGitDaemon(ctx context.Context, env []string, base string) (string, func(), error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command("git", "daemon", "--reuseaddr", "--listen=127.0.0.1", "--port="+strconv.Itoa(port),
		"--base-path="+base, "--export-all", "--informative-errors", base)
	cmd.Env = env
	logs := &logTail{}
	cmd.Stdout, cmd.Stderr = &lineWriter{tail: logs}, &lineWriter{tail: logs}
	// Its own process group, so that stop ends the connections it forked
	// too; if the bench dies, so does the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	proc, err := startProcess(cmd)
	if err != nil {
		return "", nil, fmt.Errorf("git daemon: %w", err)
	}
	stop := proc.stop
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return addr, stop, nil
		}
		select {
		case <-proc.exited:
			return "", nil, fmt.Errorf("git daemon exited before listening: %v\n%s", proc.err, logs)
		case <-ctx.Done():
			stop()
			return "", nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("git daemon did not listen on %s within 15 s:\n%s", addr, logs)
		}
	}
}
