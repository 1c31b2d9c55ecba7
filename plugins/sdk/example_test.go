package sdk_test

import (
	"context"
	"fmt"
	"io"

	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

// hello is a complete plugin: every stream on ALPN alknet/hello gets
// "hello <peer>", and the operation hello/greet greets a name.
type hello struct{}

func (hello) Info() sdk.Info {
	return sdk.Info{Name: "hello", Version: "1.0.0", ALPNs: []string{"alknet/hello"}}
}

func (hello) ServeConn(ctx context.Context, c *sdk.Conn) error {
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return nil // the connection closed or the node drains
		}
		fmt.Fprintf(s, "hello %s\n", c.Auth().RemoteAddr)
		s.Close()
	}
}

func (hello) Operations() []sdk.Op {
	return []sdk.Op{sdk.Query("hello/greet", func(_ context.Context, _ *sdk.Call, name string) (string, error) {
		return "hello " + name, nil
	})}
}

// In a plugin's main package the whole program is
//
//	func main() { sdk.Serve(hello{}) }
//
// sdktest runs the same plugin in-process behind the node's call registry
// and stream bridge.
func Example() {
	h, err := sdktest.New(hello{}, sdktest.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	ctx := context.Background()

	out, err := h.Call(ctx, "hello/greet", "you", nil)
	fmt.Println(string(out), err)
	_, err = h.Call(ctx, "hello/greet", 42, nil) // the derived schema wants a string
	fmt.Println(err.(*sdk.Error).Code)

	conn, _ := h.Connect(ctx, sdk.Auth{ALPN: "alknet/hello", RemoteAddr: "192.0.2.1:4433"})
	s, _ := conn.OpenStream(ctx)
	_ = s.CloseWrite()
	b, _ := io.ReadAll(s)
	fmt.Print(string(b))
	conn.Close()
	// Output:
	// "hello you" <nil>
	// INVALID_INPUT
	// hello 192.0.2.1:4433
}
