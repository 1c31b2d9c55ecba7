package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sdk/sdktest"
)

// delegate calls the operation its input names: as its caller
// (delegate/as-caller, which declares it; delegate/undeclared, which does
// not) or as a nested call (delegate/nested, whose env is empty).
type delegate struct{}

func (delegate) Info() sdk.Info { return sdk.Info{Name: "delegate", Version: "1.0.0"} }

func (delegate) Operations() []sdk.Op {
	viaCaller := func(ctx context.Context, c *sdk.Call, op string) (json.RawMessage, error) {
		out, err := c.Host().Invoke(ctx, sdk.AsCaller(c), op, nil)
		var ce *sdk.Error
		if err != nil && !errors.As(err, &ce) { // the node refused the request itself: say why
			return nil, sdk.Errorf(sdk.CodeInternal, "%v", err)
		}
		return out, err
	}
	return []sdk.Op{
		sdk.Query("delegate/as-caller", viaCaller).ActsAsCaller(),
		sdk.Query("delegate/undeclared", viaCaller),
		sdk.Query("delegate/nested", func(ctx context.Context, c *sdk.Call, op string) (json.RawMessage, error) {
			return c.Host().Invoke(ctx, c, op, nil)
		}),
	}
}

func TestAsCaller(t *testing.T) {
	h := sdktest.Start(t, delegate{}, sdktest.Options{})
	if err := h.AddOperation("core/ping", func(context.Context, json.RawMessage) (any, error) { return "pong", nil }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := h.Call(ctx, "delegate/as-caller", "core/ping", &sdk.Identity{ID: "alice"})
	if err != nil || string(out) != `"pong"` {
		t.Fatalf("as the caller, from an operation that declares it: %s %v", out, err)
	}
	var ce *sdk.Error
	if _, err := h.Call(ctx, "delegate/nested", "core/ping", &sdk.Identity{ID: "alice"}); !errors.As(err, &ce) || ce.Code != sdk.CodeNotFound {
		t.Fatalf("a nested call outside the env: %v, want NOT_FOUND", err)
	}
	if _, err := h.Call(ctx, "delegate/undeclared", "core/ping", &sdk.Identity{ID: "alice"}); err == nil || !strings.Contains(err.Error(), "acts_as_caller") {
		t.Fatalf("as the caller, from an operation that does not declare it: %v", err)
	}
}
