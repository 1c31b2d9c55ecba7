package sdk

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"alknet.dev/alknet/proto/pluginpb"
)

// invokeMux carries the plugin's queries and mutations to the node on one
// long-lived Host.Invokes stream, correlated by an id it picks
// (docs/spec/plugins.md §3): a frame on an open stream costs a fraction
// of the gRPC call Host.Invoke makes per call. Subscriptions keep their
// own Host.Invoke: each has its own flow control there, so a slow
// consumer of one holds up no other call (here a query's one result is
// never waited for by the stream's reader).
type invokeMux struct {
	st     grpc.BidiStreamingClient[pluginpb.HostCallFrame, pluginpb.HostCallFrame]
	cancel context.CancelFunc
	smu    sync.Mutex // serialises Send
	mu     sync.Mutex
	wait   map[uint64]chan *pluginpb.HostCallFrame
	done   chan struct{}
	err    error // why the stream ended (after done)
}

var muxIDs atomic.Uint64

// errNoMux: the node does not serve Host.Invokes; Host.Invoke is used.
var errNoMux = errors.New("the node does not serve Host.Invokes")

// mux returns the open stream, opening one when there is none (or the
// last one ended).
func (h *Host) mux(ctx context.Context) (*invokeMux, error) {
	h.muxMu.Lock()
	defer h.muxMu.Unlock()
	if h.noMux {
		return nil, errNoMux
	}
	if m := h.muxCur; m != nil {
		select {
		case <-m.done:
		default:
			return m, nil
		}
	}
	// The stream lives as long as the plugin's host connection, not as
	// the call that happened to open it.
	sctx, cancel := context.WithCancel(context.Background())
	st, err := h.c.Invokes(sctx)
	if err == nil {
		// A node without the method answers UNIMPLEMENTED on the first
		// receive rather than here: the first call sees it, and
		// Host.invoke falls back to Host.Invoke.
		m := &invokeMux{st: st, cancel: cancel, wait: map[uint64]chan *pluginpb.HostCallFrame{}, done: make(chan struct{})}
		go m.recv() // owned by the mux: ends with the stream
		h.muxCur = m
		return m, nil
	}
	cancel()
	if status.Code(err) == codes.Unimplemented {
		h.noMux = true
		return nil, errNoMux
	}
	return nil, err
}

// recv routes each result to its call until the stream ends.
func (m *invokeMux) recv() {
	defer close(m.done)
	for {
		f, err := m.st.Recv()
		if err != nil {
			m.err = err
			m.cancel()
			return
		}
		m.mu.Lock()
		ch := m.wait[f.GetId()]
		if f.GetLast() {
			delete(m.wait, f.GetId())
		}
		m.mu.Unlock()
		if ch != nil {
			ch <- f // buffered for the one result a query has
		}
	}
}

func (m *invokeMux) send(f *pluginpb.HostCallFrame) error {
	m.smu.Lock()
	defer m.smu.Unlock()
	return m.st.Send(f)
}

// call makes one query or mutation and returns its result, or the gRPC
// status the node ended it with.
func (m *invokeMux) call(ctx context.Context, req *pluginpb.HostInvokeRequest) (*pluginpb.InvokeResult, error) {
	id := muxIDs.Add(1)
	ch := make(chan *pluginpb.HostCallFrame, 1)
	m.mu.Lock()
	m.wait[id] = ch
	m.mu.Unlock()
	forget := func() {
		m.mu.Lock()
		delete(m.wait, id)
		m.mu.Unlock()
	}
	f := &pluginpb.HostCallFrame{Id: id, Request: req}
	if dl, ok := ctx.Deadline(); ok {
		f.TimeoutMicros = max(1, time.Until(dl).Microseconds())
	}
	if err := m.send(f); err != nil {
		forget()
		return nil, m.ended(err)
	}
	select {
	case f := <-ch:
		if c := f.GetStatusCode(); c != 0 {
			return nil, status.Error(codes.Code(c), f.GetStatusMessage())
		}
		return f.GetResult(), nil
	case <-ctx.Done():
		forget()
		_ = m.send(&pluginpb.HostCallFrame{Id: id, Abort: true})
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-m.done:
		return nil, m.ended(m.err)
	}
}

// ended is the error of a call on a stream that ended: UNIMPLEMENTED
// passes through (the node lacks Invokes), anything else is UNAVAILABLE.
func (m *invokeMux) ended(err error) error {
	<-m.done
	if status.Code(m.err) == codes.Unimplemented {
		return m.err
	}
	if err == nil {
		err = m.err
	}
	return status.Errorf(codes.Unavailable, "the node's call stream ended: %v", err)
}
