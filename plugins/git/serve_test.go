package git

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// streamPair is a connected pair of sockets: a stream for runGit and the
// client's end.
func streamPair(t *testing.T) (server, client *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// processGone reports whether pid has exited (a zombie waiting for its
// reaper counts as gone).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func TestRunGitEndsItsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	server, client := streamPair(t)
	var exited atomic.Bool
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		// A program that leaves a child behind holding its stdout.
		c := gitCommand{path: "/bin/sh", args: []string{"-c", "sleep 60 & echo $! > " + pidFile + "; read line; echo got $line"}, dir: dir}
		status, err := runGit(context.Background(), server, server, c, hclog.NewNullLogger(), func() { exited.Store(true) })
		done <- result{status, err}
	}()
	if _, err := io.WriteString(client, "hello\n"); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(client) // to the stream's end: the program exited
	if err != nil || string(out) != "got hello\n" {
		t.Fatalf("output %q, %v", out, err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("runGit did not return after the program exited")
	}
	if r.status != 0 || r.err != nil || !exited.Load() {
		t.Fatalf("status %d, %v, exited %v", r.status, r.err, exited.Load())
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the program's child %d still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunGitTimeLimit(t *testing.T) {
	server, client := streamPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	status, err := runGit(ctx, server, server, gitCommand{path: "/bin/sleep", args: []string{"60"}, dir: t.TempDir()}, hclog.NewNullLogger(), func() {})
	if err != nil || status != -1 || time.Since(start) > 10*time.Second {
		t.Fatalf("status %d, %v after %s; want a kill after 200ms", status, err, time.Since(start))
	}
	if b, err := io.ReadAll(client); err != nil || len(b) != 0 {
		t.Fatalf("client read %q, %v; want the end of the stream", b, err)
	}
}

func TestRunGitClientGone(t *testing.T) {
	server, client := streamPair(t)
	done := make(chan int, 1)
	go func() {
		// yes writes until its stdout fails.
		status, _ := runGit(context.Background(), server, server, gitCommand{path: "/usr/bin/yes", dir: t.TempDir()}, hclog.NewNullLogger(), func() {})
		done <- status
	}()
	buf := make([]byte, 1024)
	if _, err := io.ReadFull(client, buf); err != nil {
		t.Fatal(err)
	}
	_ = client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the program runs on after its client went away")
	}
}
