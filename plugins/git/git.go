// Package git is the Git plugin (docs/spec/handlers.md §Git): git's smart
// protocol on the alknet/git ALPN, one request per stream, for stock git
// through git-remote-alknet and through the SSH plugin's bridge.
//
// git's own programs serve the wire — git upload-pack, receive-pack and
// upload-archive, run per request with a clean environment in a process
// group of their own — and go-git v5 does everything around them:
// creating, listing and deleting the bare repositories, reading refs, and
// checking the push rules in a pre-receive hook that is this plugin's own
// executable (docs/architecture.md D12). Access: git:read, git:write and
// git:create, narrowed per identity by resources{"git-repo": […]}
// (access.go), and public repositories for everyone.
package git

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/sdk"
)

// Version of the plugin (-ldflags "-X alknet.dev/alknet/plugins/git.Version=…").
var Version = "0.1.0"

// ALPN served by the plugin.
const ALPN = "alknet/git"

// Main is the plugin executable's main: `alknet-plugin-git pre-receive
// <rules file> <repository>` is the hook git runs before it accepts a
// push; anything else is sdk.Serve.
func Main() {
	if len(os.Args) > 1 && os.Args[1] == hookCommand {
		os.Exit(runHook(os.Args[2:], os.Stdin, os.Stderr))
	}
	sdk.Serve(&Plugin{})
}

// Plugin is the Git plugin.
type Plugin struct {
	// HookExecutable is the program the pre-receive hooks run with the
	// argument "pre-receive" (default: a copy of this executable made at
	// start, <state>/bin/alknet-plugin-git). Its main must call Main.
	HookExecutable string
	// Logger replaces sdk.Logger().
	Logger hclog.Logger

	cfg    atomic.Pointer[config]
	limits limiter

	mu      sync.Mutex // Configure, and creating and deleting repositories
	hookExe string     // the program hooks run, once set up
	hooked  string     // what the hooks of the repositories were installed for
}

var (
	_ sdk.ConnServer        = (*Plugin)(nil)
	_ sdk.OperationSet      = (*Plugin)(nil)
	_ sdk.Configurer        = (*Plugin)(nil)
	_ sdk.SettingsValidator = (*Plugin)(nil)
)

// Info describes the plugin.
func (p *Plugin) Info() sdk.Info {
	return sdk.Info{Name: "git", Version: Version, ALPNs: []string{ALPN},
		Description:  "Git hosting for stock git: bare repositories, per-repository access, push rules",
		ConfigSchema: json.RawMessage(configSchema)}
}

func (p *Plugin) log() hclog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return sdk.Logger()
}

// lookGit finds git in PATH.
func lookGit() (string, error) {
	path, err := exec.LookPath("git")
	if err != nil {
		return "", errors.New("git not found in PATH: install it (Debian: apt-get install git)")
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return path, nil
}

// ValidateSettings checks settings as Configure would.
func (p *Plugin) ValidateSettings(settings json.RawMessage) error {
	if _, err := parseSettings(settings, "/"); err != nil {
		return err
	}
	_, err := lookGit()
	return err
}

// Configure applies settings at start and on every reload: it finds git,
// writes the push rules file the hooks read, and (at start, or when root
// changed) installs the hook in every repository.
func (p *Plugin) Configure(_ context.Context, settings json.RawMessage, host *sdk.Host) error {
	state := host.StateDir()
	cfg, err := parseSettings(settings, state)
	if err != nil {
		return err
	}
	if cfg.root == "" {
		return errors.New("git: no directory for repositories: set root in [plugins.git] (the node gave the plugin no state directory)")
	}
	if cfg.git, err = lookGit(); err != nil {
		return err
	}
	if state == "" {
		state = cfg.root
	}
	cfg.home = state
	cfg.rulesFile = filepath.Join(state, "push-rules.json")
	for _, d := range []string{cfg.root, state} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("git: create %s: %w", d, err)
		}
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hookExe == "" {
		exe := p.HookExecutable
		if exe == "" {
			exe = filepath.Join(state, "bin", "alknet-plugin-git")
			if err := installSelf(exe); err != nil {
				return fmt.Errorf("git: install the pre-receive hook program: %w", err)
			}
		}
		p.hookExe = exe
	}
	cfg.hookExe = p.hookExe
	if err := writeRules(cfg.rulesFile, cfg); err != nil {
		return fmt.Errorf("git: %w", err)
	}
	if key := cfg.root + "\x00" + cfg.rulesFile + "\x00" + cfg.hookExe; p.hooked != key {
		n := 0
		err := walkRepos(cfg.root, func(name, dir string) error {
			n++
			return installHook(dir, hookScript(cfg.hookExe, cfg.rulesFile, name))
		})
		if err != nil {
			return fmt.Errorf("git: install the pre-receive hooks under %s: %w", cfg.root, err)
		}
		p.hooked = key
		p.log().Info("git repositories ready", "root", cfg.root, "repositories", n, "git", cfg.git)
	}
	p.cfg.Store(cfg)
	return nil
}

// create makes repository name with its hook.
func (p *Plugin) create(cfg *config, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return createRepo(cfg.root, name, hookScript(cfg.hookExe, cfg.rulesFile, name))
}

// ServeConn serves an alknet/git connection: each stream is one request.
func (p *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	a := c.Auth()
	c.EachStream(ctx, func(s *sdk.Stream) { p.serveStream(ctx, a, s) })
	return nil
}
