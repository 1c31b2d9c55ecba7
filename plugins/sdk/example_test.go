package sdk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

// upper is a complete plugin: ALPN alknet/upper upper-cases every stream,
// and the operation upper/say upper-cases a string.
type upper struct{}

func (upper) Manifest() sdk.Manifest {
	return sdk.Manifest{
		Name: "upper", Version: "1.0.0", ProtocolVersions: []int{1},
		ALPNs: []string{"alknet/upper"},
		Operations: []sdk.Operation{
			{Name: "upper/say", OpType: sdk.Query, RemoteSafe: true,
				InputSchema: json.RawMessage(`{"type":"string"}`)},
		},
	}
}

func (upper) Configure(context.Context, json.RawMessage, *sdk.Host) error { return nil }

func (upper) ServeConn(ctx context.Context, c *sdk.Conn) error {
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return nil // the connection closed or the node drains
		}
		go func() {
			b, _ := io.ReadAll(s)
			_, _ = s.Write([]byte(strings.ToUpper(string(b))))
			_ = s.Close()
		}()
	}
}

func (upper) Invoke(_ context.Context, call *sdk.Call) (any, error) {
	var s string
	if err := json.Unmarshal(call.Input, &s); err != nil {
		return nil, sdk.Errorf("INVALID_INPUT", "want a string")
	}
	return strings.ToUpper(s), nil
}

// In a plugin's main package the whole program is:
//
//	func main() { sdk.Serve(upper{}) }
//
// sdktest runs the same handler in-process, behind the same protocol.
func Example() {
	h, err := sdktest.New(upper{}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	ctx := context.Background()

	out, err := h.Call(ctx, "upper/say", "hello", nil, nil, false)
	fmt.Println(string(out[0]), err)

	conn, _ := h.Connect(ctx, sdk.Auth{ALPN: "alknet/upper"}, nil)
	s := conn.OpenStream()
	_, _ = s.Write([]byte("over a stream"))
	_ = s.CloseWrite()
	b, _ := io.ReadAll(s)
	fmt.Println(string(b))
	conn.Close()
	// Output:
	// "HELLO" <nil>
	// OVER A STREAM
}
