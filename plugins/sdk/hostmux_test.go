package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"alknet.dev/alknet/proto/pluginpb"
)

// fakeHost answers Invoke with the operation's name; with mux set it
// serves Invokes too, recording what arrives.
type fakeHost struct {
	pluginpb.UnimplementedHostServer
	invokes atomic.Int32 // Invoke RPCs
	mu      sync.Mutex
	frames  []*pluginpb.HostCallFrame
	aborted chan uint64
}

func (f *fakeHost) Invoke(r *pluginpb.HostInvokeRequest, st grpc.ServerStreamingServer[pluginpb.InvokeResult]) error {
	f.invokes.Add(1)
	if err := st.Send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: []byte(`"` + r.Operation + `"`), RequestId: "rpc"}); err != nil || !r.Subscribe {
		return err
	}
	return st.Send(&pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_COMPLETED, RequestId: "rpc"})
}

type muxHost struct{ *fakeHost }

func (f muxHost) Invokes(st grpc.BidiStreamingServer[pluginpb.HostCallFrame, pluginpb.HostCallFrame]) error {
	for {
		fr, err := st.Recv()
		if err != nil {
			return nil
		}
		f.mu.Lock()
		f.frames = append(f.frames, fr)
		f.mu.Unlock()
		switch {
		case fr.Abort:
			f.aborted <- fr.Id
		case fr.Request.Operation == "svc/hang":
			// never answered: the caller gives up
		default:
			_ = st.Send(&pluginpb.HostCallFrame{Id: fr.Id, Last: true,
				Result: &pluginpb.InvokeResult{Kind: pluginpb.InvokeResult_RESPONDED, Output: []byte(`"` + fr.Request.Operation + `"`), RequestId: "mux"}})
		}
	}
}

func hostOver(t *testing.T, srv pluginpb.HostServer) *Host {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer()
	pluginpb.RegisterHostServer(s, srv)
	go func() { _ = s.Serve(lis) }() // ends with Stop below
	cc, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); s.Stop() })
	return &Host{c: pluginpb.NewHostClient(cc)}
}

// A node without Host.Invokes (an older core) still answers: the SDK falls
// back to Host.Invoke, and keeps using it.
func TestInvokeFallsBackWithoutInvokes(t *testing.T) {
	f := &fakeHost{}
	h := hostOver(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 {
		id, out, err := h.InvokeWithID(ctx, &Call{handle: 7}, "svc/op", nil)
		if err != nil || string(out) != `"svc/op"` || id != "rpc" {
			t.Fatalf("invoke: %s %s %v", id, out, err)
		}
	}
	if n := f.invokes.Load(); n != 2 || !h.noMux {
		t.Fatalf("Invoke RPCs %d, noMux %v", n, h.noMux)
	}
}

// Queries go on the one stream, with the caller's deadline; a caller
// that gives up aborts its call there; subscriptions keep their RPC.
func TestInvokeUsesTheStream(t *testing.T) {
	f := &fakeHost{aborted: make(chan uint64, 1)}
	h := hostOver(t, muxHost{f})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id, out, err := h.InvokeWithID(ctx, &Call{handle: 7}, "svc/op", nil); err != nil || string(out) != `"svc/op"` || id != "mux" {
				t.Errorf("invoke: %s %s %v", id, out, err)
			}
		}()
	}
	wg.Wait()
	if n := f.invokes.Load(); n != 0 {
		t.Fatalf("%d Invoke RPCs for queries", n)
	}
	f.mu.Lock()
	first := f.frames[0]
	f.mu.Unlock()
	if first.TimeoutMicros <= 0 || first.TimeoutMicros > 5_000_000 || first.Request.As != 7 {
		t.Fatalf("first frame %v: want the caller's deadline and actor", first)
	}
	hctx, hcancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer hcancel()
	if _, err := h.Invoke(hctx, &Call{handle: 7}, "svc/hang", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past the caller's deadline: %v", err)
	}
	<-f.aborted
	if err := h.Subscribe(ctx, &Call{handle: 7}, "svc/items", nil, func(json.RawMessage) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if n := f.invokes.Load(); n != 1 {
		t.Fatalf("the subscription made %d Invoke RPCs, want 1", n)
	}
}
