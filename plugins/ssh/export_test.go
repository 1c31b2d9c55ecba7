package ssh

import (
	"net"
	"time"
)

// OfferedCiphers reads an SSH identification line and KEXINIT packet (as
// either side sends them first) and returns the ciphers offered for the
// server-to-client direction. For the package's external tests.
func OfferedCiphers(b []byte) ([]string, error) {
	k, err := parseClientStart(b)
	if err != nil {
		return nil, err
	}
	return k.CiphersServerClient, nil
}

// SetKexInitWait changes how long the server waits for a client's
// KEXINIT, until the returned function restores it.
func SetKexInitWait(d time.Duration) (restore func()) {
	old := kexInitWait
	kexInitWait = d
	return func() { kexInitWait = old }
}

// ReplayConn is a connection whose reads return replay first and whose
// first write drops sent, which was already written.
func ReplayConn(c net.Conn, sent, replay []byte) net.Conn {
	return &prefaceConn{Conn: c, sent: sent, replay: replay}
}

// OpenSSHCiphers is OpenSSH 9's default cipher order.
var OpenSSHCiphers = opensshCiphers

// SetClock makes p's per-source penalties run on now instead of the
// system clock.
func SetClock(p *Plugin, now func() time.Time) { p.clock.Store(&now) }
