package fs

import (
	"context"
	"errors"
	"strings"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/wire"
	"alknet.dev/alknet/plugins/sdk"
)

// HashInput names a blob (fs/stat).
type HashInput struct {
	Hash string `json:"hash" jsonschema:"the blob's hash: blake3: followed by 64 lowercase hex digits"`
}

// StatOutput describes a blob.
type StatOutput struct {
	Hash string `json:"hash"`
	// Size of the content (0 when neither stored nor quarantined).
	Size int64 `json:"size"`
	// Present is true when the blob is stored and served.
	Present bool `json:"present"`
	// Tags pointing at the blob, sorted.
	Tags []string `json:"tags"`
	// Leased is true while a recent put keeps the blob from gc.
	Leased bool `json:"leased"`
	// Quarantined is true when the blob failed verification and was set
	// aside (never served; a put of the same content restores it).
	Quarantined bool `json:"quarantined,omitempty"`
}

// ListEntry is one tag of fs/list.
type ListEntry struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
	Size int64  `json:"size"`
	// Present is false when the blob the tag names is not stored (it was
	// quarantined, or removed with fs/delete by another tag's owner).
	Present bool `json:"present"`
}

// TagInput is the input of fs/tag.
type TagInput struct {
	Name string `json:"name" jsonschema:"the tag: 1 to 255 bytes, no control characters"`
	Hash string `json:"hash" jsonschema:"the blob's hash (blake3:…); the blob must be stored"`
}

// TagOutput is the output of fs/tag.
type TagOutput struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
	// Previous is the hash the tag named before, if it named another.
	Previous string `json:"previous,omitempty"`
}

// UntagInput is the input of fs/untag.
type UntagInput struct {
	Name string `json:"name" jsonschema:"the tag to remove"`
}

// UntagOutput is the output of fs/untag.
type UntagOutput struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
}

// DeleteInput is the input of fs/delete.
type DeleteInput struct {
	Hash string `json:"hash" jsonschema:"the blob's hash (blake3:…)"`
	// Force deletes a tagged blob and its tags.
	Force bool `json:"force,omitempty" jsonschema:"delete the blob even if tagged, removing its tags"`
}

// DeleteOutput is the output of fs/delete.
type DeleteOutput struct {
	Hash string `json:"hash"`
	Size int64  `json:"size"`
	// Untagged are the tags force removed.
	Untagged []string `json:"untagged"`
}

// GCOutput is the output of fs/gc.
type GCOutput struct {
	Removed    []string `json:"removed"`
	Kept       int      `json:"kept"`
	BytesFreed int64    `json:"bytes_freed"`
}

// Stats are the totals of this plugin process since it started.
type Stats struct {
	// BytesSent are the bytes of bao slices written to get streams:
	// slice headers, proof nodes and groups.
	BytesSent int64 `json:"bytes_sent"`
	// ContentBytesSent are the bytes of the groups among them.
	ContentBytesSent int64 `json:"content_bytes_sent"`
	// BytesReceived are the blob bytes puts read.
	BytesReceived int64 `json:"bytes_received"`
	// Gets are the gets sent to their end.
	Gets int64 `json:"gets"`
	// GetsActive are the gets being served now (a gauge).
	GetsActive int64 `json:"gets_active"`
	// Puts are the puts committed, blobs already stored included.
	Puts int64 `json:"puts"`
	// Corrupt are the blobs found corrupted and quarantined.
	Corrupt int64 `json:"corrupt"`
}

// Operations are the fs operations.
func (p *Plugin) Operations() []sdk.Op {
	return []sdk.Op{
		sdk.Query(OpStat, p.opStat).RemoteSafe().RequireScopes(ScopeRead).
			Describe("size, tags and lease of a blob, and whether it is stored; NOT_FOUND if the node knows nothing of it"),
		sdk.Query(OpList, p.opList).RemoteSafe().RequireScopes(ScopeRead).
			Describe("every tag, sorted by name, with the hash and size of the blob it names"),
		sdk.Mutation(OpTag, p.opTag).RemoteSafe().RequireScopes(ScopeWrite).
			Describe("points a tag at a stored blob (replacing what it named); tagged blobs are never collected"),
		sdk.Mutation(OpUntag, p.opUntag).RemoteSafe().RequireScopes(ScopeWrite).
			Describe("removes a tag; the blob stays until gc collects it"),
		sdk.Mutation(OpDelete, p.opDelete).RemoteSafe().RequireScopes(ScopeWrite).
			Describe("deletes a stored blob now; a tagged blob is refused unless force, which also removes its tags"),
		sdk.Mutation(OpGC, p.opGC).RemoteSafe().RequireScopes(ScopeWrite).
			Describe("deletes every blob that has no tag and no lease of a recent put"),
		sdk.Query(OpStats, p.opStats).RemoteSafe().RequireScopes(ScopeRead).
			Describe("bytes and requests this plugin process has served since it started, and the corrupted blobs it found"),
		p.fetchOp(),
	}
}

// storeFor returns the store, or an error for a plugin not configured.
func (p *Plugin) storeFor() (*store, error) {
	st := p.store.Load()
	if st == nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "the fs plugin has no store (it is not configured or is stopping); try again")
	}
	return st, nil
}

func parseHash(s string) (bao.Hash, error) {
	h, err := bao.ParseHash(s)
	if err != nil {
		return h, sdk.Errorf(sdk.CodeInvalidInput, "%s", strings.TrimPrefix(err.Error(), "bao: "))
	}
	return h, nil
}

func (p *Plugin) opStat(_ context.Context, _ *sdk.Call, in HashInput) (StatOutput, error) {
	h, err := parseHash(in.Hash)
	if err != nil {
		return StatOutput{}, err
	}
	st, err := p.storeFor()
	if err != nil {
		return StatOutput{}, err
	}
	info, err := st.stat(h)
	if errors.Is(err, errNotFound) {
		return StatOutput{}, sdk.Errorf(sdk.CodeNotFound, "blob %s is not stored on this node and no tag names it", h)
	}
	if err != nil {
		return StatOutput{}, err
	}
	return StatOutput{Hash: h.String(), Size: info.Size, Present: info.Present, Tags: info.Tags, Leased: info.Leased, Quarantined: info.Quarantined}, nil
}

func (p *Plugin) opList(context.Context, *sdk.Call, struct{}) ([]ListEntry, error) {
	st, err := p.storeFor()
	if err != nil {
		return nil, err
	}
	tags, err := st.list()
	if err != nil {
		return nil, err
	}
	out := make([]ListEntry, 0, len(tags))
	for _, t := range tags {
		out = append(out, ListEntry{Name: t.Name, Hash: t.Hash.String(), Size: max(t.Size, 0), Present: t.Size >= 0})
	}
	return out, nil
}

func (p *Plugin) opTag(_ context.Context, _ *sdk.Call, in TagInput) (TagOutput, error) {
	if err := wire.ValidTag(in.Name); err != nil {
		return TagOutput{}, sdk.Errorf(sdk.CodeInvalidInput, "%v", err)
	}
	h, err := parseHash(in.Hash)
	if err != nil {
		return TagOutput{}, err
	}
	st, err := p.storeFor()
	if err != nil {
		return TagOutput{}, err
	}
	prev, err := st.tag(in.Name, h)
	if errors.Is(err, errNotFound) {
		return TagOutput{}, sdk.Errorf(sdk.CodeNotFound, "blob %s is not stored on this node: put it before tagging it", h)
	}
	if err != nil {
		return TagOutput{}, err
	}
	out := TagOutput{Name: in.Name, Hash: h.String()}
	if prev != nil && *prev != h {
		out.Previous = prev.String()
	}
	return out, nil
}

func (p *Plugin) opUntag(_ context.Context, _ *sdk.Call, in UntagInput) (UntagOutput, error) {
	st, err := p.storeFor()
	if err != nil {
		return UntagOutput{}, err
	}
	h, err := st.untag(in.Name)
	if errors.Is(err, errNotFound) {
		return UntagOutput{}, sdk.Errorf(sdk.CodeNotFound, "no tag %q (fs/list shows the tags)", in.Name)
	}
	if err != nil {
		return UntagOutput{}, err
	}
	return UntagOutput{Name: in.Name, Hash: h.String()}, nil
}

func (p *Plugin) opDelete(_ context.Context, _ *sdk.Call, in DeleteInput) (DeleteOutput, error) {
	h, err := parseHash(in.Hash)
	if err != nil {
		return DeleteOutput{}, err
	}
	st, err := p.storeFor()
	if err != nil {
		return DeleteOutput{}, err
	}
	size, untagged, err := st.remove(h, in.Force)
	var tagged *errTagged
	switch {
	case errors.Is(err, errNotFound):
		return DeleteOutput{}, sdk.Errorf(sdk.CodeNotFound, "blob %s is not stored on this node", h)
	case errors.As(err, &tagged):
		return DeleteOutput{}, sdk.Errorf(sdk.CodeInvalidInput, "blob %s is tagged %s: untag it first, or pass force to delete it and its tags",
			h, strings.Join(tagged.tags, ", "))
	case err != nil:
		return DeleteOutput{}, err
	}
	p.logger().Info("blob deleted", "hash", h.String(), "size", size, "untagged", untagged)
	if untagged == nil {
		untagged = []string{}
	}
	return DeleteOutput{Hash: h.String(), Size: size, Untagged: untagged}, nil
}

func (p *Plugin) opGC(context.Context, *sdk.Call, struct{}) (GCOutput, error) {
	st, err := p.storeFor()
	if err != nil {
		return GCOutput{}, err
	}
	res, err := st.gc()
	if err != nil {
		return GCOutput{}, err
	}
	out := GCOutput{Removed: make([]string, 0, len(res.Removed)), Kept: res.Kept, BytesFreed: res.BytesFreed}
	for _, h := range res.Removed {
		out.Removed = append(out.Removed, h.String())
	}
	p.logger().Info("fs gc", "removed", len(out.Removed), "kept", out.Kept, "bytes_freed", out.BytesFreed)
	return out, nil
}

func (p *Plugin) opStats(context.Context, *sdk.Call, struct{}) (Stats, error) {
	return p.snapshot(), nil
}

func (p *Plugin) snapshot() Stats {
	c := &p.stats
	return Stats{BytesSent: c.bytesSent.Load(), ContentBytesSent: c.contentBytesSent.Load(), BytesReceived: c.bytesReceived.Load(),
		Gets: c.gets.Load(), GetsActive: c.getsActive.Load(), Puts: c.puts.Load(), Corrupt: c.corrupt.Load()}
}
