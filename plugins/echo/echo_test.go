package echo_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/echo"
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

func TestEchoPluginInProcess(t *testing.T) {
	h := sdktest.Start(t, &echo.Handler{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := h.Manifest(ctx)
	if err != nil || m.Name != "echo" || m.ALPNs[0] != "alknet/echo" || m.ProtocolVersions[0] != 1 {
		t.Fatalf("manifest %+v %v", m, err)
	}
	out, err := h.Call(ctx, "echo/say", map[string]int{"x": 1}, nil, nil, false)
	if err != nil || string(out[0]) != `{"x":1}` {
		t.Fatalf("echo/say: %s %v", out, err)
	}
	items, err := h.Call(ctx, "echo/ticks", map[string]int{"count": 3}, nil, nil, true)
	if err != nil || len(items) != 3 || string(items[2]) != `{"n":2}` {
		t.Fatalf("echo/ticks: %s %v", items, err)
	}
	out, err = h.Call(ctx, "echo/caps", nil, map[string][]byte{"echo_secret": []byte("v")}, nil, false)
	if err != nil || !strings.Contains(string(out[0]), `"capabilities":["echo_secret"]`) || strings.Contains(string(out[0]), `"v"`) {
		t.Fatalf("echo/caps: %s %v", out, err)
	}
	if _, err := h.Call(ctx, "echo/nope", nil, nil, nil, false); err == nil {
		t.Fatal("unknown operation answered")
	}

	conn, err := h.Connect(ctx, sdk.Auth{ALPN: echo.ALPN()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 3<<20)
	_, _ = rand.Read(payload)
	s := conn.OpenStream()
	go func() { _, _ = s.Write(payload); _ = s.CloseWrite() }()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("stream echo: %d of %d bytes, %v", len(got), len(payload), err)
	}
	conn.Close()
	select {
	case <-conn.Closed():
	case <-ctx.Done():
		t.Fatal("handler did not finish the connection after it closed")
	}
	var names []string
	out, _ = h.Call(ctx, "echo/env", nil, nil, nil, false)
	_ = json.Unmarshal(out[0], &names)
	if len(names) == 0 {
		t.Fatal("echo/env reported nothing")
	}
}
