// Package diag registers the diag/* operations a node serves on alknet/call
// with enable_diag: for tests, benchmarks and checking a deployment end to
// end. Off by default.
package diag

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"alknet.dev/alknet/core/call"
)

// Stats counts what the diagnostic handlers saw.
type Stats struct {
	Cancelled atomic.Int64 // diag/sleep handlers whose context was cancelled
	TimedOut  atomic.Int64 // … whose deadline passed
	Running   atomic.Int64 // diag/sleep handlers running now
}

// Register adds diag/say, diag/ticks, diag/sleep, diag/stats,
// diag/callback and (admin only) diag/invoke to reg.
func Register(reg *call.Registry) (*Stats, error) {
	st := &Stats{}
	regs := []call.Registration{
		{
			Spec: call.Spec{Name: "diag/say", OpType: call.Query, RemoteSafe: true, Description: "returns its input"},
			Call: func(_ context.Context, in json.RawMessage) (any, error) { return in, nil },
		},
		{
			Spec: call.Spec{Name: "diag/ticks", OpType: call.Subscription, RemoteSafe: true, Description: "streams {\"n\": i} for i < count",
				InputSchema: json.RawMessage(`{"type":"object","required":["count"],"properties":{"count":{"type":"integer","minimum":0,"maximum":1000000},"interval_ms":{"type":"integer","minimum":0}}}`)},
			Stream: func(ctx context.Context, in json.RawMessage, emit func(any) error) error {
				var q struct {
					Count      int `json:"count"`
					IntervalMS int `json:"interval_ms"`
				}
				if err := json.Unmarshal(in, &q); err != nil {
					return call.Errorf(call.CodeInvalidInput, "want {\"count\": n}")
				}
				for i := range q.Count {
					if q.IntervalMS > 0 {
						select {
						case <-time.After(time.Duration(q.IntervalMS) * time.Millisecond):
						case <-ctx.Done():
							return ctx.Err()
						}
					}
					if err := emit(map[string]int{"n": i}); err != nil {
						return err
					}
				}
				return nil
			},
		},
		{
			Spec: call.Spec{Name: "diag/sleep", OpType: call.Query, RemoteSafe: true, Description: "sleeps ms milliseconds unless cancelled",
				InputSchema: json.RawMessage(`{"type":"object","required":["ms"],"properties":{"ms":{"type":"integer","minimum":0}}}`)},
			Call: func(ctx context.Context, in json.RawMessage) (any, error) {
				var q struct {
					MS int `json:"ms"`
				}
				_ = json.Unmarshal(in, &q)
				st.Running.Add(1)
				defer st.Running.Add(-1)
				select {
				case <-time.After(time.Duration(q.MS) * time.Millisecond):
					return map[string]int{"slept_ms": q.MS}, nil
				case <-ctx.Done():
					if errors.Is(ctx.Err(), context.DeadlineExceeded) {
						st.TimedOut.Add(1)
					} else {
						st.Cancelled.Add(1)
					}
					return nil, ctx.Err()
				}
			},
		},
		{
			Spec: call.Spec{Name: "diag/stats", OpType: call.Query, RemoteSafe: true, Description: "what diag/sleep handlers saw"},
			Call: func(context.Context, json.RawMessage) (any, error) {
				return map[string]int64{"cancelled": st.Cancelled.Load(), "timed_out": st.TimedOut.Load(), "running": st.Running.Load()}, nil
			},
		},
		{
			Spec: call.Spec{Name: "diag/callback", OpType: call.Query, RemoteSafe: true, Description: "calls {name, input} back on the caller's own connection",
				InputSchema: json.RawMessage(`{"type":"object","required":["name"],"properties":{"name":{"type":"string"}}}`)},
			Call: func(ctx context.Context, in json.RawMessage) (any, error) {
				var q struct {
					Name  string          `json:"name"`
					Input json.RawMessage `json:"input"`
				}
				_ = json.Unmarshal(in, &q)
				info, ok := call.FromContext(ctx)
				if !ok || info.Peer == nil {
					return nil, call.Errorf(call.CodeInternal, "no caller connection to call back")
				}
				return info.Peer.Call(ctx, q.Name, q.Input)
			},
		},
	}
	regs = append(regs, call.Registration{
		Spec: call.Spec{Name: "diag/invoke", OpType: call.Query, Description: "admin only: calls any operation, internal ones included, as the caller",
			AccessControl: call.AccessControl{RequiredScopes: []string{"admin"}},
			InputSchema:   json.RawMessage(`{"type":"object","required":["name"],"properties":{"name":{"type":"string"}}}`)},
		Call: func(ctx context.Context, in json.RawMessage) (any, error) {
			var q struct {
				Name  string          `json:"name"`
				Input json.RawMessage `json:"input"`
			}
			_ = json.Unmarshal(in, &q)
			info, _ := call.FromContext(ctx)
			out, cerr := reg.Invoke(ctx, call.Invocation{Name: q.Name, Input: q.Input, Identity: info.Identity, Internal: true, RequestID: info.RequestID + "/diag"}, nil)
			if cerr != nil {
				return nil, cerr
			}
			return out, nil
		},
	})
	for _, r := range regs {
		if err := reg.Register(r); err != nil {
			return nil, err
		}
	}
	return st, nil
}
