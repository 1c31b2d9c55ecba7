package ssh

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"alknet.dev/alknet/plugins/sdk"
)

// Exit statuses the plugin reports itself, as a shell would.
const (
	statusNotAllowed = 127 // command not in exec_allow (or refused)
	statusCannotRun  = 126 // the program could not be started
	statusUsage      = 128 // malformed git command
)

// session is one session channel: at most one program, shell, subsystem
// or bridge, with the requests that go with it.
type session struct {
	c   *serverConn
	ch  gossh.Channel
	ctx context.Context
	wg  sync.WaitGroup // goroutines of what runs on the channel

	pty     *ptyRequest // accepted pty-req, if any
	started bool        // exec, shell or subsystem accepted
	slot    *slot       // the channel's place under max_sessions
	// gitProtocol is the value of an accepted GIT_PROTOCOL env request,
	// passed to the Git handler in the bridge's header.
	gitProtocol string

	mu     sync.Mutex
	proc   *os.Process // running program (group leader)
	exited bool
	master *os.File // pty master while the program runs in a pty
}

func (c *serverConn) session(ctx context.Context, nch gossh.NewChannel, sl *slot) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &session{c: c, ch: ch, ctx: sctx, slot: sl}
	defer func() {
		// The client closed the channel (or the connection ended): stop
		// what runs on it and wait for its goroutines.
		cancel()
		s.closeMaster()
		s.wg.Wait()
		// The channel is done with: its place under max_sessions is free
		// for the client's next session.
		sl.release()
		_ = ch.Close()
	}()
	for req := range reqs {
		s.request(req)
	}
}

func (s *session) request(req *gossh.Request) {
	switch req.Type {
	case "pty-req":
		s.ptyReq(req)
	case "window-change":
		var m windowChange
		if gossh.Unmarshal(req.Payload, &m) == nil {
			s.resize(m)
		}
		_ = req.Reply(false, nil)
	case "signal":
		var m struct{ Signal string }
		if gossh.Unmarshal(req.Payload, &m) == nil {
			s.signal(m.Signal)
		}
		_ = req.Reply(false, nil)
	case "exec":
		s.exec(req)
	case "shell":
		s.shell(req)
	case "subsystem":
		s.subsystem(req)
	case "env":
		s.env(req)
	case "x11-req", "auth-agent-req@openssh.com":
		// X11 and agent forwarding are never offered; the payload (an X11
		// cookie) is not logged. Routine (ForwardAgent, ForwardX11 in a
		// client's config): at debug.
		s.c.log.Debug("request refused", "type", req.Type)
		_ = req.Reply(false, nil)
	default:
		s.c.log.Info("request refused", "type", clip(req.Type))
		_ = req.Reply(false, nil)
	}
}

// env accepts one variable, GIT_PROTOCOL (what git's ssh transport sends
// to ask for protocol v2), for the Git bridge; it never reaches a program.
// Every other variable is refused: its name is logged, never its value,
// and at debug, since OpenSSH sends LANG and LC_* (SendEnv) on every
// login.
func (s *session) env(req *gossh.Request) {
	var m struct{ Name, Value string }
	if gossh.Unmarshal(req.Payload, &m) != nil {
		s.c.log.Debug("request refused", "type", "env")
		_ = req.Reply(false, nil)
		return
	}
	if m.Name == "GIT_PROTOCOL" {
		switch {
		case s.started:
			s.c.log.Info("request refused", "type", "env", "name", m.Name, "reason", "after the session started")
		case !validGitProtocol(m.Value):
			s.c.log.Info("request refused", "type", "env", "name", m.Name, "reason", "value is not version=0, version=1 or version=2")
		default:
			s.gitProtocol = m.Value
			_ = req.Reply(true, nil)
			return
		}
		_ = req.Reply(false, nil)
		return
	}
	s.c.log.Debug("request refused", "type", "env", "name", clip(m.Name))
	_ = req.Reply(false, nil)
}

func validGitProtocol(v string) bool {
	return v == "version=0" || v == "version=1" || v == "version=2"
}

// ptyReq accepts a terminal for a later shell or exec, for identities that
// may run something and keys not restricted with no-pty.
func (s *session) ptyReq(req *gossh.Request) {
	var m ptyRequest
	if s.started || s.pty != nil || gossh.Unmarshal(req.Payload, &m) != nil {
		_ = req.Reply(false, nil)
		return
	}
	if s.c.noPTY || !(s.c.id.HasScope(ScopeShell) || s.c.id.HasScope(ScopeExec)) {
		s.c.log.Info("request refused", "type", "pty-req", "reason", "pty not permitted")
		_ = req.Reply(false, nil)
		return
	}
	s.pty = &m
	_ = req.Reply(true, nil)
}

func (s *session) resize(m windowChange) {
	if s.pty != nil {
		s.pty.Columns, s.pty.Rows, s.pty.Width, s.pty.Height = m.Columns, m.Rows, m.Width, m.Height
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master != nil {
		_ = setWinsize(s.master, m.Columns, m.Rows, m.Width, m.Height)
	}
}

// signal forwards a signal to the program's process group, as sshd does.
func (s *session) signal(name string) {
	sig, ok := signalByName(name)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.exited {
		_ = unix.Kill(-s.proc.Pid, sig)
	}
}

// newline is the line end for messages on the channel: a terminal wants
// CR LF.
func (s *session) newline() string {
	if s.pty != nil {
		return "\r\n"
	}
	return "\n"
}

// refuse answers an exec, shell or subsystem request the session will not
// carry out the way sshd answers a command the shell cannot find: the
// request succeeds, then the message goes to stderr, then the exit status,
// then the channel closes. A failure reply would be useless to people:
// OpenSSH's ssh exits at once with "exec request failed on channel 0" and
// status 255, dropping both the message and the status.
func (s *session) refuse(req *gossh.Request, status int, format string, args ...any) {
	s.started = true
	_ = req.Reply(true, nil)
	s.fail(status, format, args...)
}

// fail reports a failure after the request was accepted: a message on
// stderr, the exit status, end of channel.
func (s *session) fail(status int, format string, args ...any) {
	_, _ = fmt.Fprintf(s.ch.Stderr(), format+s.newline(), args...)
	s.exit(status)
}

// exit sends EOF, the exit status and closes the channel, in OpenSSH's
// order.
func (s *session) exit(status int) {
	_ = s.ch.CloseWrite()
	_, _ = s.ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{uint32(status)}))
	s.close()
}

// close closes the channel from the server's side. The session's slot
// under max_sessions is released when the client's close comes back; a
// session opened after it (a client runs commands one after another) may
// wait for that instead of being refused.
func (s *session) close() {
	s.slot.serverClosed()
	_ = s.ch.Close()
}

// exec runs an allow-listed program, or bridges a git service for an
// identity with git:read (upload-pack, upload-archive) or git:write
// (receive-pack).
func (s *session) exec(req *gossh.Request) {
	var m struct{ Command string }
	if s.started || gossh.Unmarshal(req.Payload, &m) != nil {
		_ = req.Reply(false, nil)
		return
	}
	words, err := splitWords(m.Command)
	if err != nil {
		s.c.log.Info("exec refused", "reason", "unparsable command")
		s.refuse(req, statusNotAllowed, "alknet: cannot parse the command: %v", err)
		return
	}
	if len(words) == 0 {
		s.refuse(req, statusNotAllowed, "alknet: empty command")
		return
	}
	name := words[0]
	if path, ok := s.c.cfg.exec[name]; ok {
		if !s.c.id.HasScope(ScopeExec) {
			s.c.log.Info("exec refused", "command", clip(name), "reason", "identity lacks scope "+ScopeExec)
			s.refuse(req, statusNotAllowed, "command not allowed: %s (identity %s lacks scope %s)", name, s.c.id.ID, ScopeExec)
			return
		}
		s.started = true
		_ = req.Reply(true, nil)
		s.run(path, words[1:])
		return
	}
	switch name {
	case "git-upload-pack", "git-receive-pack", "git-upload-archive":
		scope := ScopeGitRead
		if name == "git-receive-pack" {
			scope = ScopeGitWrite
		}
		if !s.c.id.HasScope(scope) {
			s.c.log.Info("exec refused", "command", name, "reason", "identity lacks scope "+scope)
			s.refuse(req, 1, "permission denied: %s required", scope)
			return
		}
		s.started = true
		_ = req.Reply(true, nil)
		if len(words) != 2 {
			s.fail(statusUsage, "alknet: usage: %s '<repository>'", name)
			return
		}
		s.git(name, words[1])
		return
	}
	s.c.log.Info("exec refused", "command", clip(name), "reason", "not in exec_allow")
	s.refuse(req, statusNotAllowed, "command not allowed: %s", name)
}

// shell runs the configured shell.
func (s *session) shell(req *gossh.Request) {
	if s.started {
		_ = req.Reply(false, nil)
		return
	}
	if s.c.cfg.shell == "" {
		s.c.log.Info("shell refused", "reason", "allow_shell is not set")
		s.refuse(req, statusNotAllowed, "alknet: interactive shells are not enabled on this node; run an allowed command instead (ssh host <command>)")
		return
	}
	if !s.c.id.HasScope(ScopeShell) {
		s.c.log.Info("shell refused", "reason", "identity lacks scope "+ScopeShell)
		s.refuse(req, statusNotAllowed, "alknet: identity %s lacks scope %s for a shell", s.c.id.ID, ScopeShell)
		return
	}
	s.started = true
	_ = req.Reply(true, nil)
	// A login needs a home and to know its shell; programs run by exec
	// get PATH only.
	env := []string{"SHELL=" + s.c.cfg.shell}
	if home, err := os.UserHomeDir(); err == nil {
		env = append(env, "HOME="+home)
	}
	s.run(s.c.cfg.shell, nil, env...)
}

// subsystem bridges sftp to the node's SFTP handler.
func (s *session) subsystem(req *gossh.Request) {
	var m struct{ Name string }
	if s.started || gossh.Unmarshal(req.Payload, &m) != nil {
		_ = req.Reply(false, nil)
		return
	}
	if m.Name != "sftp" {
		s.c.log.Info("subsystem refused", "subsystem", clip(m.Name))
		_ = req.Reply(false, nil)
		return
	}
	if !s.c.id.HasScope(ScopeSFTP) {
		s.c.log.Info("subsystem refused", "subsystem", "sftp", "reason", "identity lacks scope "+ScopeSFTP)
		s.refuse(req, 1, "alknet: identity %s lacks scope %s", s.c.id.ID, ScopeSFTP)
		return
	}
	s.started = true
	_ = req.Reply(true, nil)
	s.bridge(ALPNSFTP, "sftp", nil)
}

// gitHeader opens a stream bridged to the Git handler: one JSON line
// naming the service, the repository argument as the client gave it and
// the protocol the client asked for with GIT_PROTOCOL (if it did), then
// the client's pack protocol bytes.
type gitHeader struct {
	Service  string `json:"service"`
	Path     string `json:"path"`
	Protocol string `json:"protocol,omitempty"`
}

func (s *session) git(service, repo string) {
	b, _ := json.Marshal(gitHeader{Service: service, Path: repo, Protocol: s.gitProtocol})
	s.bridge(ALPNGit, "git", append(b, '\n'))
}

// bridge connects the channel to another handler of the node through
// DialInternal, as the authenticated identity, and copies both ways.
func (s *session) bridge(alpn, what string, header []byte) {
	dctx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
	defer cancel()
	conn, err := s.c.node.Host().DialInternal(dctx, s.c.actor, alpn)
	if err != nil {
		s.c.log.Info("bridge unavailable", "alpn", alpn, "error", err.Error())
		s.fail(1, "alknet: the %s handler is not installed on this node (alknet plugin install alknet-plugin-%s)", what, what)
		return
	}
	st, err := conn.OpenStream(dctx)
	if err != nil {
		_ = conn.Close(0, "")
		s.c.log.Info("bridge failed", "alpn", alpn, "error", err.Error())
		s.fail(1, "alknet: the %s handler did not accept the session; try again, or see the node's log", what)
		return
	}
	if len(header) > 0 {
		if _, err := st.Write(header); err != nil {
			closeStream(st)
			_ = conn.Close(0, "")
			s.fail(1, "alknet: the %s handler closed the session", what)
			return
		}
	}
	var once sync.Once
	release := func() {
		once.Do(func() {
			closeStream(st)
			_ = conn.Close(0, "")
		})
	}
	stop := context.AfterFunc(s.ctx, release)
	s.wg.Add(2)
	go func() {
		// client → handler; owned by the session.
		defer s.wg.Done()
		_, _ = io.Copy(st, s.ch)
		_ = st.CloseWrite()
	}()
	go func() {
		// handler → client; its end is the end of the session.
		defer s.wg.Done()
		_, err := io.Copy(s.ch, st)
		status := 0
		if err != nil {
			status = 1
		}
		s.exit(status)
		stop()
		release()
	}()
}

// closeStream ends a stream now, pending reads included.
func closeStream(st *sdk.Stream) {
	_ = st.SetReadDeadline(time.Unix(1, 0))
	_ = st.Close()
}

// run starts an allow-listed program (or the shell), wired to the channel
// or to a terminal if a pty was requested, and reports how it ended. Its
// environment is PATH and env, plus TERM in a terminal.
func (s *session) run(path string, args []string, env ...string) {
	cmd := exec.CommandContext(s.ctx, path, args...)
	cmd.Env = append([]string{"PATH=" + searchPath()}, env...)
	// The program leads its own process group: signals and the final kill
	// (client gone) reach the processes it started too.
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if s.pty != nil {
		s.runPTY(cmd)
		return
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The program's stdin, stdout and stderr are pipes of ours (see
	// sizedPipe), so that Wait returns when it exits and one drain time
	// bounds both output copies.
	cmd.WaitDelay = outputDrain
	p, err := newExecPipes()
	if err == nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = p.programIn, p.programOut, p.programErr
		err = cmd.Start()
		p.closeProgramEnds() // the program has its copies
		if err != nil {
			p.closeOurEnds()
		}
	}
	if err != nil {
		s.c.log.Info("exec failed", "error", err.Error())
		s.fail(statusCannotRun, "alknet: cannot run %s: %v", path, err)
		return
	}
	stdin, stdout, stderr := p.stdin, p.stdout, p.stderr
	s.setProc(cmd.Process, nil)
	var copies sync.WaitGroup
	copies.Add(2)
	s.wg.Add(4)
	go func() {
		// client → program stdin; ends at the client's EOF or when the
		// program is gone. Owned by the session.
		defer s.wg.Done()
		copyOut(stdin, s.ch, bulkRead)
		_ = stdin.Close()
	}()
	go func() {
		// program stdout → client, in reads of up to bulkRead; ends
		// at the pipe's EOF or when the exit below closes the pipe.
		// Owned by the session, as the stderr copy below.
		defer s.wg.Done()
		defer copies.Done()
		copyOut(s.ch, stdout, bulkRead)
	}()
	go func() {
		defer s.wg.Done()
		defer copies.Done()
		copyOut(s.ch.Stderr(), stderr, 32<<10)
	}()
	go func() {
		defer s.wg.Done()
		_ = cmd.Wait()
		_ = stdin.Close() // the program is gone: the copy to it ends at its next write
		// The exit status goes after all the output, as with sshd; a
		// background child holding the pipes gets outputDrain.
		copied := make(chan struct{})
		go func() {
			// Owned by this goroutine, which waits for it below.
			copies.Wait()
			close(copied)
		}()
		select {
		case <-copied:
		case <-time.After(outputDrain):
		}
		_, _ = stdout.Close(), stderr.Close()
		<-copied
		s.markExited()
		s.report(cmd.ProcessState)
	}()
}

const (
	// outputDrain is how long a program's output may still flow after it
	// exited (a background child may hold the pipes open).
	outputDrain = 2 * time.Second
	// bulkPipeSize is asked for the stdin and stdout pipes of an exec
	// (Linux's default is 64 KiB, and 1 MiB is the default limit for
	// unprivileged processes, /proc/sys/fs/pipe-max-size). The kernel
	// charges pipe buffers to the node's user (pipe-user-pages-soft,
	// 64 MiB by default, so some 32 sessions at once); past that, pipes
	// keep the default size: slower, nothing else.
	bulkPipeSize = 1 << 20
	// bulkRead is the largest read of the stdin and stdout copies.
	bulkRead = 256 << 10
)

// copyOut copies r to w in reads of up to size bytes (io.Copy would hand
// an *os.File's reads to its WriteTo, and its writes to its ReadFrom, in
// 32 KiB). It returns at r's EOF or error, or at w's error.
func copyOut(w io.Writer, r io.Reader, size int) {
	buf := make([]byte, size)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// execPipes are the pipes of a program run without a terminal: the
// program's ends and the plugin's.
type execPipes struct {
	programIn, programOut, programErr *os.File
	stdin, stdout, stderr             *os.File // the plugin's ends
}

// newExecPipes makes stdin and stdout pipes of bulkPipeSize and a stderr
// pipe of the default size. On error, whatever was made is closed.
func newExecPipes() (*execPipes, error) {
	p := &execPipes{}
	var err error
	if p.programIn, p.stdin, err = sizedPipe(bulkPipeSize); err == nil {
		if p.stdout, p.programOut, err = sizedPipe(bulkPipeSize); err == nil {
			p.stderr, p.programErr, err = sizedPipe(0)
		}
	}
	if err != nil {
		p.closeProgramEnds()
		p.closeOurEnds()
		return nil, err
	}
	return p, nil
}

func (p *execPipes) closeProgramEnds() { closeFiles(p.programIn, p.programOut, p.programErr) }
func (p *execPipes) closeOurEnds()     { closeFiles(p.stdin, p.stdout, p.stderr) }

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			_ = f.Close()
		}
	}
}

// sizedPipe is a pipe between the plugin and a program, grown to size
// bytes if size > 0. With stdin's and stdout's at 1 MiB, bulk transfers
// (`ssh node cat file`, `ssh node 'cat > file' < file`) move in steps of
// up to 256 KiB instead of 32 KiB (os/exec's pipes and copies), and every
// layer after them — SSH packets, the bridge, the node's socket writes —
// works in larger batches with fewer wake-ups. A pipe that cannot grow
// keeps its size.
func sizedPipe(size int) (r, w *os.File, err error) {
	r, w, err = os.Pipe()
	if err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	if rc, err := w.SyscallConn(); err == nil && size > 0 {
		_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, size) })
	}
	return r, w, nil
}

func (s *session) runPTY(cmd *exec.Cmd) {
	cmd.Env = append(cmd.Env, "TERM="+termName(s.pty.Term))
	master, tty, err := openPTY()
	if err != nil {
		s.c.log.Info("exec failed", "error", err.Error())
		s.fail(statusCannotRun, "alknet: cannot allocate a terminal: %v", err)
		return
	}
	_ = setWinsize(master, s.pty.Columns, s.pty.Rows, s.pty.Width, s.pty.Height)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	err = cmd.Start()
	_ = tty.Close()
	if err != nil {
		_ = master.Close()
		s.c.log.Info("exec failed", "error", err.Error())
		s.fail(statusCannotRun, "alknet: cannot run %s: %v", cmd.Path, err)
		return
	}
	s.setProc(cmd.Process, master)
	out := make(chan struct{})
	s.wg.Add(3)
	go func() {
		// client → terminal. Owned by the session.
		defer s.wg.Done()
		_, _ = io.Copy(master, s.ch)
	}()
	go func() {
		// terminal → client; ends with EIO once nobody holds the terminal,
		// or when the master is closed. Owned by the session.
		defer s.wg.Done()
		defer close(out)
		_, _ = io.Copy(s.ch, master)
	}()
	go func() {
		defer s.wg.Done()
		_ = cmd.Wait()
		s.markExited()
		// Let the last output through; a background process still holding
		// the terminal does not keep the session open.
		select {
		case <-out:
		case <-time.After(outputDrain):
		}
		s.closeMaster()
		<-out
		s.report(cmd.ProcessState)
	}()
}

func termName(t string) string {
	if t == "" {
		return "dumb"
	}
	return t
}

func searchPath() string {
	if p := os.Getenv("PATH"); p != "" {
		return p
	}
	return "/usr/local/bin:/usr/bin:/bin"
}

func (s *session) setProc(p *os.Process, master *os.File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proc, s.master = p, master
}

func (s *session) markExited() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exited = true
}

func (s *session) closeMaster() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.master != nil {
		_ = s.master.Close()
		s.master = nil
	}
}

// report sends how the program ended, as OpenSSH does: exit-status with
// the code, or exit-signal when a signal killed it.
func (s *session) report(ps *os.ProcessState) {
	_ = s.ch.CloseWrite()
	if ps == nil {
		_, _ = s.ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{255}))
	} else if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		_, _ = s.ch.SendRequest("exit-signal", false, gossh.Marshal(struct {
			Signal     string
			CoreDumped bool
			Error      string
			Lang       string
		}{Signal: signalName(ws.Signal()), CoreDumped: ws.CoreDump()}))
	} else {
		_, _ = s.ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{uint32(ps.ExitCode())}))
	}
	s.close()
}
