// Package fs is the fs plugin (docs/spec/handlers.md §fs): content-addressed
// storage of blobs named by their BLAKE3-256 hash, each stored once with a
// bao outboard (plugins/fs/bao) so that every 16 KiB group of it verifies
// on its own.
//
// The alknet/fs ALPN carries transfers, one request per stream
// (plugins/fs/wire): a get sends the verified bao slices of the requested
// ranges, a put receives a blob, hashes it as it arrives and commits it
// atomically. Operations (fs/stat, fs/list, fs/tag, fs/untag, fs/delete,
// fs/gc, fs/stats) manage tags and storage. Scopes: fs:read for gets and
// queries, fs:write for puts and changes.
//
// A blob the plugin finds corrupted while sending it (content or outboard
// no longer matching its hash) is never served again: the transfer is
// reset with wire.CodeCorrupt and the blob moved to quarantine/.
package fs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/plugins/fs/wire"
	"alknet.dev/alknet/plugins/sdk"
)

// Version of the plugin (-ldflags "-X alknet.dev/alknet/plugins/fs.Version=…").
var Version = "0.1.0"

// CorruptSentGroup is a test knob, set only in binaries built for
// integration tests (-ldflags "-X alknet.dev/alknet/plugins/fs.CorruptSentGroup=2"):
// when it holds a group index N, every get flips one byte of group N in
// what it sends, after the plugin has verified that group — a source that
// lies on the wire, which clients must detect and drop. Empty (the
// default) turns it off; anything but a group index makes Configure fail.
var CorruptSentGroup = ""

// Names the plugin serves and checks.
const (
	ScopeRead  = "fs:read"
	ScopeWrite = "fs:write"

	OpStat   = "fs/stat"
	OpList   = "fs/list"
	OpTag    = "fs/tag"
	OpUntag  = "fs/untag"
	OpDelete = "fs/delete"
	OpGC     = "fs/gc"
	OpStats  = "fs/stats"
)

// Time limits of a transfer stream.
const (
	// HeaderTimeout bounds the wait for a request header.
	HeaderTimeout = 30 * time.Second
	// IdleTimeout bounds the wait for more bytes of a put.
	IdleTimeout = 60 * time.Second
)

// Plugin is the fs plugin. The zero value is ready for sdk.Serve.
type Plugin struct {
	mu    sync.Mutex // serializes Configure
	store atomic.Pointer[store]
	cfg   atomic.Pointer[config]
	// corruptGroup is CorruptSentGroup parsed (-1: off).
	corruptGroup atomic.Int64
	putsActive   atomic.Int64
	stats        counters

	// Set by tests before the first Configure: the clock of leases, the
	// logger and the stream time limits (zero: the defaults).
	now           func() time.Time
	log           hclog.Logger
	headerTimeout time.Duration
	idleTimeout   time.Duration
}

// counters are the totals fs/stats reports, since the process started.
type counters struct {
	bytesSent        atomic.Int64 // slice bytes written to streams (header, proof nodes, groups)
	contentBytesSent atomic.Int64 // bytes of the groups among them
	bytesReceived    atomic.Int64 // blob bytes read by puts
	gets             atomic.Int64 // gets sent in full
	getsActive       atomic.Int64 // gets being served now
	puts             atomic.Int64 // puts committed (a blob already stored included)
	corrupt          atomic.Int64 // blobs found corrupted and quarantined
}

var (
	_ sdk.ConnServer        = (*Plugin)(nil)
	_ sdk.OperationSet      = (*Plugin)(nil)
	_ sdk.Configurer        = (*Plugin)(nil)
	_ sdk.SettingsValidator = (*Plugin)(nil)
)

// Info describes the plugin.
func (p *Plugin) Info() sdk.Info {
	return sdk.Info{Name: "fs", Version: Version, ALPNs: []string{wire.ALPN},
		Description:  "content-addressed blob storage: verified (BLAKE3/bao) gets of any range, atomic deduplicated puts, tags and gc",
		ConfigSchema: json.RawMessage(configSchema)}
}

// ValidateSettings checks settings as Configure would.
func (p *Plugin) ValidateSettings(settings json.RawMessage) error {
	_, err := parseSettings(settings, "/")
	return err
}

// Configure opens the store at start and applies changed limits on a
// reload; a new root takes a restart.
func (p *Plugin) Configure(_ context.Context, settings json.RawMessage, host *sdk.Host) error {
	cfg, err := parseSettings(settings, host.StateDir())
	if err != nil {
		return err
	}
	if cfg.root == "" {
		return errors.New("fs: no store directory: set root in [plugins.fs] (the node gave the plugin no state directory)")
	}
	group, err := parseCorruptGroup(CorruptSentGroup)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.store.Load(); st != nil {
		if st.root != cfg.root {
			return sdk.ErrRestartRequired
		}
		st.setLease(cfg.lease)
	} else {
		st, err := openStore(cfg.root, cfg.lease, p.clock())
		if err != nil {
			return err
		}
		p.store.Store(st)
		if group >= 0 {
			p.logger().Warn("test knob CorruptSentGroup is set: every get corrupts what it sends of this group", "group", group)
		}
	}
	p.corruptGroup.Store(group)
	p.cfg.Store(cfg)
	return nil
}

func parseCorruptGroup(s string) (int64, error) {
	if s == "" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("fs: this binary was built with CorruptSentGroup=%q: want a group index (0, 1, …) or nothing; rebuild it", s)
	}
	return n, nil
}

// closeStore closes the store (tests: a restart of the plugin).
func (p *Plugin) closeStore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.store.Swap(nil); st != nil {
		st.close()
	}
}

func (p *Plugin) clock() func() time.Time {
	if p.now != nil {
		return p.now
	}
	return time.Now
}

func (p *Plugin) logger() hclog.Logger {
	if p.log != nil {
		return p.log
	}
	return sdk.Logger()
}

// ServeConn serves an alknet/fs connection: each stream is one request.
// Scopes are checked per request, so a refusal names the scope missing.
func (p *Plugin) ServeConn(ctx context.Context, c *sdk.Conn) error {
	a := c.Auth()
	c.EachStream(ctx, func(s *sdk.Stream) { p.serveStream(a.Identity, a.RemoteAddr, s) })
	return nil
}
