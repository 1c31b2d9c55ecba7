package pluginhost

import (
	"context"
	"encoding/json"
	"errors"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/proto/pluginpb"
)

// forwarder is the registry's registration of a plugin operation: each
// call resolves the plugin's capabilities afresh, gets a call handle (for
// the plugin's nested calls and internal dials while it runs) and goes to
// the current instance on its call stream. The registry has passed every
// gate before the forwarder runs, so a denied call never reaches the
// plugin or its capabilities.
func (s *supervisor) forwarder(op *pluginpb.OperationSpec) call.Registration {
	spec := opSpec(s.name, op)
	env := op.Env
	invoke := func(ctx context.Context, input json.RawMessage, emit func(any) error) (json.RawMessage, error) {
		in := s.current()
		if in == nil {
			return nil, call.Errorf(call.CodeInternal, "plugin %s unavailable", s.name)
		}
		info, _ := call.FromContext(ctx)
		caps, err := s.h.capabilities(s.name, in.manifest)
		if err != nil {
			s.log.Error("cannot resolve capabilities; call refused", "operation", spec.Name, "error", err)
			return nil, call.Errorf(call.CodeInternal, "plugin %s is misconfigured", s.name)
		}
		req := &pluginpb.InvokeRequest{Operation: spec.Name, Input: input, Capabilities: caps, Subscribe: spec.OpType == call.Subscription}
		ch := &callHandle{ctx: ctx, env: env, actsAsCaller: op.ActsAsCaller}
		if info != nil {
			req.RequestId, req.Identity, req.ForwardedFor, req.Internal = info.RequestID, identityProto(info.Identity), identityProto(info.ForwardedFor), info.Internal
			ch.requestID, ch.identity = info.RequestID, info.Identity
		}
		id := in.nextID.Add(1)
		in.handles.Store(id, ch)
		defer in.handles.Delete(id)
		var out json.RawMessage
		var callErr error
		err = in.mux.call(ctx, id, req, func(r *pluginpb.InvokeResult) error {
			switch r.GetKind() {
			case pluginpb.InvokeResult_RESPONDED:
				if emit == nil {
					out = r.GetOutput()
					return nil
				}
				return emit(json.RawMessage(r.GetOutput()))
			case pluginpb.InvokeResult_ERROR:
				callErr = callErrorFrom(r.GetError())
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, errMuxClosed) {
				return nil, s.unavailable(ctx)
			}
			return nil, err
		}
		if callErr != nil {
			return nil, callErr
		}
		if out == nil && emit == nil {
			return nil, call.Errorf(call.CodeInternal, "plugin %s ended the call without an answer", s.name)
		}
		return out, nil
	}
	reg := call.Registration{Spec: spec}
	if spec.OpType == call.Subscription {
		reg.Stream = func(ctx context.Context, in json.RawMessage, emit func(any) error) error {
			_, err := invoke(ctx, in, emit)
			return err
		}
	} else {
		reg.Call = func(ctx context.Context, in json.RawMessage) (any, error) {
			out, err := invoke(ctx, in, nil)
			if err != nil {
				return nil, err
			}
			return out, nil
		}
	}
	return reg
}

func (s *supervisor) unavailable(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return call.Errorf(call.CodeInternal, "plugin %s unavailable", s.name)
}
