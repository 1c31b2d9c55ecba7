package call

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/google/uuid"
)

// Policy says what happens to a nested call when its parent is aborted.
type Policy int

const (
	// AbortDependents cancels the child with its parent (the default).
	AbortDependents Policy = iota
	// ContinueRunning lets an already started child finish; it keeps the
	// parent's deadline.
	ContinueRunning
)

// envCaller makes nested calls on behalf of a running handler.
type envCaller struct {
	r      *Registry
	reg    Registration
	parent *Info
}

// Nested calls name in the handler's scoped env with the parent's
// composition authority as identity, marked internal, inheriting the
// parent's deadline and capabilities (docs/spec/call.md §5). A name outside the
// scoped env is NOT_FOUND.
func Nested(ctx context.Context, name string, input any, policy Policy) (json.RawMessage, error) {
	info, ok := FromContext(ctx)
	if !ok || info.env == nil {
		return nil, NotFound(normalize(name))
	}
	return info.env.call(ctx, name, input, policy, false, nil)
}

// NestedSubscribe is Nested for a subscription: emit gets each item.
func NestedSubscribe(ctx context.Context, name string, input any, emit func(json.RawMessage) error) error {
	info, ok := FromContext(ctx)
	if !ok || info.env == nil {
		return NotFound(normalize(name))
	}
	_, err := info.env.call(ctx, name, input, AbortDependents, true, emit)
	return err
}

func (e *envCaller) call(ctx context.Context, name string, input any, policy Policy, sub bool, emit func(json.RawMessage) error) (json.RawMessage, error) {
	name = normalize(name)
	if !slices.Contains(e.reg.Env, name) {
		return nil, NotFound(name)
	}
	in, err := marshalOutput(input)
	if err != nil {
		return nil, Errorf(CodeInvalidInput, "encode input: %v", err)
	}
	if policy == ContinueRunning {
		base := context.WithoutCancel(ctx)
		if d, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			base, cancel = context.WithDeadline(base, d)
			defer cancel()
		} else {
			var cancel context.CancelFunc
			base, cancel = context.WithTimeout(base, DefaultDeadline)
			defer cancel()
		}
		ctx = base
	}
	if emit == nil {
		emit = func(json.RawMessage) error { return nil }
	}
	out, cerr := e.r.Invoke(ctx, Invocation{
		Name: name, Input: in, Identity: e.reg.Authority, Internal: true,
		RequestID: uuid.NewString(), ParentID: e.parent.RequestID, Subscribe: sub,
		ParentCaps: e.parent.Capabilities,
	}, emit)
	if cerr != nil {
		return nil, cerr
	}
	return out, nil
}
