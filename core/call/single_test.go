package call_test

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	"alknet.dev/alknet/core/auth"
	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/core/endpoint"
)

// gatedConn holds the stream AcceptStream took until gate is closed: the
// moment between Run taking a single-stream connection's one stream and
// publishing its writer, made as long as the test wants.
type gatedConn struct {
	endpoint.Conn
	gate  chan struct{}
	taken chan struct{}
}

func (c *gatedConn) AcceptStream(ctx context.Context) (endpoint.Stream, error) {
	st, err := c.Conn.AcceptStream(ctx)
	if err == nil {
		close(c.taken)
		<-c.gate
	}
	return st, err
}

// On a single-stream (TCP) connection the client side's Run may take the
// stream just before the first call opens it: the call then waits for
// Run's writer instead of failing with "cannot open stream".
func TestSingleStreamCallWhileRunTakesTheStream(t *testing.T) {
	a, b := net.Pipe()
	reg := call.NewRegistry(nil)
	_ = reg.Register(query("q/echo", func(_ context.Context, in json.RawMessage) (any, error) { return in, nil }))
	server := call.NewSession(endpoint.WrapStreamConn(a, call.ALPN, auth.TransportTCP), call.SessionOptions{Registry: reg})
	go server.Run(context.Background())
	t.Cleanup(func() { _ = server.Close() })

	gc := &gatedConn{Conn: endpoint.WrapStreamConn(b, call.ALPN, auth.TransportTCP), gate: make(chan struct{}), taken: make(chan struct{})}
	client := call.NewSession(gc, call.SessionOptions{})
	go client.Run(context.Background())
	t.Cleanup(func() { _ = client.Close() })
	<-gc.taken // Run has the stream and has not published it yet

	type result struct {
		out json.RawMessage
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := client.Call(ctx5(t), "q/echo", 7)
		done <- result{out, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("the call returned (%s, %v) before Run published the stream", r.out, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	close(gc.gate)
	select {
	case r := <-done:
		if r.err != nil || string(r.out) != "7" {
			t.Fatalf("call on the stream Run took: %s %v", r.out, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not go out on the stream Run took")
	}
}
