package pluginrpc

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestCalls(t *testing.T) {
	parent, cancelAll := context.WithCancel(context.Background())
	c := NewCalls(2)
	ended := make(chan string, 4)
	wait := func(name string) func(context.Context) {
		return func(ctx context.Context) {
			<-ctx.Done()
			ended <- name + " " + ctx.Err().Error()
		}
	}
	if err := c.Start(parent, 1, 0, wait("one")); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(parent, 1, 0, wait("again")); !errors.Is(err, ErrCallRunning) {
		t.Fatalf("the same id twice: %v", err)
	}
	if err := c.Start(parent, 2, 20*time.Millisecond, wait("two")); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(parent, 3, 0, wait("three")); !errors.Is(err, ErrTooManyCalls) {
		t.Fatalf("over the bound: %v", err)
	}
	if got := <-ended; got != "two context deadline exceeded" {
		t.Fatalf("timeout: %s", got)
	}
	c.Abort(1)
	if got := <-ended; got != "one context canceled" {
		t.Fatalf("abort: %s", got)
	}
	c.Abort(99) // unknown: nothing
	// Ended calls free their ids and their places (once their goroutines
	// have returned, just after they reported).
	startEventually := func(id uint64, name string) {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := c.Start(parent, id, 0, wait(name))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s (id %d) still refused after the calls ended: %v", name, id, err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	startEventually(1, "one more")
	startEventually(4, "four")
	cancelAll()
	c.Wait()
	if len(ended) != 2 {
		t.Fatalf("%d calls ended with the parent, want 2", len(ended))
	}
}
