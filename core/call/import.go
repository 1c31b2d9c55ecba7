package call

import (
	"context"
	"encoding/json"
	"fmt"

	"alknet.dev/alknet/core/auth"
)

// ImportPeer registers the remote-safe operations that peer lists as
// internal operations named prefix/<name> that forward to peer with the
// original caller recorded as forwarded_for (docs/spec/call.md §7). Aborting or
// timing out the local call sends call.aborted to the peer. A name that is
// already registered is an error and nothing is imported.
func ImportPeer(ctx context.Context, reg *Registry, peer *Session, prefix, peerName string) ([]string, error) {
	ops, err := peer.ServicesList(ctx)
	if err != nil {
		return nil, fmt.Errorf("import %s: services/list: %w", peerName, err)
	}
	var regs []Registration
	seen := map[string]bool{}
	for _, op := range ops {
		spec, err := peer.ServicesSchema(ctx, op.Name)
		if err != nil {
			return nil, fmt.Errorf("import %s: services/schema %s: %w", peerName, op.Name, err)
		}
		if !spec.RemoteSafe {
			continue
		}
		local := normalize(prefix) + "/" + spec.Name
		if seen[local] {
			return nil, fmt.Errorf("import %s: %s is listed twice", peerName, local)
		}
		seen[local] = true
		if _, exists := reg.lookup(local); exists {
			return nil, fmt.Errorf("import %s: %s is already registered", peerName, local)
		}
		remote := spec.Name
		fwd := Spec{Name: local, OpType: spec.OpType, Visibility: Internal, Description: spec.Description,
			InputSchema: spec.InputSchema, OutputSchema: spec.OutputSchema, ErrorSchemas: spec.ErrorSchemas,
			Provenance: "remote:" + peerName}
		r := Registration{Spec: fwd}
		if spec.OpType == Subscription {
			r.Stream = func(ctx context.Context, in json.RawMessage, emit func(any) error) error {
				sub, err := peer.Subscribe(ctx, remote, in, WithForwardedFor(caller(ctx)))
				if err != nil {
					return err
				}
				for item := range sub.Items {
					if err := emit(item); err != nil {
						sub.Close()
						return err
					}
				}
				return sub.Err()
			}
		} else {
			r.Call = func(ctx context.Context, in json.RawMessage) (any, error) {
				return peer.Call(ctx, remote, in, WithForwardedFor(caller(ctx)))
			}
		}
		regs = append(regs, r)
	}
	names := make([]string, 0, len(regs))
	for _, r := range regs {
		if err := reg.Register(r); err != nil {
			for _, n := range names {
				reg.Unregister(n)
			}
			return nil, fmt.Errorf("import %s: %w", peerName, err)
		}
		names = append(names, r.Spec.Name)
	}
	return names, nil
}

// caller is the identity to record as forwarded_for: an existing
// forwarded_for is kept, else the caller itself.
func caller(ctx context.Context) *auth.Identity {
	info, ok := FromContext(ctx)
	if !ok {
		return nil
	}
	if info.ForwardedFor != nil {
		return info.ForwardedFor
	}
	return info.Identity
}
