// Command git-remote-alknet is git's remote helper for alknet:// URLs
// (git help gitremote-helpers). git runs it as
// `git-remote-alknet <remote> <url>` for every clone, fetch, push,
// ls-remote and archive of an alknet://[FINGERPRINT@]host[:port]/repo URL;
// it opens one stream on the node's ALPN alknet/git, sends the git-daemon
// request line and carries git's smart protocol over it
// (docs/spec/handlers.md §Git, plugins/git/README.md). The node is
// verified as `alknet pipe` verifies it and this machine's vault identity
// is presented; settings come from git's configuration (alknet.*) and the
// environment (README.md in this directory).
//
// Capabilities: connect — git's protocol runs over the stream as over SSH,
// versions 0, 1 and 2 — and stateless-connect, protocol v2 fetches as git
// runs them over HTTP, one request and one response at a time, all on
// one stream. git uses connect whenever the helper offers it; git config
// alknet.statelessConnect true offers stateless-connect alone (fetches
// only: git pushes through connect).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"alknet.dev/alknet/core/datadir"
	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/endpoint"
)

// alpn is the node's Git handler.
const alpn = "alknet/git"

// Services git asks a connection for.
const (
	serviceUploadPack    = "git-upload-pack"
	serviceReceivePack   = "git-receive-pack"
	serviceUploadArchive = "git-upload-archive"
)

func main() {
	h := newHelper(os.Stdin, os.Stdout, os.Stderr)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		// Owned by main: it ends the process on a signal (git sends
		// SIGINT with the terminal's Ctrl-C, SIGTERM or SIGHUP when it
		// ends), after telling the node the connection is over.
		sig := <-sigs
		h.abort()
		os.Exit(128 + int(sig.(syscall.Signal)))
	}()
	os.Exit(h.run(os.Args[1:]))
}

// stream is the helper's side of one alknet/git stream.
type stream interface {
	io.Reader
	io.Writer
	// CloseWrite ends what the helper sends; reading goes on.
	CloseWrite() error
	CancelRead(code uint64)
	CancelWrite(code uint64)
	SetReadDeadline(t time.Time) error
}

// opener dials the node t names and opens one stream; done closes the
// connection and is safe to call more than once and from another
// goroutine.
type opener func(ctx context.Context, t target) (st stream, done func(), err error)

// helper speaks git's remote-helper protocol on in and out.
type helper struct {
	in   *bufio.Reader
	out  io.Writer
	errw io.Writer
	// open reaches the node; nil: dial it (dialStream).
	open opener
	// settings, when set, replace what loadSettings reads (tests).
	settings *settings

	mu   sync.Mutex
	done func() // closes the connection in use, if any
}

func newHelper(in io.Reader, out, errw io.Writer) *helper {
	return &helper{in: bufio.NewReaderSize(in, 64<<10), out: out, errw: errw}
}

// exitFatal is the exit status after an error, as git's own die().
const exitFatal = 128

// fatal writes "fatal: msg" (git shows the helper's stderr as it is) and
// returns the exit status.
func (h *helper) fatal(format string, args ...any) int {
	fmt.Fprintf(h.errw, "fatal: "+format+"\n", args...)
	return exitFatal
}

// run reads git's commands until git is done or a connection ends;
// args are the helper's arguments, <remote> [<url>].
func (h *helper) run(args []string) int {
	if len(args) < 1 || len(args) > 2 {
		return h.fatal("git-remote-alknet is run by git for %s URLs as `git-remote-alknet <remote> <url>`; got %d arguments", urlForm, len(args))
	}
	t, err := parseURL(args[len(args)-1])
	if err != nil {
		return h.fatal("%v", err)
	}
	ctx := context.Background()
	s := h.settings
	for {
		line, err := h.in.ReadString('\n')
		if errors.Is(err, io.EOF) && line == "" {
			return 0 // git is done
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return h.fatal("read git's command: %v", err)
		}
		cmd := strings.TrimSuffix(line, "\n")
		verb, arg, _ := strings.Cut(cmd, " ")
		if s == nil && (verb == "capabilities" || verb == "connect" || verb == "stateless-connect") {
			if s, err = loadSettings(ctx); err != nil {
				return h.fatal("%v", err)
			}
		}
		switch verb {
		case "":
			return 0 // a blank line ends the session
		case "capabilities":
			caps := "connect\nstateless-connect\n\n"
			if s.statelessOnly {
				caps = "stateless-connect\n\n"
			}
			if _, err := io.WriteString(h.out, caps); err != nil {
				return exitFatal
			}
		case "option":
			// No options are offered; git does not send any unless the
			// helper lists the option capability.
			if _, err := io.WriteString(h.out, "unsupported\n"); err != nil {
				return exitFatal
			}
		case "connect":
			return h.connect(ctx, s, t, arg)
		case "stateless-connect":
			return h.statelessConnect(ctx, s, t, arg)
		default:
			if s != nil && s.statelessOnly {
				// git falls back to other commands for what
				// stateless-connect does not carry: pushes, archives.
				return h.fatal("git asked for %q, which needs connect: git config alknet.statelessConnect true offers stateless-connect alone, which carries fetches only; unset it to push", clip(cmd))
			}
			return h.fatal("git sent the remote-helper command %q, which git-remote-alknet does not know (it offers connect and stateless-connect); is git older than 2.26?", clip(cmd))
		}
	}
}

// openStream opens the stream of one session and remembers how to close
// its connection for abort.
func (h *helper) openStream(ctx context.Context, s *settings, t target) (stream, func(), error) {
	open := h.open
	if open == nil {
		open = func(ctx context.Context, t target) (stream, func(), error) { return dialStream(ctx, s, t, h.errw) }
	}
	st, done, err := open(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	h.done = done
	h.mu.Unlock()
	return st, done, nil
}

// abort closes the connection in use, if any (on a signal).
func (h *helper) abort() {
	h.mu.Lock()
	done := h.done
	h.mu.Unlock()
	if done != nil {
		done()
	}
}

// dialStream connects to the node of t on alknet/git and opens a stream.
func dialStream(ctx context.Context, s *settings, t target, warn io.Writer) (stream, func(), error) {
	o, err := s.dialOptions(t, warn)
	if err != nil {
		return nil, nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	conn, err := dial.Dial(dctx, t.addr, o)
	cancel()
	if err != nil {
		return nil, nil, explainDial(t, s, err)
	}
	var once sync.Once
	done := func() { once.Do(func() { _ = conn.CloseWithError(endpoint.CodeNormal, "") }) }
	octx, cancel := context.WithTimeout(ctx, s.connectTimeout)
	st, err := conn.OpenStream(octx)
	cancel()
	if err != nil {
		done()
		return nil, nil, fmt.Errorf("open a stream to %s: %w", t.addr, streamError(conn, err))
	}
	return st, done, nil
}

// explainDial says what to do about a failed dial in git's terms: the
// fingerprint goes into the URL, trust on first use is a setting.
func explainDial(t target, s *settings, err error) error {
	var ue *dial.UntrustedError
	if errors.As(err, &ue) {
		return fmt.Errorf("cannot verify the node at %s: it presented %s, which is not pinned and no CA vouches for it (%v). "+
			"If you trust it, put its fingerprint in the URL (alknet://%s@%s%s), or set %s=1 (or git config alknet.trustOnFirstUse true) to record it in known_peers",
			t.addr, ue.Got, ue.Reason, ue.Got, t.host, t.path, envTrustOnFirstUse)
	}
	var me *dial.MismatchError
	if errors.As(err, &me) {
		source, fix := me.Source, "remove its line from "+knownPeersPath(s)+" or put the new fingerprint in the URL"
		if t.fingerprint != "" {
			source, fix = "the URL", "put the new fingerprint in the URL"
		}
		return fmt.Errorf("IDENTITY OF THE NODE AT %s HAS CHANGED or is not who you expect: it presented %s but %s says %s. "+
			"If its key really changed, %s; otherwise someone may be intercepting the connection",
			me.Addr, me.Got, source, me.Expected, fix)
	}
	return err
}

// knownPeersPath is the known_peers file of the data directory in use.
func knownPeersPath(s *settings) string {
	d, err := datadir.Open(s.dataDir)
	if err != nil {
		return "known_peers"
	}
	return d.KnownPeersPath()
}

// streamError explains a stream that failed: the node's reason when it
// closed the connection (a handler that went away, a refusal), else the
// error as it is.
func streamError(conn endpoint.Conn, err error) error {
	cause := context.Cause(conn.Context())
	for _, e := range []error{err, cause} {
		if reason := closeReason(e); reason != "" {
			return errors.New(reason)
		}
	}
	return err
}

// clip shortens text from git or the node for messages.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
