package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// SSH: stock OpenSSH `ssh` against a real `bin/alknet serve` with the
// SSH plugin (bin/alknet-plugin-ssh; every other plugin disabled) and
// against OpenSSH's own sshd (/usr/sbin/sshd, Debian package
// openssh-server) started on a temporary config, both on 127.0.0.1 with
// the same client and the same client options: bulk output of an exec
// request and the wall time of `ssh host true`. The node is reached on a
// [[listeners.plain]] TCP port (the fair comparison with sshd on TCP) and,
// in the -pipe rows, through `alknet pipe` as ProxyCommand (QUIC). Each
// side runs in a temporary directory removed when the row ends.
//
// The client keeps its default algorithms on both sides and each server
// its defaults: with sshd the client negotiates chacha20-poly1305; the
// plugin does not offer it by default (x/crypto/ssh has no assembly for
// it on amd64) and, with its server cipher preference, offers OpenSSH
// aes128-gcm@openssh.com alone (ssh-throughput-ctr in gossh.go shows the
// aes128-ctr + hmac-sha2-256-etm the client's own order would give). The
// key exchange differs too (sshd picks
// sntrup761x25519-sha512, which x/crypto/ssh does not offer; the plugin
// curve25519-sha256), so part of sshd's ssh-ttfb figure is its
// post-quantum key exchange (some 80 ms on a 2-CPU VM). The rows in
// gossh.go put a bare x/crypto/ssh server between the two.
var m5 = []benchmark{
	{
		Name: "ssh-throughput-plain", Area: "ssh", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.9,
		Description: "stock ssh runs `head -c N /dev/zero` (N = 256 MiB, 64 MiB with -short); stdout read by the bench, bytes/s from the first byte to EOF: the SSH plugin on a [[listeners.plain]] TCP port vs sshd on TCP",
		Rounds:      5, ShortRounds: 3,
		Subject: variant{Label: alknetSSHLabel, Start: sshVariant(startAlknetSSH, sshBulk)},
		Anchor:  variant{Label: sshdLabel, Start: sshVariant(startSSHD, sshBulk)},
		Also: []companion{
			{Name: "ssh-throughput-pipe", Unit: "MiB/s", HigherIsBetter: true, Goal: 0.9, Informational: true,
				Description: "as ssh-throughput-plain through `alknet pipe` as ProxyCommand (QUIC, a process more on the client side) vs the same sshd on TCP"},
		},
	},
	{
		Name: "ssh-ttfb", Area: "ssh", Unit: "ms", HigherIsBetter: false, Goal: 0.67,
		Description: "wall time of `ssh … host true` (connect, key exchange, public-key auth, exec, exit status): the SSH plugin on a [[listeners.plain]] TCP port vs sshd on TCP; ratio sshd/alknet, goal ≤ 1.5× sshd",
		Rounds:      9, ShortRounds: 5,
		Subject: variant{Label: alknetSSHLabel, Start: sshVariant(startAlknetSSH, sshTrue)},
		Anchor:  variant{Label: sshdLabel, Start: sshVariant(startSSHD, sshTrue)},
		Also: []companion{
			{Name: "ssh-ttfb-pipe", Unit: "ms", HigherIsBetter: false, Goal: 0.67, Informational: true,
				Description: "as ssh-ttfb through `alknet pipe` as ProxyCommand (adds the pipe process's start and a QUIC handshake) vs the same sshd on TCP"},
		},
	},
}

const (
	alknetSSHLabel = "bin/alknet serve + ssh plugin: [[listeners.plain]] port (-pipe rows: ProxyCommand alknet pipe, QUIC)"
	sshdLabel      = "OpenSSH /usr/sbin/sshd -D -e, temporary config, 127.0.0.1"
	// sshdPath is the anchor's server; the bench does not look elsewhere.
	sshdPath = "/usr/sbin/sshd"
	// sshdPrivsepDir is the privilege separation directory Debian's sshd
	// requires when it runs as root (systemd creates it for the service).
	sshdPrivsepDir = "/run/sshd"
)

// sshBulkSize is what each ssh-throughput round reads.
func sshBulkSize(short bool) int64 {
	if short {
		return 64 << 20
	}
	return 256 << 20
}

// sshSide is a started SSH server — an alknet node or sshd — and how the
// ssh client reaches it.
type sshSide struct {
	plain sshTarget  // TCP, ssh -p
	pipe  *sshTarget // the node only: ProxyCommand alknet pipe
	stop  func()
}

// sshTarget is an ssh command line without its remote command.
type sshTarget struct {
	client string   // the ssh binary
	args   []string // options and destination
	env    []string
	label  string // for errors
	// sftpDir is where the sftp rows put their file on the server.
	sftpDir string
}

// sshMeasure runs one measurement through t, in the row's unit.
type sshMeasure func(ctx context.Context, e *env, t sshTarget, warmup bool) (float64, error)

// sshVariant starts a side and measures its plain target (the row) and,
// for the node, its pipe target (the -pipe companion row). sshd has no
// pipe target: its figure serves both rows, from the same round.
func sshVariant(start func(ctx context.Context) (*sshSide, error), m sshMeasure) func(ctx context.Context, e *env) (*instance, error) {
	return func(ctx context.Context, e *env) (*instance, error) {
		s, err := start(ctx)
		if err != nil {
			return nil, err
		}
		targets := []sshTarget{s.plain}
		if s.pipe != nil {
			targets = append(targets, *s.pipe)
		}
		var also []float64
		return &instance{
			Warmup: func(ctx context.Context) error {
				for _, t := range targets {
					if _, err := m(ctx, e, t, true); err != nil {
						return err
					}
				}
				return nil
			},
			Measure: func(ctx context.Context) (float64, error) {
				var figures []float64
				for _, t := range targets {
					v, err := m(ctx, e, t, false)
					if err != nil {
						return 0, err
					}
					figures = append(figures, v)
				}
				also = figures[len(figures)-1:]
				return figures[0], nil
			},
			Also: func() []float64 { return also },
			Stop: s.stop,
		}, nil
	}
}

// sshBulk runs `head -c N /dev/zero` and returns the rate at which its
// output arrived, from the first byte to EOF (the connection set-up is
// ssh-ttfb's).
func sshBulk(ctx context.Context, e *env, t sshTarget, warmup bool) (float64, error) {
	size := sshBulkSize(e.short)
	if warmup {
		size = 8 << 20
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd, stderr := t.command(ctx, fmt.Sprintf("head -c %d /dev/zero", size))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%s: %w", t.label, err)
	}
	buf := make([]byte, 1<<20)
	var total, timed int64
	var first, last time.Time
	var rerr error
	for {
		n, err := stdout.Read(buf)
		if n > 0 {
			now := time.Now()
			if total == 0 {
				first = now
			} else {
				timed += int64(n) // bytes after the first read, over the time since
			}
			total += int64(n)
			last = now
		}
		if err != nil {
			if err != io.EOF {
				rerr = err
			}
			break
		}
	}
	if err := errors.Join(rerr, cmd.Wait()); err != nil {
		return 0, fmt.Errorf("%s: ssh … head -c %d /dev/zero: %w (after %d bytes)\n%s", t.label, size, err, total, stderr)
	}
	if total != size {
		return 0, fmt.Errorf("%s: ssh … head -c %d /dev/zero: read %d bytes\n%s", t.label, size, total, stderr)
	}
	elapsed := last.Sub(first).Seconds()
	if elapsed <= 0 {
		return 0, fmt.Errorf("%s: %d bytes arrived at once; nothing to time", t.label, size)
	}
	return float64(timed) / elapsed / (1 << 20), nil
}

// sshTrue is the wall time of `ssh … true`, from exec to exit, in ms.
func sshTrue(ctx context.Context, _ *env, t sshTarget, _ bool) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd, stderr := t.command(ctx, "true")
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: ssh … true: %w\n%s", t.label, err, stderr)
	}
	return float64(time.Since(start)) / float64(time.Millisecond), nil
}

// command is ssh running remote on t; its stderr is kept for errors.
func (t sshTarget) command(ctx context.Context, remote string) (*exec.Cmd, *logTail) {
	cmd := exec.CommandContext(ctx, t.client, append(slices.Clone(t.args), remote)...)
	cmd.Env = t.env
	stderr := &logTail{}
	cmd.Stderr = &lineWriter{tail: stderr}
	// If the bench dies, so does ssh (and with it its ProxyCommand).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd, stderr
}

// sshClientOptions are the client options of both sides: no user or
// system configuration, this key only, no agent, host keys neither checked
// nor recorded (the bench only), the default algorithms.
func sshClientOptions(key string) []string {
	return []string{
		"-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		"-i", key,
		"-o", "IdentityAgent=none",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
	}
}

// sshClientEnv is nodeEnv(xdg) without an agent, with /bin/sh as the
// shell ssh runs a ProxyCommand with.
func sshClientEnv(xdg string) []string {
	var env []string
	for _, kv := range nodeEnv(xdg) {
		if !strings.HasPrefix(kv, "SSH_AUTH_SOCK=") && !strings.HasPrefix(kv, "SHELL=") {
			env = append(env, kv)
		}
	}
	return append(env, "SHELL=/bin/sh")
}

// sshTools are the ssh client and ssh-keygen (Debian package
// openssh-client).
func sshTools() (client, keygen string, err error) {
	if client, err = exec.LookPath("ssh"); err == nil {
		keygen, err = exec.LookPath("ssh-keygen")
	}
	if err != nil {
		return "", "", fmt.Errorf("%v: install openssh-client (apt-get install -y openssh-client) for the ssh rows", err)
	}
	return client, keygen, nil
}

// clientKey is an ed25519 client key written as an OpenSSH private key.
type clientKey struct {
	file       string // the private key, mode 0600
	authorized []byte // its authorized_keys line
	fp         string // SHA256:…
}

func writeClientKey(file string) (clientKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return clientKey{}, err
	}
	block, err := gossh.MarshalPrivateKey(priv, "alknet-bench")
	if err != nil {
		return clientKey{}, err
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		return clientKey{}, err
	}
	sp, err := gossh.NewPublicKey(pub)
	if err != nil {
		return clientKey{}, err
	}
	return clientKey{file: file, authorized: gossh.MarshalAuthorizedKey(sp), fp: gossh.FingerprintSHA256(sp)}, nil
}

// freeLoopbackPort is a TCP port of 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// --- the alknet node ---

// startAlknetSSH starts `alknet serve` with the SSH plugin alone, a plain
// TCP listener for alknet/ssh and an exec allow-list of head and true, and
// registers a fresh client key as a peer with ssh:exec before it starts.
func startAlknetSSH(ctx context.Context) (*sshSide, error) { return startAlknetSSHWith(ctx, "") }

// startAlknetSSHWith is startAlknetSSH with extra [plugins.ssh] lines.
func startAlknetSSHWith(ctx context.Context, sshSettings string) (*sshSide, error) {
	return startAlknetSSHNode(ctx, sshSettings, nil, []string{"ssh:exec"})
}

// startAlknetSSHNode is startAlknetSSH with extra [plugins.ssh] lines,
// further plugins left enabled (with, plugins/<name>'s) and the bench
// key's scopes.
func startAlknetSSHNode(ctx context.Context, sshSettings string, with, scopes []string) (*sshSide, error) {
	client, _, err := sshTools()
	if err != nil {
		return nil, err
	}
	bin, err := alknetBinary()
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(filepath.Join(filepath.Dir(bin), "alknet-plugin-ssh")); err != nil || st.IsDir() {
		return nil, fmt.Errorf("%s not found: run `make build` first (make bench does)", filepath.Join(filepath.Dir(bin), "alknet-plugin-ssh"))
	}
	others, err := otherPlugins()
	if err != nil {
		return nil, err
	}
	if !slices.Contains(others, "ssh") {
		return nil, fmt.Errorf("no plugin beside %s describes itself as ssh (found %v)", bin, others)
	}
	allow := map[string]string{}
	for _, prog := range []string{"head", "true"} {
		p, err := exec.LookPath(prog)
		if err == nil {
			p, err = filepath.Abs(p)
		}
		if err != nil {
			return nil, fmt.Errorf("the ssh rows need %s: %w", prog, err)
		}
		allow[prog] = p
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	plainAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The exec allow-list sits directly under [plugins.ssh] (table form:
	// command name → absolute path; see plugins/ssh/settings.go).
	config := fmt.Sprintf("[[listeners.plain]]\naddr = %q\nalpn = \"alknet/ssh\"\n\n"+
		"[plugins.ssh]\nexec_allow = { head = %s, \"true\" = %s }\n%s\n"+
		"[plugins.echo]\ndisabled = true\n",
		plainAddr, strconv.Quote(allow["head"]), strconv.Quote(allow["true"]), sshSettings)
	config += disabledExcept(others, append([]string{"ssh"}, with...)...)
	// node/info shows plugin states only to an admin: the bench's key.
	config = fmt.Sprintf("[[auth.peers]]\npeer_id = \"bench-admin\"\nfingerprints = [%q]\nscopes = [\"admin\"]\n\n", benchKey().fp) + config

	root, err := os.MkdirTemp("", "alknet-bench-ssh-")
	if err != nil {
		return nil, err
	}
	h := &nodeHome{root: root}
	fail := func(err error) (*sshSide, error) {
		h.remove()
		return nil, err
	}
	xdg, clientData := filepath.Join(root, "xdg"), filepath.Join(root, "client")
	for _, dir := range []string{xdg, clientData} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fail(err)
		}
	}
	if err := os.WriteFile(h.configFile(), []byte(config), 0o600); err != nil {
		return fail(err)
	}
	key, err := writeClientKey(filepath.Join(root, "client_ed25519"))
	if err != nil {
		return fail(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	args := []string{"--config", h.configFile(), "--data-dir", filepath.Join(root, "data"), "peers", "add", "bench", "--ssh-key", key.fp}
	for _, sc := range scopes {
		args = append(args, "--scope", sc)
	}
	add := exec.CommandContext(pctx, bin, args...)
	add.Env = nodeEnv(xdg)
	out, err := add.CombinedOutput()
	cancel()
	if err != nil {
		return fail(fmt.Errorf("alknet %s: %v\n%s", strings.Join(args[4:], " "), err, indent(string(out))))
	}

	p, err := h.serve(ctx)
	if err != nil {
		return fail(err)
	}
	n := &node{home: h, proc: p, fp: p.fp, addr: p.addr}
	if err := pluginsReady(ctx, n, append([]string{"ssh"}, with...)...); err != nil {
		n.close()
		return nil, fmt.Errorf("%w\n%s", err, p.logs)
	}

	env := sshClientEnv(xdg)
	opts := sshClientOptions(key.file)
	plain := sshTarget{client: client, env: env, label: "alknet ssh plugin via " + plainAddr, sftpDir: "/",
		args: append(slices.Clone(opts), "-p", strconv.Itoa(port), "127.0.0.1")}
	proxy := strings.Join([]string{shellQuote(bin), "--data-dir", shellQuote(clientData),
		"pipe", "--alpn", "alknet/ssh", "--peer", shellQuote(n.fp), shellQuote(n.addr)}, " ")
	pipe := sshTarget{client: client, env: env, label: "alknet ssh plugin via alknet pipe " + n.addr, sftpDir: "/",
		args: append(slices.Clone(opts), "-o", "ProxyCommand="+strings.ReplaceAll(proxy, "%", "%%"), "alknet-bench")}
	return &sshSide{plain: plain, pipe: &pipe, stop: n.close}, nil
}

// pluginsReady asks the node n for its plugins and fails unless each of
// names is ready.
func pluginsReady(ctx context.Context, n *node, names ...string) error {
	plugins, err := nodePlugins(ctx, n.addr, n.fp)
	for _, name := range names {
		if err == nil {
			err = pluginReady(plugins, name)
		}
	}
	return err
}

// pluginReady requires plugin name to be ready in node/info.
func pluginReady(plugins []pluginStatus, name string) error {
	for _, p := range plugins {
		if p.Name == name {
			if p.State != "ready" || p.Pid <= 0 {
				return fmt.Errorf("%s plugin is %s (pid %d): %s", name, p.State, p.Pid, p.Error)
			}
			return nil
		}
	}
	return fmt.Errorf("node/info lists no %s plugin (%+v); is bin/alknet-plugin-%s built?", name, plugins, name)
}

// --- the sshd anchor ---

// startSSHD starts OpenSSH's sshd in the foreground on a free loopback
// port with a configuration of its own in a temporary directory: a host
// key made by ssh-keygen, a fresh client key as the only authorized key,
// public-key authentication only, no PAM. HOME of the sessions is an
// empty directory, so the login shell that runs the command reads no
// dotfiles of the user running the bench (a slow ~/.bashrc would
// otherwise be timed as sshd's). Run as root, sshd needs its privilege
// separation directory; the bench creates it if missing and removes it
// afterwards.
func startSSHD(ctx context.Context) (*sshSide, error) {
	if st, err := os.Stat(sshdPath); err != nil || st.IsDir() {
		return nil, errors.New("install openssh-server (apt-get install -y openssh-server) for the sshd anchor")
	}
	client, keygen, err := sshTools()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "alknet-bench-sshd-")
	if err != nil {
		return nil, err
	}
	var madePrivsep bool
	cleanup := func() {
		_ = os.RemoveAll(root)
		if madePrivsep {
			_ = os.Remove(sshdPrivsepDir) // only if still empty
		}
	}
	fail := func(err error) (*sshSide, error) {
		cleanup()
		return nil, err
	}
	if strings.ContainsAny(root, "\"%") {
		return fail(fmt.Errorf("temporary directory %q: sshd_config paths cannot hold '\"' or '%%'", root))
	}
	home, xdg, sftpDir := filepath.Join(root, "home"), filepath.Join(root, "xdg"), filepath.Join(root, "sftp")
	for _, dir := range []string{home, xdg, sftpDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fail(err)
		}
	}
	hostKey := filepath.Join(root, "ssh_host_ed25519_key")
	kctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	out, err := exec.CommandContext(kctx, keygen, "-q", "-t", "ed25519", "-N", "", "-C", "alknet-bench-sshd", "-f", hostKey).CombinedOutput()
	cancel()
	if err != nil {
		return fail(fmt.Errorf("ssh-keygen: %v\n%s", err, indent(string(out))))
	}
	key, err := writeClientKey(filepath.Join(root, "client_ed25519"))
	if err != nil {
		return fail(err)
	}
	authorized := filepath.Join(root, "authorized_keys")
	if err := os.WriteFile(authorized, key.authorized, 0o600); err != nil {
		return fail(err)
	}
	if os.Geteuid() == 0 {
		if _, err := os.Stat(sshdPrivsepDir); errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(sshdPrivsepDir, 0o755); err != nil {
				return fail(fmt.Errorf("sshd run as root needs %s: %w", sshdPrivsepDir, err))
			}
			madePrivsep = true
		}
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return fail(err)
	}
	cfg := filepath.Join(root, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey "%s"
AuthorizedKeysFile "%s"
PidFile "%s"
SetEnv "HOME=%s"
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PermitUserRC no
PrintMotd no
PrintLastLog no
X11Forwarding no
UseDNS no
Subsystem sftp %s
`, port, hostKey, authorized, filepath.Join(root, "sshd.pid"), home, sftpServer())
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return fail(err)
	}

	cmd := exec.Command(sshdPath, "-f", cfg, "-D", "-e")
	cmd.Env = nodeEnv(xdg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	logs := &logTail{}
	ready := make(chan struct{}, 1)
	w := &lineWriter{tail: logs, line: func(s string) {
		if strings.Contains(s, "Server listening on") {
			select {
			case ready <- struct{}{}:
			default:
			}
		}
	}}
	cmd.Stdout, cmd.Stderr = w, w
	proc, err := startProcess(cmd)
	if err != nil {
		return fail(err)
	}
	stop := func() {
		proc.stop()
		cleanup()
	}
	select {
	case <-ready:
	case <-proc.exited:
		cleanup()
		return nil, fmt.Errorf("sshd exited before listening: %v\n%s", proc.err, logs)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	case <-time.After(15 * time.Second):
		stop()
		return nil, fmt.Errorf("sshd did not listen within 15 s:\n%s", logs)
	}
	plain := sshTarget{client: client, env: sshClientEnv(xdg), label: fmt.Sprintf("sshd on 127.0.0.1:%d", port), sftpDir: sftpDir,
		args: append(sshClientOptions(key.file), "-p", strconv.Itoa(port), "127.0.0.1")}
	return &sshSide{plain: plain, stop: stop}, nil
}

// sftpServer is the sshd anchor's sftp subsystem: Debian's default,
// OpenSSH's sftp-server program, else sshd's built-in one.
func sftpServer() string {
	const debian = "/usr/lib/openssh/sftp-server"
	if st, err := os.Stat(debian); err == nil && !st.IsDir() {
		return debian
	}
	return "internal-sftp"
}
