package dnsplugin

import (
	"bufio"
	"context"
	"sync"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// serveDoT serves a DNS-over-TLS connection (RFC 7858): the node has
// terminated TLS on its TCP listener; the one stream carries 2-byte
// length-prefixed messages both ways. Queries are pipelined: an answer from
// the node's own data is written at once, in order; a query that may be
// forwarded is answered in a goroutine of its own — up to queriesPerConn
// at once — so its answer may leave after later ones (RFC 7766 §6.2.1.1;
// the client matches them by ID). A connection with no query for idleTimeout, or a
// query whose bytes stall for readTimeout, is closed; so is one that sends
// a malformed length or bytes that are not a DNS message.
func (p *Plugin) serveDoT(ctx context.Context, c *sdk.Conn) error {
	s, err := c.AcceptStream(ctx)
	if err != nil {
		return nil
	}
	cfg := p.cfg.Load()
	src := source{transport: "dot", identity: c.Auth().Identity, remote: c.Auth().RemoteAddr}
	sem := make(chan struct{}, cfg.queriesPerConn)
	var wg sync.WaitGroup
	var wmu sync.Mutex
	defer func() {
		wg.Wait()
		_ = s.Close()
	}()
	r := bufio.NewReaderSize(s, 4096)
	for {
		_ = s.SetReadDeadline(time.Now().Add(cfg.idleTimeout))
		if _, err := r.Peek(1); err != nil {
			return nil // closed by the client or idle
		}
		_ = s.SetReadDeadline(time.Now().Add(cfg.readTimeout))
		req, err := readQuery(r)
		if err != nil {
			p.stats.protocolErrors.Add(1)
			return nil
		}
		reply := func() {
			m := p.answer(ctx, req, src)
			b, err := packLengthPrefixed(m)
			if err != nil {
				p.logger().Error("dot: answer not sent", "error", err)
				return
			}
			wmu.Lock()
			defer wmu.Unlock()
			_, _ = s.Write(b)
		}
		if !p.mayForward(req, src) {
			// Answered from memory at once: in this goroutine, which
			// saves a handoff per query; the order is kept.
			reply()
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-c.Context().Done():
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			reply()
		}()
	}
}
