package endpoint

import (
	"context"
	"io"
	"sync"

	"alknet.dev/alknet/core/auth"
)

// EchoALPN is the built-in echo protocol used by tests and benchmarks.
const EchoALPN = "alknet/echo"

// Echo returns a handler that echoes every stream until the peer
// half-closes it, then half-closes its side.
func Echo() Handler {
	return HandlerFunc(func(ctx context.Context, c Conn, _ auth.AuthContext) error {
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			s, err := c.AcceptStream(ctx)
			if err != nil {
				return nil // draining or connection closed
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				if _, err := io.CopyBuffer(s, s, buf); err != nil {
					s.CancelWrite(0)
					s.CancelRead(0)
					return
				}
				_ = s.CloseWrite()
			}()
		}
	})
}
