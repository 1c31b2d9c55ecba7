package pluginhost

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/proto/pluginpb"
)

// instance is one running plugin process and everything the core handed
// it: connections, calls and sessions, each named by a handle unique
// within the instance (docs/spec/plugins.md §3).
type instance struct {
	name, version string
	manifest      *pluginpb.Manifest
	proc          Process
	pc            pluginpb.PluginClient
	log           hclog.Logger

	ctx    context.Context // done when the process is gone or stopped
	cancel context.CancelFunc
	exited chan struct{} // closed by watch

	nextID  atomic.Uint64
	handles sync.Map     // uint64 → *connHandle | *callHandle | *sessionHandle
	active  atomic.Int64 // streams being bridged
	mux     *callMux

	// What the plugin makes the core hold at once, against bounds.
	invokes atomic.Int64 // Host.Invoke calls running
	dialed  atomic.Int64 // connections dialed (DialInternal, DialPeer) still open
}

// Bounds of what one plugin instance can make the core hold at once
// (docs/spec/plugins.md §3): a plugin is trusted with its own work only,
// and each of these costs the core goroutines and memory. Variables only
// so that a test can reach them with few goroutines.
var (
	// maxHostInvokes bounds Host.Invoke calls running at once (each a
	// subscription, or a call of an SDK without Invokes).
	maxHostInvokes int64 = 4096
	// maxDialedConns bounds the connections the plugin dialed with
	// DialInternal or DialPeer that are still open.
	maxDialedConns int64 = 4096
	// maxPendingAccepts bounds the Host.Stream accepts waiting on one
	// connection for the peer's next stream (a plugin needs one).
	maxPendingAccepts int64 = 64
)

// take reserves one of max places counted by n; release it with n.Add(-1).
func take(n *atomic.Int64, max int64) bool {
	if n.Add(1) > max {
		n.Add(-1)
		return false
	}
	return true
}

// connHandle is a connection the plugin serves: one the endpoint routed to
// it, or one it dialed with DialInternal.
type connHandle struct {
	conn     endpoint.Conn
	identity *auth.Identity
	// drain is done when the node drains: accepting new streams stops.
	drain context.Context
	// done is closed when the plugin closed the connection (code, reason).
	done   chan struct{}
	once   sync.Once
	code   uint64
	reason string

	mu       sync.Mutex
	sessions map[uint64]struct{}

	accepts atomic.Int64 // Host.Stream accepts waiting for a stream
}

func (c *connHandle) finish(code uint64, reason string) {
	c.once.Do(func() { c.code, c.reason = code, reason; close(c.done) })
}

// ctx is done when the connection is closed by either side.
func (c *connHandle) ctx() context.Context { return c.conn.Context() }

// callHandle is a call of one of the plugin's operations, running.
type callHandle struct {
	ctx       context.Context // the call's: cancelled on abort, deadline
	requestID string
	identity  *auth.Identity // the caller
	env       []string       // operations it may call (nested)
	// actsAsCaller: the operation declares acts_as_caller, so the plugin
	// may call as the caller (HostInvokeRequest.as_caller).
	actsAsCaller bool
}

// sessionHandle is an identity the core resolved from a credential the
// plugin presented on conn (Host.Authenticate).
type sessionHandle struct {
	identity *auth.Identity
	conn     *connHandle
}

// maxSessionsPerConn bounds the sessions one connection can hold.
const maxSessionsPerConn = 256

// lookupConn returns the open connection named by id.
func (in *instance) lookupConn(id uint64) (*connHandle, bool) {
	v, ok := in.handles.Load(id)
	if !ok {
		return nil, false
	}
	c, ok := v.(*connHandle)
	if !ok || c.ctx().Err() != nil {
		return nil, false
	}
	return c, true
}

// actor is what a handle acts as: an identity, a context that ends with
// the handle, and for a call its env.
type actor struct {
	identity *auth.Identity
	ctx      context.Context
	call     *callHandle
}

var errHandle = errors.New("not a connection, call or session this plugin is serving")

// actorOf resolves a handle the plugin names for a nested call or an
// internal dial: only a handle of this instance that is still open.
func (in *instance) actorOf(id uint64) (actor, error) {
	v, ok := in.handles.Load(id)
	if !ok {
		return actor{}, fmt.Errorf("handle %d: %w", id, errHandle)
	}
	switch h := v.(type) {
	case *connHandle:
		if h.ctx().Err() == nil {
			return actor{identity: h.identity, ctx: h.ctx()}, nil
		}
	case *callHandle:
		if h.ctx.Err() == nil {
			return actor{identity: h.identity, ctx: h.ctx, call: h}, nil
		}
	case *sessionHandle:
		if h.conn.ctx().Err() == nil {
			return actor{identity: h.identity, ctx: h.conn.ctx()}, nil
		}
	}
	return actor{}, fmt.Errorf("handle %d: %w", id, errHandle)
}

// addConn registers a connection and returns its handle; the handle and
// its sessions are dropped when the connection closes.
func (in *instance) addConn(c *connHandle) uint64 {
	id := in.nextID.Add(1)
	in.handles.Store(id, c)
	context.AfterFunc(c.ctx(), func() {
		in.handles.Delete(id)
		c.mu.Lock()
		for s := range c.sessions {
			in.handles.Delete(s)
		}
		c.sessions = nil
		c.mu.Unlock()
	})
	return id
}

// addSession binds an identity to conn; false when conn holds too many.
func (in *instance) addSession(c *connHandle, id *auth.Identity) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx().Err() != nil || len(c.sessions) >= maxSessionsPerConn {
		return 0, false
	}
	if c.sessions == nil {
		c.sessions = map[uint64]struct{}{}
	}
	h := in.nextID.Add(1)
	c.sessions[h] = struct{}{}
	in.handles.Store(h, &sessionHandle{identity: id, conn: c})
	return h, true
}

// endSession drops a session handle.
func (in *instance) endSession(h uint64) {
	v, ok := in.handles.Load(h)
	if !ok {
		return
	}
	s, ok := v.(*sessionHandle)
	if !ok {
		return
	}
	in.handles.Delete(h)
	s.conn.mu.Lock()
	delete(s.conn.sessions, h)
	s.conn.mu.Unlock()
}

// conns lists the connections routed to or dialed by the instance.
func (in *instance) conns() []*connHandle {
	var out []*connHandle
	in.handles.Range(func(_, v any) bool {
		if c, ok := v.(*connHandle); ok {
			out = append(out, c)
		}
		return true
	})
	return out
}

// closeAll closes every connection of this instance with code 2.
func (in *instance) closeAll(reason string) {
	for _, c := range in.conns() {
		_ = c.conn.CloseWithError(endpoint.CodeUnavailable, reason)
		c.finish(uint64(endpoint.CodeUnavailable), reason)
	}
}

// idle reports whether nothing is routed to the instance any more.
func (in *instance) idle() bool { return len(in.conns()) == 0 && in.active.Load() == 0 }

// healthPolicy is how a plugin that stopped making progress (hung, not
// crashed) is found; it is then treated like one that exited.
type healthPolicy struct {
	every    time.Duration // between checks
	timeout  time.Duration // for Health to answer
	failures int           // failed checks in a row that stop the plugin
	// stuckAfter: a call the core aborted that long ago and still has no
	// answer fails the check (the plugin stopped serving its calls).
	stuckAfter time.Duration
}

var defaultHealth = healthPolicy{every: 5 * time.Second, timeout: 3 * time.Second, failures: 3, stuckAfter: 30 * time.Second}

// check is one health check: Health answers in time, and no call the core
// aborted long ago is still unanswered.
func (in *instance) check(p healthPolicy) error {
	ctx, cancel := context.WithTimeout(in.ctx, p.timeout)
	defer cancel()
	if _, err := in.pc.Health(ctx, &pluginpb.Empty{}); err != nil {
		return err
	}
	if n, oldest := in.mux.unanswered(); oldest > p.stuckAfter {
		return fmt.Errorf("%d calls aborted by the core are still unanswered, the oldest for %v", n, oldest.Round(time.Second))
	}
	return nil
}

// watch notices the process exit and failed health checks. Owned by the
// instance.
func (in *instance) watch(p healthPolicy) {
	defer close(in.exited)
	h := time.NewTicker(p.every)
	defer h.Stop()
	failures := 0
	for {
		select {
		case <-in.proc.Exited():
			in.cancel()
			return
		case <-h.C:
			err := in.check(p)
			if err == nil {
				failures = 0
				continue
			}
			if in.ctx.Err() != nil {
				return
			}
			failures++
			in.log.Warn("plugin health check failed", "failures", failures, "error", err)
			if failures >= p.failures {
				in.log.Error("plugin does not answer health checks; stopping it", "pid", in.proc.Pid())
				in.cancel()
				in.proc.Stop(0)
				return
			}
		case <-in.ctx.Done():
			return
		}
	}
}

// stop ends the process.
func (in *instance) stop(grace time.Duration) {
	in.cancel()
	in.proc.Stop(grace)
}

// settingsOrEmpty is settings, or an empty JSON object.
func settingsOrEmpty(s json.RawMessage) []byte {
	if len(s) == 0 {
		return []byte("{}")
	}
	return s
}
