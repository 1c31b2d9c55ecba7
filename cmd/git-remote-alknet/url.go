package main

import (
	"fmt"
	"strings"

	"alknet.dev/alknet/core/dial"
	"alknet.dev/alknet/core/identity"
)

// target is what an alknet:// URL names.
type target struct {
	// fingerprint pins the node ("" when the URL names none: known_peers,
	// else WebPKI, decide).
	fingerprint string
	// addr is host:port, the port 4433 when the URL gives none.
	addr string
	// host is the host as the URL writes it (the request line's host=).
	host string
	// path is the repository as the node is asked for it: "/team/app.git".
	path string
}

// urlForm is the URL syntax, for messages.
const urlForm = "alknet://[FINGERPRINT@]host[:port]/<repository>"

// parseURL reads alknet://[FINGERPRINT@]host[:port]/repo. git passes the
// address alone (without "alknet://") for the form alknet::<address>;
// both are accepted. The fingerprint is `alknet id`'s, ed25519:<hex> or
// SHA256:<hex>; an IPv6 host is written in brackets: alknet://[::1]:4433/repo.
func parseURL(raw string) (target, error) {
	rest := raw
	if r, ok := strings.CutPrefix(raw, "alknet://"); ok {
		rest = r
	} else if strings.Contains(raw, "://") {
		return target{}, fmt.Errorf("URL %q: not an alknet:// URL; want %s", raw, urlForm)
	}
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	var t target
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		fp, err := identity.ParseFingerprint(authority[:i])
		if err != nil {
			return target{}, fmt.Errorf("URL %q: %v; want %s", raw, err, urlForm)
		}
		t.fingerprint, authority = fp, authority[i+1:]
	}
	if authority == "" {
		return target{}, fmt.Errorf("URL %q: no host; want %s", raw, urlForm)
	}
	addr, err := dial.NormalizeAddr(authority)
	if err != nil {
		return target{}, fmt.Errorf("URL %q: %v", raw, err)
	}
	if strings.Trim(path, "/") == "" {
		return target{}, fmt.Errorf("URL %q names no repository; want %s, e.g. alknet://%s/team/app.git", raw, urlForm, authority)
	}
	if strings.ContainsAny(path, "\x00\n") {
		return target{}, fmt.Errorf("URL %q: the repository holds a NUL or newline", raw)
	}
	t.addr, t.host, t.path = addr, authority, path
	return t, nil
}

// requestLine is the git-daemon request that opens an alknet/git stream
// (plugins/git/README.md, Request forms), as a pkt-line:
// "git-upload-pack /team/app.git\0host=node.example\0", followed by
// "\0version=N\0" when version > 0.
func requestLine(service string, t target, version int) []byte {
	payload := service + " " + t.path + "\x00host=" + t.host + "\x00"
	if version > 0 {
		payload += fmt.Sprintf("\x00version=%d\x00", version)
	}
	return appendPkt(nil, []byte(payload))
}
