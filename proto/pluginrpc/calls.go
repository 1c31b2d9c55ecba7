package pluginrpc

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Calls are the calls running on one long-lived stream of frames
// (Plugin.Calls on the plugin's side, Host.Invokes on the core's), each
// under a context of its own and known by the id the other side gave it,
// so that an abort frame reaches it and the stream's end cancels them all.
type Calls struct {
	max     int
	mu      sync.Mutex
	running map[uint64]context.CancelFunc
	wg      sync.WaitGroup
}

// Errors of Start.
var (
	ErrCallRunning  = errors.New("a call with this id is already running")
	ErrTooManyCalls = errors.New("too many calls at once on one stream")
)

// NewCalls tracks calls, at most max at once (0: no bound).
func NewCalls(max int) *Calls {
	return &Calls{max: max, running: map[uint64]context.CancelFunc{}}
}

// Start runs fn on a goroutine of its own, owned by c (Wait waits for
// it), with a context derived from parent, ended by Abort(id), by timeout
// (0: none) or when fn returns.
func (c *Calls) Start(parent context.Context, id uint64, timeout time.Duration, fn func(ctx context.Context)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[id] != nil {
		return ErrCallRunning
	}
	if c.max > 0 && len(c.running) >= c.max {
		return ErrTooManyCalls
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(parent, timeout)
	} else {
		ctx, cancel = context.WithCancel(parent)
	}
	c.running[id] = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer func() {
			c.mu.Lock()
			delete(c.running, id)
			c.mu.Unlock()
			cancel()
		}()
		fn(ctx)
	}()
	return nil
}

// Abort cancels call id, if it runs.
func (c *Calls) Abort(id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cancel := c.running[id]; cancel != nil {
		cancel()
	}
}

// Wait waits for every call started to return (cancel their parent
// first).
func (c *Calls) Wait() { c.wg.Wait() }

// Frame is a frame of Plugin.Calls or Host.Invokes.
type Frame interface {
	GetId() uint64
	GetAbort() bool
}

// ServeFrames serves one such stream: it reads frames with recv until the
// stream ends, then cancels the calls it started and waits for them. An
// abort frame cancels its call; any other frame goes to start, which
// starts its call on calls (or answers why not).
func ServeFrames[F Frame](ctx context.Context, max int, recv func() (F, error), start func(ctx context.Context, calls *Calls, f F)) {
	ctx, cancelAll := context.WithCancel(ctx)
	calls := NewCalls(max)
	defer func() { cancelAll(); calls.Wait() }()
	for {
		f, err := recv()
		if err != nil {
			return
		}
		if f.GetAbort() {
			calls.Abort(f.GetId())
			continue
		}
		start(ctx, calls, f)
	}
}
