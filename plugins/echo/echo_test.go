package echo_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/echo"
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

func TestEchoPluginInProcess(t *testing.T) {
	h := sdktest.Start(t, &echo.Plugin{}, sdktest.Options{Capabilities: map[string][]byte{"echo_secret": []byte("v")}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Call(ctx, "echo/say", map[string]int{"x": 1}, nil)
	if err != nil || string(out) != `{"x":1}` {
		t.Fatalf("echo/say: %s %v", out, err)
	}
	items, err := h.Subscribe(ctx, "echo/ticks", map[string]int{"count": 3}, nil)
	if err != nil || len(items) != 3 || string(items[2]) != `{"n":2}` {
		t.Fatalf("echo/ticks: %s %v", items, err)
	}
	// The node checks the declared schema before the plugin runs.
	var se *sdk.Error
	if _, err := h.Subscribe(ctx, "echo/ticks", map[string]int{"count": -1}, nil); !errors.As(err, &se) || se.Code != sdk.CodeInvalidInput {
		t.Fatalf("echo/ticks with a negative count: %v", err)
	}
	// echo/caps needs scope echo:caps: anonymous callers are refused by
	// the node, before the plugin sees the call or its capabilities.
	if _, err := h.Call(ctx, "echo/caps", nil, nil); !errors.As(err, &se) || se.Code != sdk.CodeForbidden {
		t.Fatalf("anonymous echo/caps: %v", err)
	}
	out, err = h.Call(ctx, "echo/caps", nil, &sdk.Identity{ID: "ops", Scopes: []string{"echo:caps"}})
	if err != nil || !strings.Contains(string(out), `"capabilities":["echo_secret"]`) || strings.Contains(string(out), `"v"`) {
		t.Fatalf("echo/caps: %s %v", out, err)
	}
	if _, err := h.Call(ctx, "echo/nope", nil, nil); !errors.As(err, &se) || se.Code != sdk.CodeNotFound {
		t.Fatalf("unknown operation: %v", err)
	}
	// Internal operations do not exist on the wire.
	if _, err := h.Call(ctx, "echo/env", nil, nil); !errors.As(err, &se) || se.Code != sdk.CodeNotFound {
		t.Fatalf("echo/env from the wire: %v", err)
	}
	var names []string
	out, err = h.CallInternal(ctx, "echo/env", nil)
	if err != nil || json.Unmarshal(out, &names) != nil || len(names) == 0 {
		t.Fatalf("echo/env: %s %v", out, err)
	}

	conn, err := h.Connect(ctx, sdk.Auth{ALPN: echo.ALPN()})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 3<<20)
	_, _ = rand.Read(payload)
	s, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = s.Write(payload); _ = s.CloseWrite() }()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("stream echo: %d of %d bytes, %v", len(got), len(payload), err)
	}
	conn.Close()
	select {
	case <-conn.Closed():
	case <-ctx.Done():
		t.Fatal("the connection did not close")
	}
}
