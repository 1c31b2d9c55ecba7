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
	// ClientAliveInterval is how often the server asks an idle client to
	// answer (OpenSSH's ClientAliveInterval; default "15s", "0s" off): an
	// idle session keeps bytes moving under the node's idle timeout, and a
	// client that stopped answering ClientAliveCountMax times is dropped.
	ClientAliveInterval string `json:"client_alive_interval,omitempty"`
	// ClientAliveCountMax is how many unanswered keepalives end a
	// connection (default 3).
	ClientAliveCountMax *int `json:"client_alive_count_max,omitempty"`
	// Ciphers are the session ciphers offered, in preference order
	// (default: DefaultCiphers).
	Ciphers []string `json:"ciphers,omitempty"`
	// PreferServerCiphers has each client get the first of Ciphers it
	// supports, rather than the first of its own list (default true; see
	// kexinit.go).
	PreferServerCiphers *bool `json:"prefer_server_ciphers,omitempty"`
	// KexAlgorithms are the key exchanges offered, in preference order
	// (default: DefaultKexAlgorithms, no SHA-1).
	KexAlgorithms []string `json:"kex_algorithms,omitempty"`
	// MACs are the message authentication codes offered with non-AEAD
	// ciphers, in preference order (default: DefaultMACs, no SHA-1).
	MACs []string `json:"macs,omitempty"`
	// MaxStartups bounds the connections that have not finished
	// authenticating, as OpenSSH's MaxStartups: "start:rate:full" or one
	// number (default "10:30:100"; see limits.go).
	MaxStartups MaxStartups `json:"max_startups,omitempty"`
	// PenaltyAuthFail is what a source accrues for a connection that
	// ended without authenticating after trying (a Go duration, default
	// "5s"; "0s" turns penalties off).
	PenaltyAuthFail string `json:"penalty_authfail,omitempty"`
	// PenaltyMin is the accrued penalty at which a source is refused
	// (default "15s").
	PenaltyMin string `json:"penalty_min,omitempty"`
	// PenaltyMax caps a source's accrued penalty (default "600s").
	PenaltyMax string `json:"penalty_max,omitempty"`
	// PenaltyMaxSources bounds the sources remembered (default 65536).
	PenaltyMaxSources *int `json:"penalty_max_sources,omitempty"`
	// MaxSessions bounds the session channels open at once on one SSH
	// connection (default 10).
	MaxSessions *int `json:"max_sessions,omitempty"`
	// MaxForwardChannels bounds the forwarding channels (-L/-D and -R)
	// open at once on one SSH connection (default 64).
	MaxForwardChannels *int `json:"max_forward_channels,omitempty"`
}

// MaxStartups is the max_startups setting as given: "start:rate:full",
// or a number (TOML max_startups = 10), kept as its text.
type MaxStartups string

// UnmarshalJSON accepts a string or a whole number.
func (m *MaxStartups) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*m = MaxStartups(s)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err == nil {
		*m = MaxStartups(strconv.FormatInt(n, 10))
		return nil
	}
	return fmt.Errorf("max_startups: %s: want \"start:rate:full\" (e.g. \"10:30:100\") or a number", clip(string(b)))
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

// DefaultKexAlgorithms are the key exchanges offered unless settings name
// others. golang.org/x/crypto/ssh would also offer
// diffie-hellman-group14-sha1, whose exchange hash is SHA-1; it is left
// out, as OpenSSH has done since 8.x, and only a kex_algorithms setting
// that names it brings it back. curve25519-sha256@libssh.org is the name
// OpenSSH before 7.3 used for curve25519-sha256.
var DefaultKexAlgorithms = []string{
	gossh.KeyExchangeMLKEM768X25519,
	gossh.KeyExchangeCurve25519, "curve25519-sha256@libssh.org",
	gossh.KeyExchangeECDHP256, gossh.KeyExchangeECDHP384, gossh.KeyExchangeECDHP521,
	gossh.KeyExchangeDH16SHA512, gossh.KeyExchangeDH14SHA256,
}

// DefaultMACs are the MACs offered unless settings name others: HMAC-SHA2,
// encrypt-then-MAC first. golang.org/x/crypto/ssh would also offer
// hmac-sha1 and hmac-sha1-96; they are left out unless a macs setting
// names them. AEAD ciphers (AES-GCM, chacha20-poly1305) use no MAC.
var DefaultMACs = []string{
	gossh.HMACSHA256ETM, gossh.HMACSHA512ETM, gossh.HMACSHA256, gossh.HMACSHA512,
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
	// defaultClientAliveInterval is half the node's default idle timeout.
	defaultClientAliveInterval = 15 * time.Second
	defaultClientAliveCountMax = 3
	defaultShell               = "/bin/sh"

	defaultMaxStartups        = "10:30:100"
	defaultPenaltyAuthFail    = 5 * time.Second
	defaultPenaltyMin         = 15 * time.Second
	defaultPenaltyMax         = 600 * time.Second
	defaultPenaltyMaxSources  = 65536
	defaultMaxSessions        = 10
	defaultMaxForwardChannels = 64
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
	aliveInterval    time.Duration // client_alive_interval (0: off)
	aliveCountMax    int
	ciphers          []string
	preferServer     bool     // prefer_server_ciphers
	kex              []string // kex_algorithms
	macs             []string
	sha1             []string // SHA-1 algorithms the settings name (warned about)
	startups         startups // max_startups
	penalty          penaltyPolicy
	maxSessions      int
	maxForwards      int // max_forward_channels
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
		aliveInterval: defaultClientAliveInterval, aliveCountMax: defaultClientAliveCountMax,
		ciphers: slices.Clone(DefaultCiphers), preferServer: true,
		kex: slices.Clone(DefaultKexAlgorithms), macs: slices.Clone(DefaultMACs),
		penalty:     penaltyPolicy{authFail: defaultPenaltyAuthFail, min: defaultPenaltyMin, max: defaultPenaltyMax, maxSources: defaultPenaltyMaxSources},
		maxSessions: defaultMaxSessions, maxForwards: defaultMaxForwardChannels}
	c.startups, _ = parseStartups(defaultMaxStartups)
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
	if s.ClientAliveInterval != "" {
		d, err := time.ParseDuration(s.ClientAliveInterval)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("ssh settings: client_alive_interval: %q is not a duration (e.g. \"15s\"; \"0s\" turns keepalives off)", s.ClientAliveInterval)
		}
		c.aliveInterval = d
	}
	if s.ClientAliveCountMax != nil {
		if *s.ClientAliveCountMax < 1 {
			return nil, fmt.Errorf("ssh settings: client_alive_count_max: %d; want 1 or more", *s.ClientAliveCountMax)
		}
		c.aliveCountMax = *s.ClientAliveCountMax
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
	if err := parseLimits(&s, c); err != nil {
		return nil, err
	}
	return c, nil
}

// sha1Algorithms are the key exchanges and MACs golang.org/x/crypto/ssh
// implements that rest on SHA-1: offered only when the settings name them.
var sha1Algorithms = []string{
	gossh.InsecureKeyExchangeDH14SHA1, gossh.InsecureKeyExchangeDH1SHA1, gossh.InsecureKeyExchangeDHGEXSHA1,
	gossh.HMACSHA1, gossh.InsecureHMACSHA196,
}

// algorithmList validates a kex_algorithms or macs setting: every name one
// the library implements (SHA-1 ones included: naming them is how an
// operator brings them back for an old client).
func algorithmList(key string, names, secure, insecure []string) ([]string, []string, error) {
	choose := strings.Join(slices.DeleteFunc(slices.Clone(secure), func(n string) bool { return slices.Contains(sha1Algorithms, n) }), ", ")
	if len(names) == 0 {
		return nil, nil, fmt.Errorf("ssh settings: %s: empty; name one or more of %s", key, choose)
	}
	var sha1 []string
	for _, name := range names {
		if !slices.Contains(secure, name) && !slices.Contains(insecure, name) {
			return nil, nil, fmt.Errorf("ssh settings: %s: %q is not supported; choose from %s", key, name, choose)
		}
		if slices.Contains(sha1Algorithms, name) {
			sha1 = append(sha1, name)
		}
	}
	return slices.Clone(names), sha1, nil
}

// positive reads an optional whole-number setting of at least 1.
func positive(key string, v *int, dst *int) error {
	if v == nil {
		return nil
	}
	if *v < 1 {
		return fmt.Errorf("ssh settings: %s: %d; want 1 or more", key, *v)
	}
	*dst = *v
	return nil
}

// duration reads an optional duration setting; zero is allowed only if
// zeroOK.
func duration(key, v string, zeroOK bool, dst *time.Duration) error {
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || (d == 0 && !zeroOK) {
		want := "a positive duration"
		if zeroOK {
			want = "a duration, 0s or more"
		}
		return fmt.Errorf("ssh settings: %s: %q is not %s (e.g. \"5s\", \"10m\")", key, v, want)
	}
	*dst = d
	return nil
}

// parseLimits validates the settings that bound what a client can make
// the plugin hold (limits.go), and the key exchanges and MACs.
func parseLimits(s *Settings, c *config) error {
	if s.KexAlgorithms != nil {
		kex, sha1, err := algorithmList("kex_algorithms", s.KexAlgorithms,
			append(gossh.SupportedAlgorithms().KeyExchanges, "curve25519-sha256@libssh.org"), gossh.InsecureAlgorithms().KeyExchanges)
		if err != nil {
			return err
		}
		c.kex, c.sha1 = kex, append(c.sha1, sha1...)
	}
	if s.MACs != nil {
		macs, sha1, err := algorithmList("macs", s.MACs, gossh.SupportedAlgorithms().MACs, gossh.InsecureAlgorithms().MACs)
		if err != nil {
			return err
		}
		c.macs, c.sha1 = macs, append(c.sha1, sha1...)
	}
	if s.MaxStartups != "" {
		st, err := parseStartups(string(s.MaxStartups))
		if err != nil {
			return fmt.Errorf("ssh settings: max_startups: %w", err)
		}
		c.startups = st
	}
	p := &c.penalty
	if err := duration("penalty_authfail", s.PenaltyAuthFail, true, &p.authFail); err != nil {
		return err
	}
	if err := duration("penalty_min", s.PenaltyMin, true, &p.min); err != nil {
		return err
	}
	if err := duration("penalty_max", s.PenaltyMax, false, &p.max); err != nil {
		return err
	}
	if p.min > p.max {
		return fmt.Errorf("ssh settings: penalty_min (%v) is above penalty_max (%v): no source would ever be refused; lower penalty_min or raise penalty_max", p.min, p.max)
	}
	if err := positive("penalty_max_sources", s.PenaltyMaxSources, &p.maxSources); err != nil {
		return err
	}
	if err := positive("max_sessions", s.MaxSessions, &c.maxSessions); err != nil {
		return err
	}
	return positive("max_forward_channels", s.MaxForwardChannels, &c.maxForwards)
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
