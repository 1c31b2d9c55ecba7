package endpoint

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// tlsConfig is computed per handshake so that the advertised ALPNs follow
// registrations at run time.
func (e *Endpoint) tlsConfig(allowACME bool) *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Request, never require or chain-verify: the peer list is the
		// trust anchor; Go still checks the client's proof of possession.
		ClientAuth: tls.RequestClientCert,
	}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		cfg := base.Clone()
		cfg.GetConfigForClient = nil
		cfg.GetCertificate = e.opts.Certs.GetCertificate
		if len(hello.ServerName) > maxSNI {
			e.log.Info("connection rejected", "remote_addr", remoteOf(hello), "reason", fmt.Sprintf("server name of %d bytes (at most %d)", len(hello.ServerName), maxSNI))
			return nil, errSNITooLong
		}
		if allowACME && slices.Contains(hello.SupportedProtos, acmeALPN) {
			if cs, ok := e.opts.Certs.(ChallengeSource); ok && cs.ChallengePending(hello) {
				cfg.NextProtos = []string{acmeALPN}
				return cfg, nil
			}
		}
		cfg.NextProtos = e.ALPNs()
		if !intersects(hello.SupportedProtos, cfg.NextProtos) {
			e.log.Info("connection rejected", "remote_addr", remoteOf(hello), "reason", "no_application_protocol",
				"alpn_count", len(hello.SupportedProtos), "alpns", alpnSample(hello.SupportedProtos))
			if len(hello.SupportedProtos) == 0 {
				// Go's TLS would complete a handshake without ALPN; QUIC
				// never does. Refuse it the same way (see alertConn).
				if ac, ok := hello.Conn.(*alertConn); ok {
					ac.noALPN.Store(true)
				}
				return nil, errNoALPN
			}
		}
		return cfg, nil
	}
	return base
}

// maxSNI is the longest server name a client may send (a DNS name).
const maxSNI = 253

var (
	errSNITooLong = errors.New("server name longer than a DNS name can be")
	errNoALPN     = errors.New("no application protocol offered")
)

// alpnSample is what the log shows of a client's ALPN list: at most three
// names of at most 32 bytes each (a client may send kilobytes).
func alpnSample(protos []string) string {
	var b strings.Builder
	for i, p := range protos {
		if i == 3 {
			b.WriteString(",…")
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		if len(p) > 32 {
			p = p[:32] + "…"
		}
		b.WriteString(strconv.QuoteToASCII(p))
	}
	return b.String()
}

// alertConn is the TCP connection under the TLS server. It exists for one
// reason: crypto/tls answers any error of GetConfigForClient with an
// internal_error alert and has no way to send no_application_protocol for
// a client that offered no ALPN at all, which is what QUIC sends and what
// a client should see. When GetConfigForClient marks the connection,
// the fatal internal_error alert record the TLS server writes next is
// rewritten to no_application_protocol.
type alertConn struct {
	net.Conn
	noALPN atomic.Bool
}

func (c *alertConn) Write(p []byte) (int, error) {
	// A plaintext alert record: type 21, version, length 2, fatal (2),
	// internal_error (80).
	if c.noALPN.Load() && len(p) == 7 && p[0] == 21 && p[3] == 0 && p[4] == 2 && p[5] == 2 && p[6] == 80 {
		q := append([]byte(nil), p...)
		q[6] = 120 // no_application_protocol
		return c.Conn.Write(q)
	}
	return c.Conn.Write(p)
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func remoteOf(hello *tls.ClientHelloInfo) string {
	if hello.Conn != nil && hello.Conn.RemoteAddr() != nil {
		return hello.Conn.RemoteAddr().String()
	}
	return "unknown"
}
