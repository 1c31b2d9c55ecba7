package call

import (
	"context"
	"encoding/json"
	"fmt"
	"path"

	"alknet.dev/alknet/core/auth"
)

// ImportOptions say how a peer's operations appear in the local registry.
type ImportOptions struct {
	// Prefix names the imported operations locally: Prefix/<remote name>.
	Prefix string
	// PeerName is the peer as logged and as the operations' provenance
	// ("remote:<PeerName>"): the owner a later import of the same peer
	// replaces atomically, and RemoveOwned removes.
	PeerName string
	// Operations are path.Match patterns on the remote names; empty: all.
	Operations []string
	// Visibility of the imported operations (default internal: only
	// nested calls reach them). External ones are gated by Access.
	Visibility Visibility
	// Access is the local gate in front of the forwarder; the peer then
	// applies its own to this node's identity there.
	Access AccessControl
	// MaxOperations bounds what one peer may make this node register
	// (default DefaultMaxImported): a peer that lists more is refused.
	MaxOperations int
}

// DefaultMaxImported is ImportOptions.MaxOperations' default.
const DefaultMaxImported = 4096

// Owner is the provenance of the operations imported with o.
func (o ImportOptions) Owner() string { return "remote:" + o.PeerName }

// ImportPeer registers the remote-safe operations that peer lists (to
// this node's identity there) as operations named prefix/<name> that
// forward to peer with the original caller recorded as forwarded_for
// (docs/spec/call.md §7). Aborting or timing out the local call sends
// call.aborted to the peer. The set replaces an earlier import of the
// same peer atomically; a name another owner registered is an error and
// nothing changes.
func ImportPeer(ctx context.Context, reg *Registry, peer *Session, o ImportOptions) ([]string, error) {
	ops, err := peer.ServicesList(ctx)
	if err != nil {
		return nil, fmt.Errorf("import %s: services/list: %w", o.PeerName, err)
	}
	if o.Visibility == "" {
		o.Visibility = Internal
	}
	if o.MaxOperations <= 0 {
		o.MaxOperations = DefaultMaxImported
	}
	if len(ops) > o.MaxOperations {
		return nil, fmt.Errorf("import %s: it lists %d operations; at most %d are imported from one peer", o.PeerName, len(ops), o.MaxOperations)
	}
	var regs []Registration
	seen := map[string]bool{}
	for _, op := range ops {
		if !matchAny(o.Operations, op.Name) {
			continue
		}
		spec, err := peer.ServicesSchema(ctx, op.Name)
		if err != nil {
			return nil, fmt.Errorf("import %s: services/schema %s: %w", o.PeerName, op.Name, err)
		}
		if !spec.RemoteSafe {
			continue
		}
		local := normalize(o.Prefix) + "/" + spec.Name
		if seen[local] {
			return nil, fmt.Errorf("import %s: %s is listed twice", o.PeerName, local)
		}
		seen[local] = true
		remote := spec.Name
		fwd := Spec{Name: local, OpType: spec.OpType, Visibility: o.Visibility, AccessControl: o.Access, Description: spec.Description,
			InputSchema: spec.InputSchema, OutputSchema: spec.OutputSchema, ErrorSchemas: spec.ErrorSchemas}
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
	if err := reg.SetOwned(o.Owner(), regs); err != nil {
		return nil, fmt.Errorf("import %s: %w", o.PeerName, err)
	}
	names := make([]string, 0, len(regs))
	for _, r := range regs {
		names = append(names, normalize(r.Spec.Name))
	}
	return names, nil
}

func matchAny(patterns []string, name string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
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
