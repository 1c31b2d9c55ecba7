package ssh

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// clientStart is an identification line and a KEXINIT packet as OpenSSH 9
// sends them (algorithm lists shortened).
func clientStart(t testing.TB, ciphers ...string) []byte {
	t.Helper()
	payload := gossh.Marshal(&kexInitMsg{
		KexAlgos:                []string{"sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "ext-info-c", "kex-strict-c-v00@openssh.com"},
		ServerHostKeyAlgos:      []string{"ssh-ed25519", "rsa-sha2-512"},
		CiphersClientServer:     ciphers,
		CiphersServerClient:     ciphers,
		MACsClientServer:        []string{"umac-64-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"},
		MACsServerClient:        []string{"umac-64-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"},
		CompressionClientServer: []string{"none", "zlib@openssh.com"},
		CompressionServerClient: []string{"none", "zlib@openssh.com"},
	})
	padding := 8 - (4+1+len(payload))%8
	if padding < 4 {
		padding += 8
	}
	var b bytes.Buffer
	b.WriteString("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
	_ = binary.Write(&b, binary.BigEndian, uint32(1+len(payload)+padding))
	b.WriteByte(byte(padding))
	b.Write(payload)
	b.Write(make([]byte, padding))
	return b.Bytes()
}

// opensshCiphers is OpenSSH 9's default cipher order (ssh -Q cipher
// lists them all; ssh_config(5) Ciphers gives the default).
var opensshCiphers = []string{gossh.CipherChaCha20Poly1305, gossh.CipherAES128CTR, gossh.CipherAES192CTR, gossh.CipherAES256CTR, gossh.CipherAES128GCM, gossh.CipherAES256GCM}

func TestParseClientStart(t *testing.T) {
	full := clientStart(t, opensshCiphers...)
	k, err := parseClientStart(full)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.CiphersServerClient, opensshCiphers) || !slices.Equal(k.CiphersClientServer, opensshCiphers) {
		t.Fatalf("ciphers %v / %v", k.CiphersClientServer, k.CiphersServerClient)
	}
	// Every proper prefix asks for more; bytes after the packet (the
	// client's next packet) do not matter.
	for n := range len(full) {
		if _, err := parseClientStart(full[:n]); !errors.Is(err, errNeedMore) {
			t.Fatalf("first %d of %d bytes: %v; want errNeedMore", n, len(full), err)
		}
	}
	if _, err := parseClientStart(append(slices.Clone(full), 0, 0, 0, 12)); err != nil {
		t.Fatalf("with bytes after the packet: %v", err)
	}

	for name, b := range map[string][]byte{
		"not ssh":        []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"line too long":  append([]byte("SSH-2.0-"), bytes.Repeat([]byte("x"), 300)...),
		"huge packet":    append([]byte("SSH-2.0-x\r\n"), 0x7f, 0, 0, 0, 4),
		"padding>length": append([]byte("SSH-2.0-x\r\n"), 0, 0, 0, 8, 9, 0, 0, 0, 0, 0, 0, 0),
		"not kexinit":    append([]byte("SSH-2.0-x\r\n"), 0, 0, 0, 12, 4, 21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
	} {
		if _, err := parseClientStart(b); err == nil || errors.Is(err, errNeedMore) {
			t.Errorf("%s: %v; want a definite error", name, err)
		}
	}
}

func TestPreferredCiphers(t *testing.T) {
	k, err := parseClientStart(clientStart(t, opensshCiphers...))
	if err != nil {
		t.Fatal(err)
	}
	if got := preferredCiphers(DefaultCiphers, k); !slices.Equal(got, []string{gossh.CipherAES128GCM}) {
		t.Errorf("OpenSSH against the defaults: offer %v; want aes128-gcm alone", got)
	}
	k, _ = parseClientStart(clientStart(t, "aes256-ctr", "aes128-ctr"))
	if got := preferredCiphers(DefaultCiphers, k); !slices.Equal(got, []string{gossh.CipherAES128CTR}) {
		t.Errorf("an AES-CTR client: offer %v; want the node's first it supports, aes128-ctr", got)
	}
	// One direction only is not enough.
	k.CiphersClientServer = []string{"aes128-gcm@openssh.com", "aes256-ctr"}
	k.CiphersServerClient = []string{"aes256-ctr"}
	if got := preferredCiphers(DefaultCiphers, k); !slices.Equal(got, []string{gossh.CipherAES256CTR}) {
		t.Errorf("different lists per direction: offer %v; want aes256-ctr", got)
	}
	k, _ = parseClientStart(clientStart(t, "chacha20-poly1305@openssh.com"))
	if got := preferredCiphers(DefaultCiphers, k); !slices.Equal(got, DefaultCiphers) {
		t.Errorf("a client with nothing in common: offer %v; want the whole list", got)
	}
}

// FuzzParseClientStart feeds the read-ahead parser the first bytes a
// client may send. It must not panic, must bound what it asks for, and
// what it accepts must be a KEXINIT the library encodes back to the same
// payload.
func FuzzParseClientStart(f *testing.F) {
	f.Add(clientStart(f, opensshCiphers...))
	f.Add(clientStart(f, "aes128-ctr"))
	f.Add([]byte("SSH-2.0-x\r\n\x00\x00\x00\x0c\x04\x14"))
	f.Add([]byte("GET / HTTP/1.0\r\n\r\n"))
	f.Add([]byte("SSH-2.0-x\n\xff\xff\xff\xff\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := parseClientStart(b)
		if errors.Is(err, errNeedMore) {
			if len(b) > maxVersionLine+4+maxKexInitPacket {
				t.Fatalf("asks for more after %d bytes", len(b))
			}
			return
		}
		if err != nil {
			return
		}
		nl := bytes.IndexByte(b, '\n')
		p := b[nl+1:]
		length, padding := binary.BigEndian.Uint32(p), uint32(p[4])
		payload := bytes.Clone(p[5 : 4+length-padding])
		// first_kex_packet_follows is a boolean byte (RFC 4251 §5): any
		// non-zero value reads as true and is written back as 1.
		if i := len(payload) - 5; i >= 0 && payload[i] != 0 {
			payload[i] = 1
		}
		if got := gossh.Marshal(k); !bytes.Equal(got, payload) {
			t.Fatalf("accepted payload %x re-encodes as %x", payload, got)
		}
	})
}
