package ssh

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Settings is the plugin's configuration: the keys of the node's
// [plugins.ssh] table (or its [plugins.ssh.settings] sub-table). Every key
// is documented in README.md.
type Settings struct {
	// HostKeyFile is an OpenSSH PEM private key (mode 0600) used instead
	// of the ssh_host_key capability.
	HostKeyFile string `json:"host_key_file,omitempty"`
	// ExecAllow is the allow-list of programs exec requests may run.
	ExecAllow ExecAllow `json:"exec_allow,omitzero"`
	// AllowShell enables shell requests (scope ssh:shell).
	AllowShell bool `json:"allow_shell,omitempty"`
	// Shell is the absolute path of the shell for shell requests
	// (default /bin/sh); it enables nothing by itself.
	Shell string `json:"shell,omitempty"`
	// ForwardRules decide which destinations -L/-D may reach and which
	// addresses -R may listen on: the first matching rule wins, no match
	// denies.
	ForwardRules []ForwardRule `json:"forward_rules,omitempty"`
	// AuthorizedKeys maps OpenSSH authorized_keys files to identities.
	AuthorizedKeys []AuthorizedKeys `json:"authorized_keys,omitempty"`
	// CertAuthorities are user-certificate authorities.
	CertAuthorities []CertAuthority `json:"cert_authorities,omitempty"`
	// MaxAuthAttempts is the number of failed authentication attempts
	// after which a connection is dropped (default 5).
	MaxAuthAttempts *int `json:"max_auth_attempts,omitempty"`
	// HandshakeTimeout bounds the banner, key exchange and authentication
	// (a Go duration, default "30s").
	HandshakeTimeout string `json:"handshake_timeout,omitempty"`
	// Ciphers are the session ciphers offered, in preference order
	// (default: DefaultCiphers).
	Ciphers []string `json:"ciphers,omitempty"`
	// PreferServerCiphers has each client get the first of Ciphers it
	// supports, rather than the first of its own list (default true; see
	// kexinit.go).
	PreferServerCiphers *bool `json:"prefer_server_ciphers,omitempty"`
}

// DefaultCiphers are the ciphers offered unless settings name others:
// AES-GCM and AES-CTR (with an encrypt-then-MAC HMAC-SHA2), which Go
// runs with the CPU's AES and SHA instructions.
// chacha20-poly1305@openssh.com is supported but not offered by default:
// golang.org/x/crypto/ssh implements it without assembly on amd64, where
// it ran at about a fifth of AES's speed and was the largest cost of a
// bulk transfer. A client picks the first cipher of its own list that the
// server offers, so leaving it out is what lets OpenSSH (chacha20 first)
// choose AES. Add it back with ciphers = [...] when a client needs it.
var DefaultCiphers = []string{
	gossh.CipherAES128GCM, gossh.CipherAES256GCM,
	gossh.CipherAES128CTR, gossh.CipherAES192CTR, gossh.CipherAES256CTR,
}

// ExecAllow is the exec allow-list in either of its two forms: a list of
// program names, each resolved in PATH when the plugin is configured
// (["uptime", "git-upload-pack"]), or a table of command name → absolute
// program path ({"uptime": "/usr/bin/uptime"}).
type ExecAllow struct {
	Names []string          // list form
	Paths map[string]string // table form
}

// IsZero reports an empty allow-list (for omitzero).
func (e ExecAllow) IsZero() bool { return e.Names == nil && e.Paths == nil }

// UnmarshalJSON accepts a list of names or an object of name → path.
func (e *ExecAllow) UnmarshalJSON(b []byte) error {
	*e = ExecAllow{}
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		return nil
	case len(b) > 0 && b[0] == '[':
		if err := json.Unmarshal(b, &e.Names); err != nil {
			return errors.New("exec_allow: want a list of program names ([\"uptime\", \"git-upload-pack\"]) or a table of name = \"/absolute/path\"")
		}
		if e.Names == nil {
			e.Names = []string{}
		}
		return nil
	case len(b) > 0 && b[0] == '{':
		if err := json.Unmarshal(b, &e.Paths); err != nil {
			return errors.New("exec_allow: a table maps a command name to an absolute program path (uptime = \"/usr/bin/uptime\")")
		}
		if e.Paths == nil {
			e.Paths = map[string]string{}
		}
		return nil
	}
	return errors.New("exec_allow: want a list of program names ([\"uptime\", \"git-upload-pack\"]) or a table of name = \"/absolute/path\"")
}

// MarshalJSON writes the form the allow-list was given in.
func (e ExecAllow) MarshalJSON() ([]byte, error) {
	if e.Paths != nil {
		return json.Marshal(e.Paths)
	}
	if e.Names != nil {
		return json.Marshal(e.Names)
	}
	return []byte("null"), nil
}

// ForwardRule is one [[plugins.ssh.forward_rules]] entry.
type ForwardRule struct {
	// Target is a host:port pattern; "*" matches any host or any port.
	Target string `json:"target"`
	// Action is "allow" or "deny".
	Action string `json:"action"`
	// Direction is "local" (-L, -D), "remote" (-R) or "both" (default).
	Direction string `json:"direction,omitempty"`
}

// AuthorizedKeys maps every key of an OpenSSH authorized_keys file to one
// identity.
type AuthorizedKeys struct {
	File     string   `json:"file"`
	Identity string   `json:"identity"`
	Scopes   []string `json:"scopes,omitempty"`
}

// CertAuthority accepts OpenSSH user certificates it signed; the
// identity is the certificate's key id.
type CertAuthority struct {
	PublicKey string   `json:"public_key"`
	Scopes    []string `json:"scopes,omitempty"`
}

// Defaults.
const (
	defaultMaxAuthAttempts  = 5
	defaultHandshakeTimeout = 30 * time.Second
	defaultShell            = "/bin/sh"
)

// config is Settings validated and ready to use.
type config struct {
	hostKey          gossh.Signer // nil: use the ssh_host_key capability
	exec             map[string]string
	shell            string // empty: shell requests are refused
	shellIdle        string // shell set without allow_shell (warned about)
	forwardRules     []forwardRule
	keyFiles         []*keyFile
	cas              []certAuthority
	maxAuthAttempts  int
	handshakeTimeout time.Duration
	ciphers          []string
	preferServer     bool // prefer_server_ciphers
}

type certAuthority struct {
	key    gossh.PublicKey
	scopes []string
}

// parseSettings decodes and validates the settings JSON. Unknown keys are
// refused by name so that a typo never silently disables a restriction.
func parseSettings(raw json.RawMessage) (*config, error) {
	var s Settings
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("ssh settings: %w (see the plugin README for the keys of [plugins.ssh])", err)
		}
	}
	c := &config{exec: map[string]string{}, maxAuthAttempts: defaultMaxAuthAttempts, handshakeTimeout: defaultHandshakeTimeout,
		ciphers: slices.Clone(DefaultCiphers), preferServer: true}
	if s.HostKeyFile != "" {
		k, err := loadHostKey(s.HostKeyFile)
		if err != nil {
			return nil, err
		}
		c.hostKey = k
	}
	for name, path := range s.ExecAllow.Paths {
		if err := checkCommandName(name); err != nil {
			return nil, err
		}
		if err := checkProgram(path); err != nil {
			return nil, fmt.Errorf("ssh settings: exec_allow.%s: %w", name, err)
		}
		c.exec[name] = path
	}
	for _, name := range s.ExecAllow.Names {
		if err := checkCommandName(name); err != nil {
			return nil, err
		}
		if strings.Contains(name, "/") {
			return nil, fmt.Errorf("ssh settings: exec_allow: %q: list program names, not paths (or use the table form: name = \"/absolute/path\")", name)
		}
		path, err := resolveProgram(name)
		if err != nil {
			return nil, fmt.Errorf("ssh settings: exec_allow: program %q: %w", name, err)
		}
		c.exec[name] = path
	}
	if s.Shell != "" && !filepath.IsAbs(s.Shell) {
		return nil, fmt.Errorf("ssh settings: shell: %q must be an absolute path", s.Shell)
	}
	if s.AllowShell {
		c.shell = cmp.Or(s.Shell, defaultShell)
		if err := checkProgram(c.shell); err != nil {
			return nil, fmt.Errorf("ssh settings: shell: %w", err)
		}
	} else if s.Shell != "" {
		c.shellIdle = s.Shell
	}
	for i, r := range s.ForwardRules {
		fr, err := parseForwardRule(r)
		if err != nil {
			return nil, fmt.Errorf("ssh settings: forward_rules[%d]: %w", i, err)
		}
		c.forwardRules = append(c.forwardRules, fr)
	}
	for i, ak := range s.AuthorizedKeys {
		if ak.Identity == "" {
			return nil, fmt.Errorf("ssh settings: authorized_keys[%d]: identity is required", i)
		}
		if !filepath.IsAbs(ak.File) {
			return nil, fmt.Errorf("ssh settings: authorized_keys[%d]: file %q must be an absolute path", i, ak.File)
		}
		kf := &keyFile{path: ak.File, identity: ak.Identity, scopes: slices.Clone(ak.Scopes)}
		if _, err := kf.load(); err != nil {
			return nil, fmt.Errorf("ssh settings: authorized_keys[%d]: %w", i, err)
		}
		c.keyFiles = append(c.keyFiles, kf)
	}
	for i, ca := range s.CertAuthorities {
		k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(ca.PublicKey))
		if err != nil {
			return nil, fmt.Errorf("ssh settings: cert_authorities[%d]: public_key is not an OpenSSH public key (\"ssh-ed25519 AAAA…\"): %w", i, err)
		}
		if _, isCert := k.(*gossh.Certificate); isCert {
			return nil, fmt.Errorf("ssh settings: cert_authorities[%d]: public_key is a certificate; give the CA's plain public key", i)
		}
		c.cas = append(c.cas, certAuthority{key: k, scopes: slices.Clone(ca.Scopes)})
	}
	if s.MaxAuthAttempts != nil {
		if *s.MaxAuthAttempts < 1 {
			return nil, fmt.Errorf("ssh settings: max_auth_attempts: %d; want 1 or more", *s.MaxAuthAttempts)
		}
		c.maxAuthAttempts = *s.MaxAuthAttempts
	}
	if s.HandshakeTimeout != "" {
		d, err := time.ParseDuration(s.HandshakeTimeout)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("ssh settings: handshake_timeout: %q is not a positive duration (e.g. \"30s\")", s.HandshakeTimeout)
		}
		c.handshakeTimeout = d
	}
	if s.Ciphers != nil {
		supported := gossh.SupportedAlgorithms().Ciphers
		if len(s.Ciphers) == 0 {
			return nil, fmt.Errorf("ssh settings: ciphers: empty; name one or more of %s", strings.Join(supported, ", "))
		}
		for _, name := range s.Ciphers {
			if !slices.Contains(supported, name) {
				return nil, fmt.Errorf("ssh settings: ciphers: %q is not supported; choose from %s", name, strings.Join(supported, ", "))
			}
		}
		c.ciphers = slices.Clone(s.Ciphers)
	}
	if s.PreferServerCiphers != nil {
		c.preferServer = *s.PreferServerCiphers
	}
	return c, nil
}

// checkCommandName requires a command name an exec request can name:
// one word, no quotes.
func checkCommandName(name string) error {
	if name == "" || strings.ContainsAny(name, " \t\r\n'\"\\") {
		return fmt.Errorf("ssh settings: exec_allow: command name %q must be one word without quotes", name)
	}
	return nil
}

// resolveProgram finds a program name in PATH (the plugin's, which the
// node passes on) as an absolute path to an executable file.
func resolveProgram(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("not found in PATH (%s)", searchPath())
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", err
	}
	if err := checkProgram(p); err != nil {
		return "", err
	}
	return p, nil
}

// checkProgram requires an absolute path to an executable regular file.
func checkProgram(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q must be an absolute path", path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// loadHostKey reads an OpenSSH private key that only its owner can read.
func loadHostKey(path string) (gossh.Signer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("ssh settings: host_key_file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("ssh settings: host_key_file %s has mode %04o; a private key must not be readable by others (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ssh settings: host_key_file: %w", err)
	}
	k, err := gossh.ParsePrivateKey(b)
	if err != nil {
		var pe *gossh.PassphraseMissingError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("ssh settings: host_key_file %s is passphrase-protected; give an unencrypted key (ssh-keygen -p -N '' -f %s)", path, path)
		}
		return nil, fmt.Errorf("ssh settings: host_key_file %s: %w", path, err)
	}
	return k, nil
}

// pattern is the host:port target of a forwarding rule; "*" matches any
// host or port.
type pattern struct {
	host string // lower-case, "*" for any
	ip   netip.Addr
	port int // -1 for any
}

// parsePattern parses a host:port pattern.
func parsePattern(s string) (pattern, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return pattern{}, fmt.Errorf("target %q: want host:port (port may be *, e.g. \"127.0.0.1:*\")", s)
	}
	pt := pattern{host: strings.ToLower(h), port: -1}
	if ip, err := netip.ParseAddr(h); err == nil {
		pt.ip = ip.Unmap()
	}
	if p != "*" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return pattern{}, fmt.Errorf("target %q: port must be 1-65535 or *", s)
		}
		pt.port = n
	}
	return pt, nil
}

// Directions of forwarding a rule applies to.
const (
	dirLocal  = "local"  // direct-tcpip: ssh -L, ssh -D
	dirRemote = "remote" // tcpip-forward: ssh -R
	dirBoth   = "both"
)

// forwardRule is a validated ForwardRule.
type forwardRule struct {
	target    pattern
	allow     bool
	direction string // dirLocal, dirRemote or dirBoth
}

func parseForwardRule(r ForwardRule) (forwardRule, error) {
	var fr forwardRule
	if r.Target == "" {
		return fr, errors.New("target is required (host:port, e.g. \"127.0.0.1:5432\")")
	}
	var err error
	if fr.target, err = parsePattern(r.Target); err != nil {
		return fr, err
	}
	switch strings.ToLower(r.Action) {
	case "allow":
		fr.allow = true
	case "deny":
	case "":
		return fr, errors.New("action is required (\"allow\" or \"deny\")")
	default:
		return fr, fmt.Errorf("action %q: want \"allow\" or \"deny\"", r.Action)
	}
	switch d := strings.ToLower(r.Direction); d {
	case "":
		fr.direction = dirBoth
	case dirLocal, dirRemote, dirBoth:
		fr.direction = d
	default:
		return fr, fmt.Errorf("direction %q: want \"local\", \"remote\" or \"both\"", r.Direction)
	}
	return fr, nil
}

// forwardAllowed applies the forwarding rules to host:port in direction
// (dirLocal or dirRemote): the first rule of that direction whose target
// matches decides; no match denies.
func forwardAllowed(rules []forwardRule, direction, host string, port int) bool {
	for _, r := range rules {
		if r.direction != dirBoth && r.direction != direction {
			continue
		}
		if matches(r.target, host, port) {
			return r.allow
		}
	}
	return false
}

// matches reports whether host:port matches the pattern. Hosts compare
// literally (IP addresses by value): a name is never resolved, so
// "localhost:80" does not match "127.0.0.1:80".
func matches(p pattern, host string, port int) bool {
	if p.port != -1 && p.port != port {
		return false
	}
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	switch {
	case p.host == "*":
		return true
	case p.ip.IsValid():
		ip, err := netip.ParseAddr(host)
		return err == nil && p.ip == ip.Unmap()
	default:
		return p.host == host
	}
}
