package ssh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Settings is the plugin's configuration, the node's
// [plugins.ssh.settings] table. Every key is documented in README.md.
type Settings struct {
	// HostKeyFile is an OpenSSH PEM private key (mode 0600) used instead
	// of the ssh_host_key capability.
	HostKeyFile string `json:"host_key_file,omitempty"`
	// Exec maps a command name to the absolute program it runs.
	Exec map[string]string `json:"exec,omitempty"`
	// Shell is the absolute path of the shell for shell requests; empty
	// refuses them.
	Shell string `json:"shell,omitempty"`
	// ForwardAllow lists host:port patterns direct-tcpip may reach.
	ForwardAllow []string `json:"forward_allow,omitempty"`
	// RemoteForwardAllow lists host:port patterns tcpip-forward may bind.
	RemoteForwardAllow []string `json:"remote_forward_allow,omitempty"`
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
)

// config is Settings validated and ready to use.
type config struct {
	hostKey          gossh.Signer // nil: use the ssh_host_key capability
	exec             map[string]string
	shell            string
	forward          []pattern
	remoteForward    []pattern
	keyFiles         []*keyFile
	cas              []certAuthority
	maxAuthAttempts  int
	handshakeTimeout time.Duration
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
			return nil, fmt.Errorf("ssh settings: %w (see the plugin README for the keys of [plugins.ssh.settings])", err)
		}
	}
	c := &config{exec: map[string]string{}, maxAuthAttempts: defaultMaxAuthAttempts, handshakeTimeout: defaultHandshakeTimeout}
	if s.HostKeyFile != "" {
		k, err := loadHostKey(s.HostKeyFile)
		if err != nil {
			return nil, err
		}
		c.hostKey = k
	}
	for name, path := range s.Exec {
		if name == "" || strings.ContainsAny(name, " \t\r\n'\"\\") {
			return nil, fmt.Errorf("ssh settings: exec: command name %q must be one word without quotes", name)
		}
		if err := checkProgram(path); err != nil {
			return nil, fmt.Errorf("ssh settings: exec.%s: %w", name, err)
		}
		c.exec[name] = path
	}
	if s.Shell != "" {
		if err := checkProgram(s.Shell); err != nil {
			return nil, fmt.Errorf("ssh settings: shell: %w", err)
		}
		c.shell = s.Shell
	}
	var err error
	if c.forward, err = parsePatterns("forward_allow", s.ForwardAllow); err != nil {
		return nil, err
	}
	if c.remoteForward, err = parsePatterns("remote_forward_allow", s.RemoteForwardAllow); err != nil {
		return nil, err
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
	return c, nil
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

// pattern is a host:port allow-list entry; "*" matches any host or port.
type pattern struct {
	host string // lower-case, "*" for any
	ip   netip.Addr
	port int // -1 for any
}

func parsePatterns(key string, in []string) ([]pattern, error) {
	var out []pattern
	for _, s := range in {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return nil, fmt.Errorf("ssh settings: %s: %q: want host:port (port may be *, e.g. \"127.0.0.1:*\")", key, s)
		}
		pt := pattern{host: strings.ToLower(h), port: -1}
		if ip, err := netip.ParseAddr(h); err == nil {
			pt.ip = ip.Unmap()
		}
		if p != "*" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("ssh settings: %s: %q: port must be 1-65535 or *", key, s)
			}
			pt.port = n
		}
		out = append(out, pt)
	}
	return out, nil
}

// allowed reports whether host:port matches one of the patterns. Hosts
// compare literally (IP addresses by value): a name is never resolved,
// so "localhost:80" does not allow "127.0.0.1:80".
func allowed(pats []pattern, host string, port int) bool {
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	ip, ipErr := netip.ParseAddr(host)
	for _, p := range pats {
		if p.port != -1 && p.port != port {
			continue
		}
		switch {
		case p.host == "*":
			return true
		case p.ip.IsValid() && ipErr == nil:
			if p.ip == ip.Unmap() {
				return true
			}
		case p.host == host:
			return true
		}
	}
	return false
}
