package dnsplugin

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/miekg/dns"

	"alknet.dev/alknet/plugins/sdk"
)

// DoQ error codes (RFC 9250 §4.3), used as QUIC application error codes
// on connections and streams.
const (
	doqNoError       = 0x0
	doqInternalError = 0x1
	doqProtocolError = 0x2
)

// maxMessage is the largest DNS message a 2-byte length can announce.
const maxMessage = 65535

// serveDoQ serves a DNS-over-QUIC connection (RFC 9250): each query on its
// own client-initiated bidirectional stream — a 2-byte length, the
// message with ID 0, FIN — answered on that stream, then FIN. At most
// queriesPerConn are answered at once; further streams wait (QUIC's own
// stream limit bounds them). A message ID other than 0 or the
// edns-tcp-keepalive option closes the connection with
// DOQ_PROTOCOL_ERROR; a malformed length or a message that does not parse
// resets only its stream with DOQ_PROTOCOL_ERROR.
func (p *Plugin) serveDoQ(ctx context.Context, c *sdk.Conn) error {
	cfg := p.cfg.Load()
	sem := make(chan struct{}, cfg.queriesPerConn)
	var wg sync.WaitGroup
	defer wg.Wait()
	src := source{transport: "doq", identity: c.Auth().Identity, remote: c.Auth().RemoteAddr}
	// closeOnce closes the connection on the first protocol violation;
	// the streams in flight then fail and the accept loop ends.
	var closeOnce sync.Once
	violation := func(reason string) {
		closeOnce.Do(func() {
			p.stats.protocolErrors.Add(1)
			p.logger().Debug("doq connection closed", "remote_addr", src.remote, "reason", reason)
			_ = c.Close(doqProtocolError, reason)
		})
	}
	for {
		s, err := c.AcceptStream(ctx)
		if err != nil {
			return nil
		}
		select {
		case sem <- struct{}{}:
		case <-c.Context().Done():
			s.CancelWrite(doqNoError)
			_ = s.Close()
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p.doqStream(ctx, s, cfg.readTimeout, src, violation)
		}()
	}
}

// doqStream answers the one query of a DoQ stream.
func (p *Plugin) doqStream(ctx context.Context, s *sdk.Stream, readTimeout time.Duration, src source, violation func(string)) {
	defer s.Close()
	_ = s.SetReadDeadline(time.Now().Add(readTimeout))
	req, err := readQuery(s)
	if err != nil {
		p.stats.protocolErrors.Add(1)
		s.CancelWrite(doqProtocolError)
		return
	}
	if req.Id != 0 {
		violation(fmt.Sprintf("DoQ message ID must be 0 (RFC 9250 §4.2.1), got %d", req.Id))
		return
	}
	if hasTCPKeepalive(req) {
		violation("edns-tcp-keepalive is not allowed on DoQ (RFC 9250 §5.5.2)")
		return
	}
	m := p.answer(ctx, req, src)
	if err := writeMessage(s, m); err != nil {
		s.CancelWrite(doqInternalError)
	}
}

// readQuery reads a 2-byte length and that many bytes, and parses them.
// Errors say what was wrong without echoing the bytes.
func readQuery(r io.Reader) (*dns.Msg, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read length: %w", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n < 12 {
		return nil, fmt.Errorf("length %d is shorter than a DNS header", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read %d-byte message: %w", n, err)
	}
	return unpackQuery(buf)
}

// unpackQuery parses a query's wire bytes.
func unpackQuery(b []byte) (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return nil, fmt.Errorf("not a DNS message: %w", err)
	}
	return m, nil
}

// writeMessage writes m with its 2-byte length in one write.
func writeMessage(w io.Writer, m *dns.Msg) error {
	b, err := packLengthPrefixed(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// packLengthPrefixed packs m, compressed, behind its 2-byte length. A zone
// transfer too large for one message becomes several, each with its
// length (RFC 5936 §2.2; RFC 9250 §4.2 and RFC 7766 carry them on one
// stream or connection); any other answer is one message.
func packLengthPrefixed(m *dns.Msg) ([]byte, error) {
	var out []byte
	for _, part := range splitTransfer(m, maxMessage) {
		part.Compress = true
		b, err := part.Pack()
		if err != nil {
			return nil, fmt.Errorf("pack answer: %w", err)
		}
		if len(b) > maxMessage {
			return nil, errors.New("answer longer than 65535 bytes")
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out, nil
}

// splitTransfer splits the answer of an AXFR or IXFR into messages of at
// most limit bytes, in order, each with the header, question and
// additional section of m; any other m is returned alone. Sizes are
// counted uncompressed, an upper bound of the packed size, so no part
// outgrows limit once packed.
func splitTransfer(m *dns.Msg, limit int) []*dns.Msg {
	if len(m.Question) != 1 || (m.Question[0].Qtype != dns.TypeAXFR && m.Question[0].Qtype != dns.TypeIXFR) {
		return []*dns.Msg{m}
	}
	empty := m.Copy()
	empty.Answer = nil
	empty.Compress = false
	base := empty.Len()
	size := base
	for _, rr := range m.Answer {
		size += dns.Len(rr)
	}
	if size <= limit {
		return []*dns.Msg{m}
	}
	var parts []*dns.Msg
	cur, size := empty.Copy(), base
	for _, rr := range m.Answer {
		l := dns.Len(rr)
		if size+l > limit && len(cur.Answer) > 0 {
			parts = append(parts, cur)
			cur, size = empty.Copy(), base
		}
		cur.Answer = append(cur.Answer, rr)
		size += l
	}
	return append(parts, cur)
}

// hasTCPKeepalive reports the edns-tcp-keepalive option (RFC 7828).
func hasTCPKeepalive(m *dns.Msg) bool {
	opt := m.IsEdns0()
	if opt == nil {
		return false
	}
	for _, o := range opt.Option {
		if o.Option() == dns.EDNS0TCPKEEPALIVE {
			return true
		}
	}
	return false
}
