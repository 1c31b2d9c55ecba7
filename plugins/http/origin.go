package httpplugin

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// originAllowed: a request without an Origin header (not from a browser)
// may use /mcp and /alknet/call; one with an Origin must come from this node's own origin
// (https, the Host it asked for) or from one in allowed_origins. This is
// the DNS-rebinding defence of docs/spec/handlers.md §HTTP: a page that
// rebinds its name to the node still sends its own Origin.
func (p *Plugin) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	cfg := p.cfg.Load()
	if cfg.anyOrigin {
		return true
	}
	o, ok := canonicalOrigin(origin)
	if !ok {
		return false
	}
	for _, a := range cfg.origins {
		if ca, ok := canonicalOrigin(a); ok && ca == o {
			return true
		}
	}
	self, ok := canonicalOrigin("https://" + r.Host)
	return ok && r.Host != "" && self == o
}

// canonicalOrigin is scheme://host[:port] in lowercase, without the
// scheme's default port.
func canonicalOrigin(s string) (string, bool) {
	u, err := url.Parse(strings.ToLower(strings.TrimSpace(s)))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	host := u.Host
	if h, port, err := net.SplitHostPort(host); err == nil &&
		((u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80")) {
		host = h
		if strings.Contains(h, ":") {
			host = "[" + h + "]"
		}
	}
	return u.Scheme + "://" + host, true
}
