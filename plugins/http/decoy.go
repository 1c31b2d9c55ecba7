package httpplugin

import (
	"net/http"
	"os"
)

// decoy answers every path the plugin does not serve: a plain 404, a
// static directory (decoy_dir) or a redirect (decoy_redirect). Nothing is
// logged per request: a scanner's 10,000 paths are one counter.
func (p *Plugin) decoy(w http.ResponseWriter, r *http.Request) {
	p.stats.decoy.Add(1)
	cfg := p.cfg.Load()
	switch {
	case cfg.decoyRedirect != "":
		http.Redirect(w, r, cfg.decoyRedirect, http.StatusFound)
	case cfg.decoyDir != "":
		// os.DirFS refuses names with "..": the directory is all it serves.
		http.FileServerFS(os.DirFS(cfg.decoyDir)).ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}
