// Package ssh is the Alknet SSH plugin: an SSH server
// (golang.org/x/crypto/ssh) on the ALPN alknet/ssh, so that stock OpenSSH
// clients reach a node through `alknet pipe` as a ProxyCommand or through a
// plain-TCP port the node maps to the ALPN. Each stream of a connection is
// one SSH connection.
//
// Authentication is by public key only: the node's [[auth.peers]]
// ssh_keys, authorized_keys files mapped to an identity, or OpenSSH user
// certificates of configured authorities. What an identity may do is
// decided by its scopes: ssh:exec (allow-listed programs, no shell
// involved), ssh:shell (if allow_shell), ssh:forward (-L, -D) and
// ssh:remote-forward (-R) within the forwarding rules, ssh:sftp (the sftp
// subsystem, bridged to the node's alknet/sftp handler), git:read
// (git-upload-pack, git-upload-archive) and git:write (git-receive-pack),
// bridged to alknet/git. See README.md.
package ssh

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/plugins/sdk"
)

// Identification of the plugin.
const (
	// Version of the plugin (semver).
	Version = "0.1.0"
	// ALPN served.
	ALPN = "alknet/ssh"
	// CapHostKey is the capability holding the host key's Ed25519 seed.
	CapHostKey = "ssh_host_key"
	// OpSessions lists the active SSH connections.
	OpSessions = "ssh/sessions"
)

// Scopes an identity needs.
const (
	ScopeExec          = "ssh:exec"           // run programs of the exec_allow allow-list
	ScopeShell         = "ssh:shell"          // interactive shell (allow_shell setting)
	ScopeForward       = "ssh:forward"        // -L/-D (direct-tcpip)
	ScopeRemoteForward = "ssh:remote-forward" // -R (tcpip-forward)
	ScopeSFTP          = "ssh:sftp"           // the sftp subsystem
	ScopeGitRead       = "git:read"           // git-upload-pack, git-upload-archive through the Git bridge
	ScopeGitWrite      = "git:write"          // git-receive-pack through the Git bridge
)

// ALPNs of the handlers SSH bridges to.
const (
	ALPNSFTP = "alknet/sftp"
	ALPNGit  = "alknet/git"
)

// Plugin is the SSH plugin.
type Plugin struct {
	// Logger receives the plugin's log lines; nil means the SDK's logger,
	// whose lines the node shows under the plugin's name.
	Logger hclog.Logger

	logOnce sync.Once
	log     hclog.Logger
	cfg     atomic.Pointer[config]

	mu    sync.Mutex
	conns map[*serverConn]struct{}

	gate  gate                             // unauthenticated connections, per-source penalties (limits.go)
	clock atomic.Pointer[func() time.Time] // penalties' clock; unset: time.Now (tests set it)
}

var (
	_ sdk.ConnServer   = (*Plugin)(nil)
	_ sdk.OperationSet = (*Plugin)(nil)
	_ sdk.Configurer   = (*Plugin)(nil)
)

func (h *Plugin) logger() hclog.Logger {
	h.logOnce.Do(func() {
		h.log = h.Logger
		if h.log == nil {
			h.log = sdk.Logger()
		}
	})
	return h.log
}

// Info describes the SSH plugin.
func (h *Plugin) Info() sdk.Info {
	return sdk.Info{
		Name: "ssh", Version: Version, ALPNs: []string{ALPN},
		Description: "SSH server for stock OpenSSH clients: allow-listed exec, shell, port forwarding, sftp and git bridges",
		Capabilities: []sdk.CapabilitySpec{{Name: CapHostKey, Required: true,
			Description: "the SSH host key as a 32-byte Ed25519 seed (granted by default from the node's vault; the host_key_file setting overrides it)"}},
		ConfigSchema: json.RawMessage(configSchema),
	}
}

// Session describes one active SSH connection (ssh/sessions).
type Session struct {
	ID         string    `json:"id"`
	Auth       string    `json:"auth"`
	RemoteAddr string    `json:"remote_addr"`
	User       string    `json:"user"`
	Since      time.Time `json:"since"`
}

// Operations are the plugin's operations: ssh/sessions.
func (h *Plugin) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Query(OpSessions, h.sessions).RequireScopes("admin").
			Describe("active SSH connections: identity, how it authenticated, remote address, SSH user name, start time"),
	}
}

const configSchema = `{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "host_key_file": {"type": "string", "description": "OpenSSH private key (mode 0600) instead of the ssh_host_key capability"},
    "exec_allow": {"description": "programs exec requests may run (scope ssh:exec): a list of program names resolved in PATH at start, or a table of command name -> absolute program path",
      "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object", "additionalProperties": {"type": "string"}}]},
    "allow_shell": {"type": "boolean", "default": false, "description": "enable shell requests (scope ssh:shell)"},
    "shell": {"type": "string", "default": "/bin/sh", "description": "absolute path of the shell for shell requests, if allow_shell"},
    "forward_rules": {"type": "array", "description": "forwarding rules: the first whose target matches decides; no match denies",
      "items": {"type": "object", "required": ["target", "action"], "additionalProperties": false,
        "properties": {"target": {"type": "string", "description": "host:port pattern; * for any host or any port"},
          "action": {"enum": ["allow", "deny"]},
          "direction": {"enum": ["local", "remote", "both"], "default": "both", "description": "local: -L/-D (direct-tcpip); remote: -R (tcpip-forward)"}}}},
    "authorized_keys": {"type": "array", "items": {"type": "object", "required": ["file", "identity"], "additionalProperties": false,
      "properties": {"file": {"type": "string"}, "identity": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}}}}},
    "cert_authorities": {"type": "array", "items": {"type": "object", "required": ["public_key"], "additionalProperties": false,
      "properties": {"public_key": {"type": "string"}, "scopes": {"type": "array", "items": {"type": "string"}}}}},
    "max_auth_attempts": {"type": "integer", "minimum": 1, "default": 5},
    "handshake_timeout": {"type": "string", "default": "30s"},
    "client_alive_interval": {"type": "string", "default": "15s", "description": "ask an idle client to answer this often (keeps the connection under the node's idle timeout; 0s: off)"},
    "client_alive_count_max": {"type": "integer", "minimum": 1, "default": 3, "description": "unanswered keepalives that end a connection"},
    "ciphers": {"type": "array", "items": {"type": "string"}, "minItems": 1,
      "default": ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"],
      "description": "session ciphers offered, in order (chacha20-poly1305@openssh.com is supported but slow in Go on amd64, so not offered by default)"},
    "prefer_server_ciphers": {"type": "boolean", "default": true,
      "description": "each client gets the first of ciphers it supports (the node offers it that one only); false: the client's own order decides, as with other SSH servers"},
    "kex_algorithms": {"type": "array", "items": {"type": "string"}, "minItems": 1,
      "default": ["mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521", "diffie-hellman-group16-sha512", "diffie-hellman-group14-sha256"],
      "description": "key exchanges offered, in order; SHA-1 ones (diffie-hellman-group14-sha1, ...) only if listed here"},
    "macs": {"type": "array", "items": {"type": "string"}, "minItems": 1,
      "default": ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512"],
      "description": "MACs offered with non-AEAD ciphers, in order; hmac-sha1 and hmac-sha1-96 only if listed here"},
    "max_startups": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 1}], "default": "10:30:100",
      "description": "start:rate:full: from start unauthenticated connections, drop new ones with a probability rising from rate% to 100% at full (a number n: start = full = n)"},
    "penalty_authfail": {"type": "string", "default": "5s", "description": "penalty a source (IPv4 address, IPv6 /64) accrues per connection that failed to authenticate; 0s: no penalties"},
    "penalty_min": {"type": "string", "default": "15s", "description": "accrued penalty from which the source's new connections are refused until it runs out"},
    "penalty_max": {"type": "string", "default": "600s", "description": "cap of a source's accrued penalty"},
    "penalty_max_sources": {"type": "integer", "minimum": 1, "default": 65536, "description": "sources under penalty remembered; past it, the one whose penalty ends soonest is forgotten"},
    "max_sessions": {"type": "integer", "minimum": 1, "default": 10, "description": "session channels open at once on one SSH connection"},
    "max_forward_channels": {"type": "integer", "minimum": 1, "default": 64, "description": "forwarding channels (-L/-D and -R) open at once on one SSH connection"}
  }
}`

// ValidateSettings checks settings as Configure would at start, without
// applying them (`alknet config check`): unknown keys, exec_allow
// programs that are not installed, unreadable files.
func (h *Plugin) ValidateSettings(settings json.RawMessage) error {
	_, err := parseSettings(settings)
	return err
}

// Configure validates the settings (unknown keys are errors) and applies
// them: at start, and on every reload — new SSH connections use them.
func (h *Plugin) Configure(_ context.Context, settings json.RawMessage, _ *sdk.Host) error {
	cfg, err := parseSettings(settings)
	if err != nil {
		return err
	}
	if cfg.shellIdle != "" {
		h.logger().Warn("shell is set but allow_shell is not: shell requests are refused", "shell", cfg.shellIdle)
	}
	if len(cfg.sha1) > 0 {
		h.logger().Warn("SHA-1 algorithms enabled by the settings; offer them only while a client needs them", "algorithms", strings.Join(cfg.sha1, ","))
	}
	h.cfg.Store(cfg)
	return nil
}

// hostSigner is the host key: host_key_file if set, else the granted
// ssh_host_key seed.
func hostSigner(cfg *config, caps sdk.Capabilities) (gossh.Signer, error) {
	if cfg.hostKey != nil {
		return cfg.hostKey, nil
	}
	s, ok := caps.Get(CapHostKey)
	if !ok {
		return nil, errors.New("no SSH host key: grant the capability ssh_host_key ([plugins.ssh.capabilities]) or set host_key_file")
	}
	seed := s.Bytes()
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("capability ssh_host_key holds %d bytes; want a %d-byte Ed25519 seed (vault:ed25519:<path>)", len(seed), ed25519.SeedSize)
	}
	return gossh.NewSignerFromKey(ed25519.NewKeyFromSeed(seed))
}

// ServeConn runs one SSH server connection on each stream of c, and
// returns when c stops accepting streams and every SSH connection ended.
// A connection on which no SSH connection runs any more is done: once the
// last one ends (or a stream is refused and none runs), ServeConn stops
// accepting and returns, and the node closes the connection at once
// instead of holding it until its idle timeout (docs/spec/handlers.md).
func (h *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	actx, stop := context.WithCancel(ctx)
	defer stop()
	var mu sync.Mutex
	running := 0
	// ended is called when a stream's SSH connection ended or the stream
	// was refused: with nothing left running, the connection is done.
	ended := func() {
		mu.Lock()
		defer mu.Unlock()
		if running == 0 {
			stop()
		}
	}
	for {
		st, err := c.AcceptStream(actx)
		if err != nil {
			return nil // closed, draining or done; connections in progress go on
		}
		mu.Lock()
		if actx.Err() != nil {
			mu.Unlock()
			closeStream(st) // arrived as the last SSH connection ended
			return nil
		}
		mu.Unlock()
		// Each SSH connection runs with the settings current when it
		// starts, so a reload applies to the next one.
		cfg := h.cfg.Load()
		if cfg == nil {
			closeStream(st)
			return errors.New("ssh: not configured")
		}
		signer, err := hostSigner(cfg, c.Capabilities())
		if err != nil {
			h.logger().Error("cannot serve SSH", "remote_addr", c.Auth().RemoteAddr, "error", err)
			closeStream(st)
			return err
		}
		// Refused connections are closed before a byte of SSH is sent:
		// they cost the node no key exchange (limits.go).
		authDone, ok := h.admit(cfg, c.Auth().RemoteAddr)
		if !ok {
			closeStream(st)
			ended()
			continue
		}
		mu.Lock()
		running++
		mu.Unlock()
		wg.Add(1)
		go func() {
			// Owned by ServeConn, which waits for it.
			defer wg.Done()
			defer func() {
				mu.Lock()
				running--
				mu.Unlock()
				ended()
			}()
			defer authDone()
			defer h.recoverPanic("stream")
			h.serveStream(ctx, c, cfg, signer, st, authDone)
		}()
	}
}

func (h *Plugin) recoverPanic(where string) {
	if p := recover(); p != nil {
		h.logger().Error("panic recovered", "in", where, "panic", fmt.Sprint(p))
	}
}

// sessions answers ssh/sessions.
func (h *Plugin) sessions(context.Context, *sdk.Call, struct{}) ([]Session, error) {
	out := []Session{}
	h.mu.Lock()
	for c := range h.conns {
		out = append(out, Session{ID: c.id.ID, Auth: c.source, RemoteAddr: c.remote, User: c.sconn.User(), Since: c.since})
	}
	h.mu.Unlock()
	slices.SortFunc(out, func(a, b Session) int { return a.Since.Compare(b.Since) })
	return out, nil
}

func (h *Plugin) track(c *serverConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		h.conns = map[*serverConn]struct{}{}
	}
	h.conns[c] = struct{}{}
}

func (h *Plugin) untrack(c *serverConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, c)
}
