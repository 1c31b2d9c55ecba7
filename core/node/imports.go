package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/config"
)

// Imports of peers' operations ([[call.imports]], docs/spec/call.md §7):
// the core, not a plugin, holds the connection to each peer, so a peer
// sees this node's identity on alknet/call only where the operator asked
// for it (docs/architecture.md D15).
const (
	importDialTimeout = 15 * time.Second
	importListTimeout = 30 * time.Second
	importMinBackoff  = time.Second
	importMaxBackoff  = time.Minute
	// importRecheck: how often the peer's list is read again on a live
	// connection. A peer's operations change while it runs (its plugins
	// start after its listener, crash, restart, are installed) and the
	// protocol has no change notification; a list is one small call, and
	// the schemas are read again only when it differs.
	importRecheck = 10 * time.Second
)

// importer keeps one peer's operations registered while its connection
// lives: it dials the peer on alknet/call as this node (pinned), imports
// the remote-safe operations the peer lists to this node, and when the
// connection ends removes them and dials again after a backoff. A reload
// re-reads the peer's list on the live connection.
type importer struct {
	n       *Node
	imp     config.CallImport
	opts    call.ImportOptions
	log     hclog.Logger
	refresh chan struct{} // buffered: a pending re-read is enough

	mu    sync.Mutex
	state ImportStatus
}

// ImportStatus is one [[call.imports]] peer as node/stats reports it.
type ImportStatus struct {
	Name      string `json:"name"`
	Target    string `json:"target"`
	Connected bool   `json:"connected"`
	// Operations imported (0 while not connected).
	Operations int `json:"operations"`
	// Error: why the peer's operations are not (or not all) here.
	Error string    `json:"error,omitempty"`
	Since time.Time `json:"since"`
}

// set records the importer's state; since moves only when connected does.
func (im *importer) set(connected bool, ops int, err error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if connected != im.state.Connected || im.state.Since.IsZero() {
		im.state.Since = time.Now().UTC()
	}
	im.state.Connected, im.state.Operations, im.state.Error = connected, ops, ""
	if err != nil {
		im.state.Error = err.Error()
	}
}

func (im *importer) status() ImportStatus {
	im.mu.Lock()
	defer im.mu.Unlock()
	st := im.state
	st.Name, st.Target = im.imp.Name, im.imp.Target
	return st
}

func (n *Node) newImporter(imp config.CallImport) *importer {
	return &importer{n: n, imp: imp, log: n.log.Named("import").With("peer", imp.Name),
		refresh: make(chan struct{}, 1),
		opts: call.ImportOptions{Prefix: imp.Name, PeerName: imp.Name, Operations: imp.Operations, Visibility: call.External,
			Access: call.AccessControl{RequiredScopesAny: imp.ImportScopes()}}}
}

// run is the importer's loop, owned by the node (Start starts it,
// Shutdown cancels ctx and waits); the operations are gone when it ends.
func (im *importer) run(ctx context.Context) {
	defer im.n.reg.RemoveOwned(im.opts.Owner())
	backoff := importMinBackoff
	for {
		imported, err := im.once(ctx)
		if ctx.Err() != nil {
			return
		}
		if imported {
			backoff = importMinBackoff
		}
		im.set(false, 0, err)
		im.log.Warn("peer's operations are not available; dialing it again", "target", im.imp.Target, "retry_in", backoff, "error", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, importMaxBackoff)
	}
}

// once dials the peer, imports its operations and serves them until the
// connection ends (or ctx does); imported says the import succeeded.
func (im *importer) once(ctx context.Context) (imported bool, err error) {
	dctx, cancel := context.WithTimeout(ctx, importDialTimeout)
	conn, err := im.n.dialPeer(dctx, im.imp.Target, call.ALPN)
	cancel()
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", im.imp.Target, err)
	}
	cc := call.New(im.n.reg, call.WithPolicy(im.n.auth.Policy), call.WithLogger(im.log)).Attach(conn, "")
	defer func() { _ = cc.Close() }()
	defer im.n.reg.RemoveOwned(im.opts.Owner())
	last, err := im.load(ctx, cc, "")
	if err != nil {
		return false, err
	}
	tick := time.NewTicker(importRecheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case <-cc.Done():
			return true, errors.New("the connection to the peer closed")
		case <-im.refresh:
			last = ""
		case <-tick.C:
		}
		if l, err := im.load(ctx, cc, last); err != nil {
			im.log.Warn("re-reading the peer's operations failed; the ones imported before stay", "error", err)
			im.mu.Lock()
			im.state.Error = "re-reading the list: " + err.Error()
			im.mu.Unlock()
		} else {
			last = l
		}
	}
}

// load reads the peer's list over cc and, when it differs from last (or
// last is empty), imports its operations again; it returns the list read.
func (im *importer) load(ctx context.Context, cc *call.Connection, last string) (string, error) {
	lctx, cancel := context.WithTimeout(ctx, importListTimeout)
	defer cancel()
	ops, err := cc.ServicesList(lctx)
	if err != nil {
		return "", fmt.Errorf("services/list: %w", err)
	}
	var b strings.Builder
	for _, op := range ops {
		fmt.Fprintf(&b, "%s %s %t %q\n", op.Name, op.OpType, op.RemoteSafe, op.Description)
	}
	list := b.String()
	if list == last {
		im.mu.Lock()
		im.state.Error = "" // a failed re-read before this one is over
		im.mu.Unlock()
		return list, nil
	}
	names, err := call.ImportPeer(lctx, im.n.reg, cc.Session, im.opts)
	if err != nil {
		return "", err
	}
	im.set(true, len(names), nil)
	im.log.Info("imported the peer's operations", "target", im.imp.Target, "operations", len(names),
		"scopes", fmt.Sprint(im.opts.Access.RequiredScopesAny))
	if len(names) == 0 {
		im.log.Warn("the peer lists no remote-safe operation to this node that call.imports.operations selects; give this node's fingerprint scopes in the peer's [[auth.peers]]",
			"fingerprint", im.n.fp)
	}
	return list, nil
}

// startImports runs an importer per [[call.imports]] entry under the
// node's background context.
func (n *Node) startImports(ctx context.Context) {
	for _, imp := range n.cfg.Load().Call.Imports {
		im := n.newImporter(imp)
		n.importers = append(n.importers, im)
		n.bg.Add(1)
		go func() {
			defer n.bg.Done()
			im.run(ctx)
		}()
	}
}

// importStatus reports every [[call.imports]] peer.
func (n *Node) importStatus() []ImportStatus {
	var out []ImportStatus
	for _, im := range n.importers {
		out = append(out, im.status())
	}
	return out
}

// refreshImports asks every importer to re-read its peer's list.
func (n *Node) refreshImports() {
	for _, im := range n.importers {
		select {
		case im.refresh <- struct{}{}:
		default:
		}
	}
}
