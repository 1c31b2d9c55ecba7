package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/quic-go/quic-go"

	"alknet.dev/alknet/core/endpoint"
	"alknet.dev/alknet/core/identity"
)

// The anchors: the least code that serves the same echo with the same
// certificate and ALPN, straight on the libraries Alknet is built on.

// serverTLS is the anchor servers' TLS config: the node's certificate and
// the echo ALPN, nothing else.
func (e *env) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{e.cert},
		NextProtos:   []string{endpoint.EchoALPN},
	}
}

// clientTLS is the anchor clients' TLS config. It verifies nothing: the
// anchor is the transport without Alknet's pinning.
func (e *env) clientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{endpoint.EchoALPN},
		ServerName:         identity.RawKeySNI,
		InsecureSkipVerify: true,
	}
}

// tracker remembers open connections so that stop can close them.
type tracker[C comparable] struct {
	mu     sync.Mutex
	closed bool
	conns  map[C]func()
	wg     sync.WaitGroup
}

// add registers c with its close func; false if the server is stopping
// (c has then been closed).
func (t *tracker[C]) add(c C, closeFn func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		closeFn()
		return false
	}
	if t.conns == nil {
		t.conns = map[C]func(){}
	}
	t.conns[c] = closeFn
	return true
}

func (t *tracker[C]) remove(c C) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

func (t *tracker[C]) closeAll() {
	t.mu.Lock()
	t.closed = true
	fns := make([]func(), 0, len(t.conns))
	for _, f := range t.conns {
		fns = append(fns, f)
	}
	t.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

// quicEcho is a bare quic-go echo server with the default quic.Config.
type quicEcho struct {
	ln *quic.Listener
	t  tracker[*quic.Conn]
}

func startQUICEcho(cfg *tls.Config) (*quicEcho, error) {
	ln, err := quic.ListenAddr("127.0.0.1:0", cfg, nil)
	if err != nil {
		return nil, err
	}
	s := &quicEcho{ln: ln}
	s.t.wg.Go(s.acceptLoop)
	return s, nil
}

func (s *quicEcho) addr() string { return s.ln.Addr().String() }

func (s *quicEcho) acceptLoop() {
	for {
		c, err := s.ln.Accept(context.Background())
		if err != nil {
			return
		}
		if !s.t.add(c, func() { _ = c.CloseWithError(0, "shutdown") }) {
			continue
		}
		s.t.wg.Go(func() {
			defer s.t.remove(c)
			var streams sync.WaitGroup
			defer streams.Wait()
			for {
				st, err := c.AcceptStream(context.Background())
				if err != nil {
					return // connection closed
				}
				streams.Go(func() {
					if _, err := io.Copy(st, st); err != nil {
						st.CancelRead(0)
						st.CancelWrite(0)
						return
					}
					_ = st.Close()
				})
			}
		})
	}
}

func (s *quicEcho) stop() {
	_ = s.ln.Close()
	s.t.closeAll()
	s.t.wg.Wait()
}

// tlsEcho is a bare crypto/tls echo server.
type tlsEcho struct {
	ln net.Listener
	t  tracker[net.Conn]
}

func startTLSEcho(cfg *tls.Config) (*tlsEcho, error) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		return nil, err
	}
	s := &tlsEcho{ln: ln}
	s.t.wg.Go(s.acceptLoop)
	return s, nil
}

func (s *tlsEcho) addr() string { return s.ln.Addr().String() }

func (s *tlsEcho) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !s.t.add(c, func() { _ = c.Close() }) {
			continue
		}
		s.t.wg.Go(func() {
			defer s.t.remove(c)
			defer c.Close()
			if _, err := io.Copy(c, c); err != nil {
				return
			}
			_ = c.(*tls.Conn).CloseWrite()
		})
	}
}

func (s *tlsEcho) stop() {
	_ = s.ln.Close()
	s.t.closeAll()
	s.t.wg.Wait()
}
