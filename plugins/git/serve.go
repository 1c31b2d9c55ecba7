package git

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"alknet.dev/alknet/plugins/sdk"
)

// stream is what one request runs on: an *sdk.Stream.
type stream interface {
	io.ReadWriter
	CloseWrite() error
	SetReadDeadline(time.Time) error
	Close() error
}

// serveStream serves one request: it reads the request, authorizes it,
// and runs git's program for it joined to the stream. Refusals are ERR
// lines; the stream is closed at the end.
func (p *Plugin) serveStream(ctx context.Context, a sdk.Auth, st stream) {
	defer st.Close()
	start := time.Now()
	cfg := p.cfg.Load()
	if cfg == nil {
		_, _ = st.Write(errLine("the git handler is not configured yet; try again"))
		return
	}
	log := p.log().With("identity", who(a.Identity), "remote_addr", a.RemoteAddr, "transport", a.Transport)
	ctx, cancel := context.WithTimeout(ctx, cfg.requestTimeout)
	defer cancel()

	headerBy := time.Now().Add(headerTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(headerBy) {
		headerBy = d
	}
	_ = st.SetReadDeadline(headerBy)
	br := bufio.NewReaderSize(st, 64<<10)
	req, err := readRequest(br)
	if err != nil {
		var re *requestError
		switch {
		case errors.As(err, &re):
			p.refuse(st, log, "bad request", re.msg)
		case errors.Is(err, os.ErrDeadlineExceeded):
			p.refuse(st, log, "no request", fmt.Sprintf("no request within %s", min(headerTimeout, cfg.requestTimeout)))
		default:
			log.Debug("git request not read", "error", err)
		}
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	log = log.With("service", req.service, "form", req.form)

	id := a.Identity
	if req.service == ServiceReceivePack {
		if !holds(id, ScopeWrite, req.repo) {
			p.refuse(st, log, "permission denied", denied(cfg, id, ScopeWrite, verb(req.service), req.repo))
			return
		}
	} else if !canRead(cfg, id, req.repo) {
		p.refuse(st, log, "permission denied", denied(cfg, id, ScopeRead, verb(req.service), req.repo))
		return
	}
	release, ok := p.limits.acquire(limitKey(a), cfg.maxConcurrent, cfg.maxPerIdentity)
	if !ok {
		p.refuse(st, log, "too many requests", "too many concurrent git requests, try again")
		return
	}
	defer release()

	dir := repoDir(cfg.root, req.repo)
	if !isRepo(dir) {
		if req.service != ServiceReceivePack {
			p.refuse(st, log, "not found", "repository not found: "+req.repo)
			return
		}
		if !holds(id, ScopeCreate, req.repo) {
			p.refuse(st, log, "permission denied", denied(cfg, id, ScopeCreate, "create", req.repo))
			return
		}
		switch err := p.create(cfg, req.repo); {
		case err == nil:
			log.Info("repository created", "repository", req.repo, "by", "push")
		case errors.Is(err, errRepoExists):
		default:
			log.Error("repository not created", "error", err)
			p.refuse(st, log, "internal error", "the repository could not be created; the node's log says why")
			return
		}
	}

	if req.service == ServiceReceivePack {
		// The hook is what enforces the push rules: make sure it is there
		// (a repository copied in since the start has none yet).
		if err := installHook(dir, hookScript(cfg.hookExe, cfg.rulesFile, req.repo)); err != nil {
			log.Error("push refused: no pre-receive hook", "error", err)
			p.refuse(st, log, "internal error", "the push rules of the repository cannot be enforced; the node's log says why")
			return
		}
	}

	status, err := runGit(ctx, st, br, p.command(cfg, req, dir), log, release)
	fields := []any{"protocol", req.version, "exit_status", status, "duration", time.Since(start).Round(time.Millisecond).String()}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		log.Info("git request stopped: request_timeout reached", append(fields, "request_timeout", cfg.requestTimeout.String())...)
	case err != nil:
		log.Warn("git request failed", append(fields, "error", err)...)
	default:
		log.Info("git request", fields...)
	}
	if req.service == ServiceReceivePack {
		if err := fixHead(dir); err != nil {
			log.Warn("HEAD of a repository not checked", "error", err)
		}
	}
}

// refuse answers with an ERR line (git shows "fatal: remote error: msg")
// and logs the refusal without the client's text.
func (p *Plugin) refuse(st stream, log hclog.Logger, reason, msg string) {
	log.Info("git request refused", "reason", reason)
	_, _ = st.Write(errLine(msg))
	_ = st.CloseWrite()
}

func who(id *sdk.Identity) string {
	if id == nil {
		return "anonymous"
	}
	return id.ID
}

// limitKey is what max_per_identity counts: the identity, or an anonymous
// caller's address.
func limitKey(a sdk.Auth) string {
	if a.Identity != nil {
		return "id:" + a.Identity.ID
	}
	host, _, err := net.SplitHostPort(a.RemoteAddr)
	if err != nil {
		host = a.RemoteAddr
	}
	return "anonymous:" + host
}

// gitCommand is one run of git.
type gitCommand struct {
	path string // the git executable
	args []string
	env  []string
	dir  string
}

// command builds the git command line for req on the repository in dir:
// git's own program with a clean environment (no system or global
// config, HOME in the plugin's directory) and the settings the plugin
// enforces on the command line.
func (p *Plugin) command(cfg *config, req *request, dir string) gitCommand {
	env := []string{"PATH=" + searchPath(), "HOME=" + cfg.home, "LANG=C", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}
	if req.version > 0 {
		env = append(env, "GIT_PROTOCOL=version="+strconv.Itoa(req.version))
	}
	var args []string
	switch req.service {
	case ServiceUploadPack:
		args = []string{"-c", "uploadpack.allowFilter=true", "upload-pack", "--strict", dir}
	case ServiceReceivePack:
		args = []string{
			"-c", "receive.advertisePushOptions=true",
			"-c", "receive.maxInputSize=" + strconv.FormatInt(cfg.maxPushSize, 10),
			// A detached gc would leave the request's process group.
			"-c", "gc.autoDetach=false",
			// The hook of the plugin, whatever the repository's config says.
			"-c", "core.hooksPath=" + filepath.Join(dir, "hooks"),
			"receive-pack", dir,
		}
	case ServiceUploadArchive:
		args = []string{"upload-archive", dir}
	}
	return gitCommand{path: cfg.git, args: args, env: env, dir: dir}
}

func searchPath() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return "/usr/local/bin:/usr/bin:/bin"
}

// runGit runs c with its stdin and stdout joined to the stream (in is the
// stream's reader, past the request) and its stderr logged at debug, in a
// process group of its own. The group is killed when ctx ends (the
// connection closed, the request's time is up), when the client resets
// the stream or the stream cannot be written to, and once git has exited
// in any case; exited runs then (git holds no process any more). When git
// exits, the stream's write side is closed. It returns git's exit status
// (-1: killed by a signal).
func runGit(ctx context.Context, st stream, in io.Reader, c gitCommand, log hclog.Logger, exited func()) (int, error) {
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW)
		return -1, err
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW, stdoutR, stdoutW)
		return -1, err
	}
	cmd := exec.Command(c.path, c.args...)
	cmd.Env, cmd.Dir = c.env, c.dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, stdoutW, stderrW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	closeAll(stdinR, stdoutW, stderrW) // git has its copies
	if err != nil {
		closeAll(stdinW, stdoutR, stderrR)
		_, _ = st.Write(errLine("git could not be started on the node; its log says why"))
		_ = st.CloseWrite()
		return -1, fmt.Errorf("start %s: %w", c.path, err)
	}
	pid := cmd.Process.Pid

	// kill ends the process group; never after the leader was reaped (its
	// number may belong to someone else by then).
	var kmu sync.Mutex
	reaped := false
	kill := func() {
		kmu.Lock()
		defer kmu.Unlock()
		if !reaped {
			_ = unix.Kill(-pid, unix.SIGKILL)
		}
	}
	stop := context.AfterFunc(ctx, kill)
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	done := make(chan struct{}) // closed once git has exited
	wg.Add(3)
	go func() {
		// client → git; owned by runGit. The client's EOF closes git's
		// stdin; a reset or a lost connection kills git.
		defer wg.Done()
		defer stdinW.Close()
		buf := make([]byte, 64<<10)
		for {
			n, rerr := in.Read(buf)
			if n > 0 {
				if _, werr := stdinW.Write(buf[:n]); werr != nil {
					return // git closed its stdin or exited
				}
			}
			if rerr != nil {
				select {
				case <-done:
				default:
					if !errors.Is(rerr, io.EOF) {
						kill()
					}
				}
				return
			}
		}
	}()
	copied := make(chan struct{})
	go func() {
		// git → client; owned by runGit. A client that cannot be written
		// to any more ends git.
		defer wg.Done()
		defer close(copied)
		buf := make([]byte, 64<<10)
		for {
			n, rerr := stdoutR.Read(buf)
			if n > 0 {
				if _, werr := st.Write(buf[:n]); werr != nil {
					kill()
					_, _ = io.Copy(io.Discard, stdoutR)
					return
				}
			}
			if rerr != nil {
				return
			}
		}
	}()
	go func() {
		// git's stderr → debug log, a line at a time; owned by runGit.
		defer wg.Done()
		logLines(stderrR, log)
	}()

	// Wait for git to exit without reaping it, so that its process group
	// cannot be reused while the rest of it is killed.
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	close(done)
	// Whatever git left behind goes with it; then nothing holds its
	// stdout, and the copy ends after what git wrote.
	kill()
	<-copied
	_ = stdoutR.Close()
	kmu.Lock()
	werr := cmd.Wait()
	reaped = true
	kmu.Unlock()
	exited()
	_ = stderrR.Close()
	// The end of git's output is the end of the answer.
	_ = st.CloseWrite()
	// Stop reading the client: git is gone.
	_ = st.SetReadDeadline(time.Unix(1, 0))
	status := -1
	if cmd.ProcessState != nil {
		status = cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		return status, werr
	}
	return status, nil
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// logLines logs what r carries at debug, a line (of at most 1 KiB) at a
// time, until EOF.
func logLines(r io.Reader, log hclog.Logger) {
	br := bufio.NewReaderSize(r, 1024)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && log.IsDebug() {
			log.Debug("git stderr", "line", clipN(string(trimNewline(line)), 512))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
