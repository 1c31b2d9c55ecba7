package sdk_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

// lastWords answers one stream with a payload, closes it and returns from
// ServeConn at once: the connection ends right behind its last bytes, as
// a server that says goodbye and hangs up (SSH's disconnect after too many
// authentication attempts).
type lastWords struct{ payload []byte }

func (lastWords) Info() sdk.Info {
	return sdk.Info{Name: "lastwords", Version: "1.0.0", ALPNs: []string{"test/lastwords"}}
}

func (p lastWords) ServeConn(ctx context.Context, c *sdk.Conn) error {
	s, err := c.AcceptStream(ctx)
	if err != nil {
		return nil
	}
	if _, err := s.Write(p.payload); err != nil {
		return err
	}
	return s.Close()
}

// Every byte a handler wrote, and its FIN, reach the peer although the
// handler returned — and the connection was closed — just after writing
// them: closing a connection normally must not cut its streams' last data.
func TestConnCloseDeliversLastWrites(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 256<<10/16) // 256 KiB
	h := sdktest.Start(t, lastWords{payload}, sdktest.Options{})
	for i := range 100 {
		func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			conn, err := h.Connect(ctx, sdk.Auth{ALPN: "test/lastwords"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			st, err := conn.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(st)
			if err != nil || !bytes.Equal(got, payload) {
				t.Fatalf("connection %d: read %d of %d bytes, then %v", i, len(got), len(payload), err)
			}
		}()
	}
}
