package ssh

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	gossh "golang.org/x/crypto/ssh"

	"alknet.dev/alknet/plugins/sdk"
)

// Keys of gossh.Permissions.Extensions that carry what authentication
// decided to the rest of the connection. Names with "@alknet.dev" cannot
// collide with OpenSSH certificate extensions.
const (
	extIdentity = "identity@alknet.dev" // JSON of sdk.Identity
	extSource   = "source@alknet.dev"   // peer | authorized_keys | certificate
	extNoPTY    = "no-pty@alknet.dev"   // present: pty-req is refused
	extKey      = "key@alknet.dev"      // fingerprint of a key the node resolved
)

// Where an identity came from.
const (
	sourcePeer = "peer"
	sourceKeys = "authorized_keys"
	sourceCert = "certificate"
)

// errUnknownKey is the rejection for a key nobody configured.
var errUnknownKey = errors.New("ssh: public key not authorized")

// authenticator resolves public keys of one SSH connection to identities.
type authenticator struct {
	ctx    context.Context
	conn   *sdk.Conn
	cfg    *config
	log    hclog.Logger
	remote string

	mu       sync.Mutex
	sessions map[string]*sdk.Session // by key fingerprint, from the node
	failed   int                     // authentication attempts refused (method other than none)
}

// attempted is gossh's AuthLogCallback: it counts the refused attempts,
// whatever the method (a password or keyboard-interactive attempt is
// refused without reaching a callback). "none" is how clients ask which
// methods exist; it tries nothing.
func (a *authenticator) attempted(_ gossh.ConnMetadata, method string, err error) {
	if err == nil || method == "none" {
		return
	}
	if method != "publickey" {
		// Passwords and keyboard-interactive are never offered, so every
		// such attempt is a guess: logged for fail2ban like a refused
		// key (publicKey logs those), naming the method, never the secret.
		a.log.Info("auth attempt", "remote_addr", a.remote, "method", "ssh", "id", "-", "ssh_method", clip(method), "result", "reject")
	}
	a.mu.Lock()
	a.failed++
	a.mu.Unlock()
}

// failures is the number of refused attempts so far.
func (a *authenticator) failures() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.failed
}

// session is the node's session for the key with fingerprint fp, if the
// node resolved it.
func (a *authenticator) session(fp string) *sdk.Session {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions[fp]
}

// close ends the node's sessions of this SSH connection.
func (a *authenticator) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for fp, s := range a.sessions {
		_ = s.Close()
		delete(a.sessions, fp)
	}
}

// publicKey is gossh's PublicKeyCallback: it decides whether key may log in
// and as whom, in order: the node's [[auth.peers]] ssh_keys, the
// authorized_keys settings, the certificate authorities. A rejection is
// logged here; an acceptance only once the client proved it holds the key
// (verified).
func (a *authenticator) publicKey(meta gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	perms, err := a.resolve(meta, key)
	if err != nil {
		a.log.Info("auth attempt", "remote_addr", a.remote, "method", "ssh", "id", gossh.FingerprintSHA256(key), "result", "reject")
		return nil, err
	}
	return perms, nil
}

// verified is gossh's VerifiedPublicKeyCallback: the signature checked out.
func (a *authenticator) verified(_ gossh.ConnMetadata, _ gossh.PublicKey, perms *gossh.Permissions, _ string) (*gossh.Permissions, error) {
	id, _ := identityOf(perms)
	a.log.Info("auth attempt", "remote_addr", a.remote, "method", "ssh", "id", id.ID, "result", "accept")
	return perms, nil
}

func (a *authenticator) resolve(meta gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
	if cert, ok := key.(*gossh.Certificate); ok {
		return a.certificate(meta, cert)
	}
	fp := gossh.FingerprintSHA256(key)
	if sess := a.session(fp); sess != nil {
		return peerPermissions(sess, fp), nil
	}
	if a.conn != nil {
		// The node resolves the key under its current peers; gossh has
		// already checked — or will check before accepting — that the
		// client holds it.
		ctx, cancel := context.WithTimeout(a.ctx, 5*time.Second)
		sess, err := a.conn.Host().Authenticate(ctx, a.conn, sdk.CredentialSSHKey, fp)
		cancel()
		// An error (the node going down) means "not a known peer": the
		// plugin's own settings may still know the key.
		if err != nil {
			a.log.Debug("resolving an ssh key through the node failed; trying authorized_keys", "error", err)
		} else if sess != nil {
			a.mu.Lock()
			if a.sessions == nil {
				a.sessions = map[string]*sdk.Session{}
			}
			a.sessions[fp] = sess
			a.mu.Unlock()
			return peerPermissions(sess, fp), nil
		}
	}
	for _, kf := range a.cfg.keyFiles {
		e, err := kf.lookup(key, a.log)
		if err != nil {
			a.log.Warn("authorized_keys file unreadable", "file", kf.path, "error", err)
			continue
		}
		if e == nil {
			continue
		}
		scopes := slices.Clone(kf.scopes)
		if e.noForward {
			scopes = withoutForwarding(scopes)
		}
		return permissions(&sdk.Identity{ID: kf.identity, Scopes: scopes}, sourceKeys, e.noPTY, nil), nil
	}
	return nil, errUnknownKey
}

// certificate accepts an OpenSSH user certificate signed by a configured
// authority, within its validity window. Principals are not checked: the
// identity is the certificate's key id. Of the critical options only
// source-address is supported (gossh enforces it); a certificate carrying
// another one (force-command, …) is refused. The permit-pty and
// permit-port-forwarding extensions are honoured as OpenSSH does.
func (a *authenticator) certificate(meta gossh.ConnMetadata, cert *gossh.Certificate) (*gossh.Permissions, error) {
	if cert.CertType != gossh.UserCert {
		return nil, errors.New("ssh: not a user certificate")
	}
	ca := -1
	signer := cert.SignatureKey.Marshal()
	for i, c := range a.cfg.cas {
		if bytes.Equal(c.key.Marshal(), signer) {
			ca = i
			break
		}
	}
	if ca < 0 {
		return nil, errors.New("ssh: certificate signed by an unknown authority")
	}
	if cert.KeyId == "" {
		return nil, errors.New("ssh: certificate has no key id")
	}
	principal := meta.User()
	if len(cert.ValidPrincipals) > 0 && !slices.Contains(cert.ValidPrincipals, principal) {
		principal = cert.ValidPrincipals[0] // any principal is accepted
	}
	checker := gossh.CertChecker{SupportedCriticalOptions: []string{"source-address"}}
	if err := checker.CheckCert(principal, cert); err != nil {
		return nil, err
	}
	scopes := slices.Clone(a.cfg.cas[ca].scopes)
	if _, ok := cert.Extensions["permit-port-forwarding"]; !ok {
		scopes = withoutForwarding(scopes)
	}
	_, pty := cert.Extensions["permit-pty"]
	return permissions(&sdk.Identity{ID: cert.KeyId, Scopes: scopes}, sourceCert, !pty, cert.CriticalOptions), nil
}

// peerPermissions are those of a key the node resolved to a peer.
func peerPermissions(sess *sdk.Session, fp string) *gossh.Permissions {
	p := permissions(sess.Identity, sourcePeer, false, nil)
	p.Extensions[extKey] = fp
	return p
}

// withoutForwarding removes the forwarding scopes (-L/-D and -R), as
// OpenSSH's no-port-forwarding does.
func withoutForwarding(scopes []string) []string {
	return slices.DeleteFunc(scopes, func(s string) bool { return s == ScopeForward || s == ScopeRemoteForward })
}

func permissions(id *sdk.Identity, source string, noPTY bool, critical map[string]string) *gossh.Permissions {
	b, _ := json.Marshal(id)
	p := &gossh.Permissions{Extensions: map[string]string{extIdentity: string(b), extSource: source}}
	if noPTY {
		p.Extensions[extNoPTY] = ""
	}
	if len(critical) > 0 {
		p.CriticalOptions = map[string]string{}
		for k, v := range critical {
			p.CriticalOptions[k] = v
		}
	}
	return p
}

// identityOf reads the identity authentication stored in perms.
func identityOf(perms *gossh.Permissions) (*sdk.Identity, error) {
	if perms == nil {
		return nil, errors.New("no permissions")
	}
	var id sdk.Identity
	if err := json.Unmarshal([]byte(perms.Extensions[extIdentity]), &id); err != nil || id.ID == "" {
		return nil, errors.New("no identity in permissions")
	}
	return &id, nil
}

// keyFile is one authorized_keys setting. The file is re-read when it
// changes, so keys can be added or removed without a restart, as with
// OpenSSH.
type keyFile struct {
	path     string
	identity string
	scopes   []string

	mu      sync.Mutex
	modTime time.Time
	size    int64
	keys    map[string]keyEntry // by wire-format public key
}

type keyEntry struct {
	noForward bool
	noPTY     bool
}

// lookup finds key in the file (nil if absent).
func (f *keyFile) lookup(key gossh.PublicKey, log hclog.Logger) (*keyEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.path)
	if err != nil {
		return nil, err
	}
	if f.keys == nil || !st.ModTime().Equal(f.modTime) || st.Size() != f.size {
		keys, err := f.parse(log)
		if err != nil {
			return nil, err
		}
		f.keys, f.modTime, f.size = keys, st.ModTime(), st.Size()
	}
	e, ok := f.keys[string(key.Marshal())]
	if !ok {
		return nil, nil
	}
	return &e, nil
}

// load checks that the file is readable and parses (Configure).
func (f *keyFile) load() (int, error) {
	keys, err := f.parse(nil)
	return len(keys), err
}

func (f *keyFile) parse(log hclog.Logger) (map[string]keyEntry, error) {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return nil, err
	}
	keys := map[string]keyEntry{}
	for rest := b; len(rest) > 0; {
		k, _, opts, next, err := gossh.ParseAuthorizedKey(rest)
		if err != nil {
			break // no more keys
		}
		rest = next
		e, bad := keyOptions(opts)
		if bad != "" {
			if log != nil {
				log.Warn("authorized_keys entry ignored: option not supported", "file", f.path, "key", gossh.FingerprintSHA256(k), "option", bad)
			}
			continue
		}
		keys[string(k.Marshal())] = e
	}
	return keys, nil
}

// keyOptions interprets authorized_keys options. Restrictions the plugin
// can honour are honoured; an option that would grant or restrict
// something it cannot enforce (command=, from=, permitopen=, …) makes the
// whole entry ignored, so that reusing an existing file never grants more
// than it did under sshd.
func keyOptions(opts []string) (keyEntry, string) {
	var e keyEntry
	for _, o := range opts {
		name, _, _ := strings.Cut(o, "=")
		switch strings.ToLower(name) {
		case "restrict":
			e.noForward, e.noPTY = true, true
		case "no-port-forwarding":
			e.noForward = true
		case "port-forwarding":
			e.noForward = false
		case "no-pty":
			e.noPTY = true
		case "pty":
			e.noPTY = false
		case "no-agent-forwarding", "no-x11-forwarding", "no-user-rc",
			"agent-forwarding", "x11-forwarding", "user-rc", "no-touch-required":
			// Agent/X11 forwarding and rc files are never offered; a
			// touch stays required for security keys (stricter).
		default:
			return e, name
		}
	}
	return e, ""
}

// tcpAddr turns the node's textual remote address into a *net.TCPAddr
// when it is ip:port, so gossh can enforce source-address on certificates.
func tcpAddr(s string) net.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return net.TCPAddrFromAddrPort(ap)
	}
	return textAddr(s)
}

type textAddr string

func (a textAddr) Network() string { return "alknet" }
func (a textAddr) String() string  { return string(a) }
