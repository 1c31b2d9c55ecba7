package pluginhost

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"

	"alknet.dev/alknet/proto/pluginpb"
)

// callMux carries every operation call to one plugin instance on a single
// long-lived Plugin.Calls stream, correlated by the call's handle
// (docs/spec/plugins.md §3: a gRPC call per operation costs ~10× a frame
// on an open stream).
type callMux struct {
	st   grpc.BidiStreamingClient[pluginpb.CallFrame, pluginpb.CallFrame]
	smu  sync.Mutex // serialises Send
	mu   sync.Mutex
	wait map[uint64]*muxCall
	// aborted holds calls the core aborted whose last result has not
	// arrived yet, with when they were aborted: a plugin that leaves them
	// unanswered has stopped making progress (health checks).
	aborted map[uint64]time.Time
	done    chan struct{}
}

type muxCall struct {
	frames chan *pluginpb.CallFrame
	gone   chan struct{}
	last   bool // its last result was routed (under mu)
}

var errMuxClosed = errors.New("plugin call stream closed")

// newCallMux opens the stream; it lives as long as ctx (the instance).
func newCallMux(ctx context.Context, pc pluginpb.PluginClient) (*callMux, error) {
	st, err := pc.Calls(ctx)
	if err != nil {
		return nil, err
	}
	m := &callMux{st: st, wait: map[uint64]*muxCall{}, aborted: map[uint64]time.Time{}, done: make(chan struct{})}
	go m.recv()
	return m, nil
}

// recv routes results to their calls until the stream ends. Owned by the
// mux; it ends with the stream (the instance's context or the process).
func (m *callMux) recv() {
	defer close(m.done)
	for {
		f, err := m.st.Recv()
		if err != nil {
			return
		}
		m.mu.Lock()
		c := m.wait[f.GetId()]
		if f.GetLast() {
			delete(m.aborted, f.GetId())
			if c != nil {
				c.last = true
			}
		}
		m.mu.Unlock()
		if c == nil {
			continue
		}
		select {
		case c.frames <- f:
		case <-c.gone:
		case <-m.done:
		}
	}
}

// abort tells the plugin to stop call id, which the core no longer waits
// for, and remembers it until the plugin ends it.
func (m *callMux) abort(id uint64, c *muxCall) {
	m.mu.Lock()
	delete(m.wait, id)
	if !c.last {
		m.aborted[id] = time.Now()
	}
	m.mu.Unlock()
	_ = m.send(&pluginpb.CallFrame{Id: id, Abort: true})
}

// unanswered counts the aborted calls the plugin has not ended, and how
// long ago the oldest was aborted.
func (m *callMux) unanswered() (int, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var oldest time.Duration
	for _, at := range m.aborted {
		oldest = max(oldest, time.Since(at))
	}
	return len(m.aborted), oldest
}

func (m *callMux) send(f *pluginpb.CallFrame) error {
	m.smu.Lock()
	defer m.smu.Unlock()
	return m.st.Send(f)
}

// call sends req as call id (a handle unique within the instance) and
// passes every result to onResult until the last one. Cancelling ctx sends
// an abort for the call.
func (m *callMux) call(ctx context.Context, id uint64, req *pluginpb.InvokeRequest, onResult func(*pluginpb.InvokeResult) error) error {
	m.mu.Lock()
	c := &muxCall{frames: make(chan *pluginpb.CallFrame, 64), gone: make(chan struct{})}
	m.wait[id] = c
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.wait, id)
		m.mu.Unlock()
		close(c.gone)
	}()
	if err := m.send(&pluginpb.CallFrame{Id: id, Request: req}); err != nil {
		return errMuxClosed
	}
	for {
		select {
		case f := <-c.frames:
			if err := onResult(f.GetResult()); err != nil {
				if !f.GetLast() {
					m.abort(id, c)
				}
				return err
			}
			if f.GetLast() {
				return nil
			}
		case <-ctx.Done():
			m.abort(id, c)
			return ctx.Err()
		case <-m.done:
			return errMuxClosed
		}
	}
}
