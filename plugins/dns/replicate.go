package dnsplugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"alknet.dev/alknet/plugins/dns/pkarr"
	"alknet.dev/alknet/plugins/sdk"
)

// Replication of signed packets between nodes (docs/spec/handlers.md,
// DNS): a node that accepts a packet from dns/publish sends it to each of
// its peers on ALPN alknet/dns, dialed as the node itself (Host.DialPeer:
// a plugin reaches other nodes on its own ALPNs only). Each stream carries
// one packet, then the sender's FIN; the receiver answers one line, "ok
// stored", "ok already" or "refused: <reason>". The receiver checks the
// dialing node's identity for scope dns:publish and verifies the packet
// itself: a peer is trusted to deliver, never to vouch for a key.

const (
	replicationTimeout = 10 * time.Second
	maxPacketBytes     = pkarr.HeaderSize + pkarr.MaxDNSBytes
)

// PeerResult is what one peer answered to a replicated packet.
type PeerResult struct {
	Peer   string `json:"peer"`
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// replicate sends p to every peer, at once, and waits for their answers.
func (p *Plugin) replicate(ctx context.Context, as sdk.Actor, peers []string, pkt *pkarr.SignedPacket) []PeerResult {
	out := make([]PeerResult, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Peer = peer
			res, err := p.sendPacket(ctx, as, peer, pkt)
			if err != nil {
				p.stats.replicationFailed.Add(1)
				out[i].Error = err.Error()
				p.logger().Warn("signed packet not replicated", "peer", peer, "key", pkt.Name(), "error", err)
				return
			}
			p.stats.replicated.Add(1)
			out[i].Result = res
		}()
	}
	wg.Wait()
	return out
}

func (p *Plugin) sendPacket(ctx context.Context, as sdk.Actor, peer string, pkt *pkarr.SignedPacket) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, replicationTimeout)
	defer cancel()
	c, err := p.host.DialPeer(ctx, as, peer, ALPNReplication)
	if err != nil {
		return "", err
	}
	defer c.Close(0, "")
	s, err := c.OpenStream(ctx)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if _, err := s.Write(pkt.Bytes()); err != nil {
		return "", fmt.Errorf("send packet: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return "", fmt.Errorf("send packet: %w", err)
	}
	_ = s.SetReadDeadline(time.Now().Add(replicationTimeout))
	line, err := bufio.NewReader(io.LimitReader(s, 1024)).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("no answer from the peer: %w", err)
	}
	line = strings.TrimSpace(line)
	if r, ok := strings.CutPrefix(line, "refused: "); ok {
		return "", fmt.Errorf("refused: %s", r)
	}
	if !strings.HasPrefix(line, "ok") {
		return "", fmt.Errorf("unexpected answer %q", line)
	}
	return line, nil
}

// serveReplication receives packets from a peer node.
func (p *Plugin) serveReplication(ctx context.Context, c *sdk.Conn) error {
	if id := c.Auth().Identity; !id.HasScope(ScopePublish) && !id.HasScope("admin") {
		_ = c.Close(1, "alknet/dns needs scope "+ScopePublish+": list this node as a peer with it")
		return nil
	}
	if p.cfg.Load().signedZone == "" {
		_ = c.Close(1, "this node serves no signed records: set signed_zone in [plugins.dns]")
		return nil
	}
	c.EachStream(ctx, func(s *sdk.Stream) {
		defer s.Close()
		_ = s.SetReadDeadline(time.Now().Add(replicationTimeout))
		b, err := io.ReadAll(io.LimitReader(s, maxPacketBytes+1))
		if err != nil {
			s.CancelWrite(1)
			return
		}
		p.stats.replicationReceived.Add(1)
		answer := "ok stored"
		if stored, err := p.accept(b, idOf(c.Auth().Identity), "replication"); err != nil {
			answer = "refused: " + err.Error()
		} else if !stored {
			answer = "ok already"
		}
		_, _ = io.WriteString(s, answer+"\n")
	})
	return nil
}

// accept verifies and stores a packet; the log line names the key, who
// sent it and how, never its records.
func (p *Plugin) accept(b []byte, from, via string) (bool, error) {
	if len(b) > maxPacketBytes {
		p.stats.publishRefused.Add(1)
		return false, fmt.Errorf("signed packet of %d bytes: the limit is %d (%d-byte header, %d bytes of records): %w", len(b), maxPacketBytes, pkarr.HeaderSize, pkarr.MaxDNSBytes, pkarr.ErrTooLarge)
	}
	pkt, err := pkarr.Parse(b)
	if err != nil {
		p.stats.publishRefused.Add(1)
		p.logger().Info("signed packet refused", "from", from, "via", via, "error", err)
		return false, err
	}
	stored, err := p.signed.put(pkt)
	if err != nil {
		p.stats.publishRefused.Add(1)
		p.logger().Info("signed packet refused", "from", from, "via", via, "key", pkt.Name(), "error", err)
		return false, fmt.Errorf("signed packet for %s: %w", pkt.Name(), err)
	}
	if stored {
		p.stats.published.Add(1)
		p.logger().Info("signed packet stored", "from", from, "via", via, "key", pkt.Name(), "timestamp", pkt.Timestamp)
	}
	return stored, nil
}

// isPacketError reports an error of the packet itself (refused), as
// opposed to the node failing to keep it.
func isPacketError(err error) bool {
	return errors.Is(err, pkarr.ErrTooShort) || errors.Is(err, pkarr.ErrTooLarge) || errors.Is(err, pkarr.ErrBadSignature) ||
		errors.Is(err, pkarr.ErrBadDNS) || errors.Is(err, errOlder) || errors.Is(err, errStoreFull)
}
