// Package testnet holds network fixtures shared by the tests and the
// benchmarks: traffic only on loopback, every goroutine owned by the
// fixture's stop.
package testnet

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// UDPDropped fronts target (a TCP+TLS server) with a loopback port whose
// UDP side is bound and never answered, as a firewall dropping UDP leaves
// a node. TCP connections are forwarded byte for byte. stop closes
// everything and waits for its goroutines.
func UDPDropped(target string) (addr string, stop func(), err error) {
	var ln net.Listener
	var udp net.PacketConn
	for range 20 {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return "", nil, err
		}
		if udp, err = net.ListenPacket("udp", ln.Addr().String()); err == nil {
			break
		}
		ln.Close()
	}
	if err != nil {
		return "", nil, errors.New("no loopback port free for both UDP and TCP")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		// Owned by stop, which closes ln and waits for this loop and
		// every forwarding pair.
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			open[in], open[out] = true, true
			mu.Unlock()
			cp := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
				mu.Lock()
				delete(open, src)
				mu.Unlock()
			}
			wg.Add(2)
			go cp(in, out)
			go cp(out, in)
		}
	}()
	stop = func() {
		ln.Close()
		udp.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
	return ln.Addr().String(), stop, nil
}

// UDPDroppedT is UDPDropped for a test or benchmark: a failure fails it,
// and its cleanup stops the fixture.
func UDPDroppedT(tb testing.TB, target string) string {
	tb.Helper()
	addr, stop, err := UDPDropped(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(stop)
	return addr
}
