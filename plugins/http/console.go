package httpplugin

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"path"
	"strings"
	"time"
)

// The browser console (docs/spec/handlers.md §HTTP, Console): static files
// embedded in the plugin, served at / (the page) and /console/ (its
// assets), under a Content-Security-Policy that lets the page load and
// connect to nothing but the node itself. The page talks to the node
// through the gateway and /alknet/call like any other client, with the
// token the user types (kept in the tab's sessionStorage).

//go:embed console
var consoleFiles embed.FS

// consolePrefix is the path the console's assets are served under.
const consolePrefix = "/console/"

// consoleAsset is one embedded file, ready to serve.
type consoleAsset struct {
	body  []byte
	ctype string
	etag  string
}

// consoleTypes are the Content-Types of the console's files (the system's
// MIME table is not consulted: it differs between hosts).
var consoleTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// consoleAssets are the console's files by name.
var consoleAssets = loadConsoleAssets()

func loadConsoleAssets() map[string]consoleAsset {
	entries, err := consoleFiles.ReadDir("console")
	if err != nil {
		panic("console assets: " + err.Error()) // embedded at build time
	}
	assets := map[string]consoleAsset{}
	for _, e := range entries {
		ctype, ok := consoleTypes[path.Ext(e.Name())]
		if e.IsDir() || !ok {
			continue
		}
		b, err := consoleFiles.ReadFile("console/" + e.Name())
		if err != nil {
			panic("console assets: " + err.Error())
		}
		sum := sha256.Sum256(b)
		assets[e.Name()] = consoleAsset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return assets
}

func init() {
	extraRoutes = append(extraRoutes, (*Plugin).consoleRoutes)
}

// consoleRoutes serves the page at exactly / and one level of assets under
// /console/; anything else there (/console itself, deeper paths, other
// methods) falls through to the decoy, as does everything when console =
// false.
func (p *Plugin) consoleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		p.serveConsole(w, r, "index.html")
	})
	mux.HandleFunc("GET "+consolePrefix+"{name}", func(w http.ResponseWriter, r *http.Request) {
		p.serveConsole(w, r, r.PathValue("name"))
	})
}

func (p *Plugin) serveConsole(w http.ResponseWriter, r *http.Request, name string) {
	a, ok := consoleAssets[name]
	if !ok || !p.cfg.Load().console {
		p.decoy(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Content-Security-Policy", consoleCSP(r.Host))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	// Revalidated each time: a new plugin version serves new files at the
	// same names.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}

// consoleCSP is the console's Content-Security-Policy: scripts, styles and
// connections only to the node itself. 'self' covers the node's own
// WebSocket in current browsers; the wss: source names it for the ones
// that read CSP level 2. A Host the policy cannot carry safely is left
// out, which only narrows the policy.
func consoleCSP(host string) string {
	connect := "'self'"
	if validCSPHost(host) {
		connect += " wss://" + host
	}
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src " + connect +
		"; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// validCSPHost: a host[:port] of letters, digits, dots, hyphens, or a
// bracketed IPv6 literal, nothing that could end a CSP source or
// directive.
func validCSPHost(host string) bool {
	if host == "" || len(host) > 262 {
		return false
	}
	return strings.IndexFunc(host, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c))
	}) < 0
}
