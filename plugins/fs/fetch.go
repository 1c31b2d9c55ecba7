package fs

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"alknet.dev/alknet/plugins/fs/bao"
	"alknet.dev/alknet/plugins/fs/fsclient"
	"alknet.dev/alknet/plugins/fs/wire"
	"alknet.dev/alknet/plugins/sdk"
)

// OpFetch pulls a blob from other nodes into this node's store.
const OpFetch = "fs/fetch"

// maxFetchSources bounds the sources of one fetch.
const maxFetchSources = 16

// FetchInput is the input of fs/fetch.
type FetchInput struct {
	// Hash of the blob (blake3:<hex>).
	Hash string `json:"hash"`
	// From are the nodes to fetch from: "FINGERPRINT@host:port", or the
	// "host:port" of a node in this node's known_peers.
	From []string `json:"from"`
	// Tag names the blob once stored (optional).
	Tag string `json:"tag,omitempty"`
}

// FetchEvent is one item of fs/fetch: progress while the blob arrives
// (Fetched of Size bytes verified), then a last item with Done set.
type FetchEvent struct {
	Size    int64 `json:"size"`
	Fetched int64 `json:"fetched"`
	Done    bool  `json:"done,omitempty"`
	// Hash is set on the last item; Stored says the node already had it.
	Hash    string `json:"hash,omitempty"`
	Already bool   `json:"already,omitempty"`
	// Dropped names the sources dropped on the way, and why.
	Dropped []string `json:"dropped,omitempty"`
}

// fetchOp is fs/fetch: a subscription (a large blob takes longer than a
// call's deadline) that this node runs as a client of other nodes'
// alknet/fs, reaching them with Host.DialPeer — as this node, pinned.
// Every group is verified as it arrives (fsclient.Get); the blob is
// committed only once whole, with the lease of any put.
func (p *Plugin) fetchOp() sdk.Op {
	return sdk.Subscription(OpFetch, p.fetch).RemoteSafe().RequireScopes(ScopeWrite).
		Describe("this node pulls a blob from other nodes it can dial (FINGERPRINT@host:port, or known peers), verifying every 16 KiB group, and stores it; items report progress, the last one has done")
}

func (p *Plugin) fetch(ctx context.Context, c *sdk.Call, in FetchInput, emit func(FetchEvent) error) error {
	h, err := parseHash(in.Hash)
	if err != nil {
		return err
	}
	if len(in.From) == 0 || len(in.From) > maxFetchSources {
		return sdk.Errorf(sdk.CodeInvalidInput, "from: give 1 to %d nodes to fetch from (FINGERPRINT@host:port)", maxFetchSources)
	}
	if in.Tag != "" {
		if err := wire.ValidTag(in.Tag); err != nil {
			return sdk.Errorf(sdk.CodeInvalidInput, "%v", err)
		}
	}
	st, err := p.storeFor()
	if err != nil {
		return err
	}
	if info, err := st.stat(h); err == nil && info.Present {
		if in.Tag != "" {
			if _, err := st.tag(in.Tag, h); err != nil {
				return sdk.Errorf(sdk.CodeInternal, "tag %s: %v", in.Tag, err)
			}
		}
		return emit(FetchEvent{Size: info.Size, Fetched: 0, Done: true, Hash: h.String(), Already: true})
	}
	f, err := st.tempFile("fetch-*")
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "fetch: %v", err)
	}
	name := f.Name()
	defer os.Remove(name) // a no-op once committed
	defer f.Close()

	var sources []fsclient.Source
	for _, target := range in.From {
		sources = append(sources, fsclient.Source{Name: target, Open: peerOpener(c, target)})
	}
	var (
		mu      sync.Mutex
		total   int64
		fetched int64
		dropped []string
		last    time.Time
	)
	progress := make(chan FetchEvent, 1)
	opts := fsclient.GetOptions{
		OnStart: func(n int64) { mu.Lock(); total = n; mu.Unlock() },
		OnProgress: func(n int64) {
			mu.Lock()
			fetched += n
			ev := FetchEvent{Size: total, Fetched: fetched}
			due := time.Since(last) >= 250*time.Millisecond
			if due {
				last = time.Now()
			}
			mu.Unlock()
			if due {
				select { // the latest only; never blocks the transfer
				case <-progress:
				default:
				}
				progress <- ev
			}
		},
		OnDrop: func(d fsclient.Dropped) {
			p.logger().Warn("fetch source dropped", "hash", h.String(), "source", d.Source, "error", d.Error())
			mu.Lock()
			dropped = append(dropped, d.Error())
			mu.Unlock()
		},
	}
	done := make(chan struct{})
	var res *fsclient.Result
	var getErr error
	go func() { // owned by fetch, which waits for done
		defer close(done)
		res, getErr = fsclient.Get(ctx, h, sources, f, opts)
	}()
	for waiting := true; waiting; {
		select {
		case ev := <-progress:
			if err := emit(ev); err != nil {
				<-done
				return err
			}
		case <-done:
			waiting = false
		}
	}
	if getErr != nil {
		return sdk.Errorf(sdk.CodeInternal, "fetch %s: %v", h, getErr)
	}
	// The content is verified; the outboard is built from the file as
	// written, and its root checked once more before the commit.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "fetch: %v", err)
	}
	w := bao.NewOutboardWriter()
	if _, err := io.CopyBuffer(w, f, make([]byte, 1<<20)); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "fetch: read back %s: %v", name, err)
	}
	root, ob := w.Sum()
	if root != h {
		return sdk.Errorf(sdk.CodeInternal, "fetch: the file written hashes to %s, not %s; nothing stored", root, h)
	}
	if err := f.Chmod(0o444); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "fetch: %v", err)
	}
	if err := f.Sync(); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "fetch: %v", err)
	}
	_ = f.Close()
	already, err := st.commit(name, h, ob)
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "fetch: %v", err)
	}
	if in.Tag != "" {
		if _, err := st.tag(in.Tag, h); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "tag %s: %v", in.Tag, err)
		}
	}
	p.logger().Info("blob fetched", "hash", h.String(), "size", res.Size, "sources", len(in.From), "dropped", len(dropped))
	return emit(FetchEvent{Size: res.Size, Fetched: res.Fetched, Done: true, Hash: h.String(), Already: already, Dropped: dropped})
}

// peerOpener opens a stream to target's alknet/fs, on a connection of its
// own (dialed as this node, for the call c) that closes with the stream.
func peerOpener(c *sdk.Call, target string) fsclient.Opener {
	return func(ctx context.Context) (fsclient.Stream, error) {
		conn, err := c.Host().DialPeer(ctx, c, target, wire.ALPN)
		if err != nil {
			return nil, err
		}
		s, err := conn.OpenStream(ctx)
		if err != nil {
			_ = conn.Close(0, "")
			return nil, fmt.Errorf("open a stream to %s: %w", target, err)
		}
		return &peerStream{Stream: s, conn: conn}, nil
	}
}

// peerStream is an sdk stream as fsclient uses it; closing it closes its
// connection too.
type peerStream struct {
	*sdk.Stream
	conn *sdk.Conn
	once sync.Once
}

// CancelRead stops reading: the SDK's streams have no read-side reset, so
// the stream is closed.
func (s *peerStream) CancelRead(uint64) { _ = s.Close() }

func (s *peerStream) Close() error {
	err := s.Stream.Close()
	s.once.Do(func() { _ = s.conn.Close(0, "") })
	return err
}
