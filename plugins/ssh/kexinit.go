package ssh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Server cipher preference.
//
// In SSH the client chooses the cipher: the first of its own list that
// the server also offers (RFC 4253 §7.1). OpenSSH lists
// chacha20-poly1305, then AES-CTR, then AES-GCM, so against a server
// offering both AES modes it takes AES-CTR with an HMAC — which costs
// both ends noticeably more than AES-GCM (an AEAD, one pass with the
// CPU's AES and carry-less multiply instructions). With
// prefer_server_ciphers (the default), the plugin reads the client's
// KEXINIT before the key exchange starts and offers that client one
// cipher only: the first of `ciphers` that the client supports in both
// directions. It is what a TLS server with server preference does, done
// with the means SSH gives a server. The client still only ever gets a
// cipher it listed, both KEXINITs are covered by the exchange hash the
// host key signs, and a client that lists none of `ciphers` gets the
// whole list (and the usual "no common algorithm" refusal).
//
// golang.org/x/crypto/ssh has no hook for this, so the plugin sends the
// server's identification line itself, reads the client's line and first
// packet, and hands everything to the library unchanged: the bytes read
// are replayed to it, and its own identical identification line is not
// sent twice. The framing below (line, packet length) is written here;
// the KEXINIT payload is decoded with the library's ssh.Unmarshal.

// maxVersionLine is RFC 4253 §4.2's limit on an identification line,
// CR LF included.
const maxVersionLine = 255

// maxKexInitPacket bounds the first packet read ahead (RFC 4253 §6.1 has
// implementations accept 35000 bytes; a KEXINIT is a few KiB).
const maxKexInitPacket = 35000

// kexInitMsg is the layout of SSH_MSG_KEXINIT (RFC 4253 §7.1), for
// ssh.Unmarshal.
type kexInitMsg struct {
	Cookie                  [16]byte `sshtype:"20"`
	KexAlgos                []string
	ServerHostKeyAlgos      []string
	CiphersClientServer     []string
	CiphersServerClient     []string
	MACsClientServer        []string
	MACsServerClient        []string
	CompressionClientServer []string
	CompressionServerClient []string
	LanguagesClientServer   []string
	LanguagesServerClient   []string
	FirstKexFollows         bool
	Reserved                uint32
}

// errNeedMore: the bytes so far are a valid beginning; read more.
var errNeedMore = errors.New("need more bytes")

// parseClientStart reads the client's identification line and first
// binary packet from b, and returns that packet as a KEXINIT. It returns
// errNeedMore while b is a valid but incomplete beginning, and another
// error when b cannot be such a beginning.
func parseClientStart(b []byte) (*kexInitMsg, error) {
	// Only the line starting "SSH-" counts: RFC 4253 §4.2 lets a server,
	// not a client, send other lines first.
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		if len(b) >= maxVersionLine {
			return nil, errors.New("identification line too long")
		}
		return nil, errNeedMore
	}
	if nl+1 > maxVersionLine {
		return nil, errors.New("identification line too long")
	}
	if !bytes.HasPrefix(b, []byte("SSH-")) {
		return nil, errors.New("not an SSH identification line")
	}
	p := b[nl+1:]
	if len(p) < 5 {
		return nil, errNeedMore
	}
	length := binary.BigEndian.Uint32(p)
	padding := uint32(p[4])
	if length < 1+1 || length > maxKexInitPacket || padding+1 >= length {
		return nil, fmt.Errorf("first packet: length %d, padding %d", length, padding)
	}
	if uint32(len(p)-4) < length {
		return nil, errNeedMore
	}
	payload := p[5 : 4+length-padding]
	msg := &kexInitMsg{}
	if err := gossh.Unmarshal(payload, msg); err != nil {
		return nil, fmt.Errorf("first packet is not a KEXINIT: %w", err)
	}
	return msg, nil
}

// preferredCiphers is what to offer a client whose KEXINIT is k: the first
// of ours it supports in both directions, alone; all of ours when it
// supports none.
func preferredCiphers(ours []string, k *kexInitMsg) []string {
	for _, name := range ours {
		if slices.Contains(k.CiphersClientServer, name) && slices.Contains(k.CiphersServerClient, name) {
			return []string{name}
		}
	}
	return ours
}

// prefaceConn is the connection as golang.org/x/crypto/ssh sees it after
// the plugin has read ahead: reads return the bytes read ahead first
// (then the error that ended reading ahead, if any), and the library's
// identification line, already sent, is dropped from its first write.
type prefaceConn struct {
	net.Conn
	sent   []byte // our identification line as sent; not sent again
	replay []byte
	rerr   error
}

func (c *prefaceConn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	if c.rerr != nil {
		return 0, c.rerr
	}
	return c.Conn.Read(p)
}

func (c *prefaceConn) Write(p []byte) (int, error) {
	if c.sent != nil {
		sent := c.sent
		c.sent = nil
		if !bytes.HasPrefix(p, sent) {
			// Cannot happen: both come from the same ServerVersion.
			return 0, errors.New("ssh: identification line differs from the one already sent")
		}
		if len(p) == len(sent) {
			return len(p), nil
		}
		n, err := c.Conn.Write(p[len(sent):])
		return len(sent) + n, err
	}
	return c.Conn.Write(p)
}

// kexInitWait is how long the plugin waits for the client's KEXINIT after
// sending its own identification line. Clients send it straight after
// the identification lines are exchanged (RFC 4253 §7.1: each side
// begins by sending it), so it comes one round trip later; a client that
// waits for the server's KEXINIT first is served, after this wait, with
// the whole cipher list and the library's usual negotiation.
var kexInitWait = 3 * time.Second

// readClientStart sends the server's identification line, reads the
// client's line and KEXINIT, and returns the connection to give the
// library with what was read. The KEXINIT is nil when the client's first
// bytes were not that (the library then fails on them as it always did)
// or did not come within kexInitWait; handshakeDeadline, the read
// deadline already set on nc, is set again before returning.
func readClientStart(nc net.Conn, version string, handshakeDeadline time.Time) (*prefaceConn, *kexInitMsg) {
	line := []byte(version + "\r\n")
	pc := &prefaceConn{Conn: nc, sent: line}
	if _, err := nc.Write(line); err != nil {
		pc.sent, pc.rerr = nil, err
		return pc, nil
	}
	waitUntil := time.Now().Add(kexInitWait)
	if !handshakeDeadline.IsZero() && handshakeDeadline.Before(waitUntil) {
		waitUntil = handshakeDeadline
	}
	_ = nc.SetReadDeadline(waitUntil)
	defer func() { _ = nc.SetReadDeadline(handshakeDeadline) }()
	buf := make([]byte, 0, 4<<10)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		k, perr := parseClientStart(buf)
		if perr == nil {
			pc.replay = buf
			return pc, k
		}
		if perr == errNeedMore && errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(handshakeDeadline) {
			// Not within kexInitWait, but the handshake has time left:
			// the client may be waiting for our KEXINIT.
			pc.replay = buf
			return pc, nil
		}
		if perr != errNeedMore || err != nil {
			pc.replay, pc.rerr = buf, err
			return pc, nil
		}
	}
}
