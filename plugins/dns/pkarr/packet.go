package pkarr

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/miekg/dns"
)

// MaxDNSBytes is the largest DNS part a signed packet may carry, in bytes.
const MaxDNSBytes = 1000

// HeaderSize is the size in bytes of the fixed part of a signed packet: the
// 32-byte public key, the 64-byte signature and the 8-byte timestamp.
const HeaderSize = ed25519.PublicKeySize + ed25519.SignatureSize + 8

// Sentinel errors, to be tested with errors.Is. The errors returned by this
// package wrap one of them and say, in their text, which input failed.
var (
	// ErrTooShort means the input is shorter than HeaderSize bytes.
	ErrTooShort = errors.New("signed packet: too short")
	// ErrTooLarge means the DNS part is longer than MaxDNSBytes bytes.
	ErrTooLarge = errors.New("signed packet: dns part too large")
	// ErrBadSignature means the signature does not verify for the public
	// key of the packet.
	ErrBadSignature = errors.New("signed packet: bad signature")
	// ErrBadDNS means the DNS part does not parse as a DNS message.
	ErrBadDNS = errors.New("signed packet: dns part is not a DNS message")
)

// packetError is an error that says what failed and wraps a sentinel error
// and, where there is one, the error that caused it.
type packetError struct {
	msg   string
	kind  error
	cause error
}

func (e *packetError) Error() string { return e.msg }

func (e *packetError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

func newError(kind, cause error, format string, args ...any) error {
	return &packetError{msg: fmt.Sprintf(format, args...), kind: kind, cause: cause}
}

// SignedPacket is a parsed, verified signed packet. The zero value is not a
// valid packet; obtain one from Parse, Sign or SignWire.
type SignedPacket struct {
	// PublicKey is the Ed25519 public key that signed the packet (32 bytes).
	PublicKey ed25519.PublicKey
	// Signature is the Ed25519 signature over Signable(Timestamp, DNS)
	// (64 bytes).
	Signature []byte
	// Timestamp is the time the packet was signed, in microseconds since the
	// Unix epoch, as given by its signer. It is also the BEP 44 sequence
	// number: a newer packet of the same key has a larger timestamp.
	Timestamp uint64
	// DNS is the DNS message in wire format, at most MaxDNSBytes bytes.
	DNS []byte
}

// Signable returns the bytes a signed packet's signature covers: the
// bencoded BEP 44 "seq" and "v" entries (without salt) for the given
// timestamp and DNS part,
//
//	3:seqi<timestamp>e1:v<len(dnsBytes)>:<dnsBytes>
//
// with both numbers written in decimal.
func Signable(timestamp uint64, dnsBytes []byte) []byte {
	b := make([]byte, 0, 32+len(dnsBytes))
	b = append(b, "3:seqi"...)
	b = strconv.AppendUint(b, timestamp, 10)
	b = append(b, "e1:v"...)
	b = strconv.AppendInt(b, int64(len(dnsBytes)), 10)
	b = append(b, ':')
	return append(b, dnsBytes...)
}

// Parse parses and verifies a signed packet in its byte form (public key ‖
// signature ‖ timestamp ‖ DNS message). It checks, in this order, that b has
// at least HeaderSize bytes (ErrTooShort), that its DNS part has at most
// MaxDNSBytes bytes (ErrTooLarge), that the signature verifies for the public
// key the packet carries (ErrBadSignature), and that the DNS part parses as a
// DNS message (ErrBadDNS). The returned packet does not share memory with b.
func Parse(b []byte) (*SignedPacket, error) {
	if len(b) < HeaderSize {
		return nil, newError(ErrTooShort, nil,
			"signed packet: %d bytes, shorter than the %d-byte header (public key, signature, timestamp)",
			len(b), HeaderSize)
	}
	if n := len(b) - HeaderSize; n > MaxDNSBytes {
		return nil, newError(ErrTooLarge, nil,
			"signed packet: dns part is %d bytes, the limit is %d", n, MaxDNSBytes)
	}
	b = bytes.Clone(b)
	p := &SignedPacket{
		PublicKey: ed25519.PublicKey(b[:ed25519.PublicKeySize:ed25519.PublicKeySize]),
		Signature: b[ed25519.PublicKeySize : ed25519.PublicKeySize+ed25519.SignatureSize : ed25519.PublicKeySize+ed25519.SignatureSize],
		Timestamp: binary.BigEndian.Uint64(b[ed25519.PublicKeySize+ed25519.SignatureSize : HeaderSize]),
		DNS:       b[HeaderSize:],
	}
	if !ed25519.Verify(p.PublicKey, Signable(p.Timestamp, p.DNS), p.Signature) {
		return nil, newError(ErrBadSignature, nil,
			"signed packet: signature does not verify for key %s (timestamp %d, %d dns bytes)",
			p.Name(), p.Timestamp, len(p.DNS))
	}
	if _, err := p.Msg(); err != nil {
		return nil, err
	}
	return p, nil
}

// Sign packs msg and signs it with priv under the given timestamp
// (microseconds since the Unix epoch). The message is packed from a copy of
// msg with DNS name compression turned on, as pkarr does, so that more
// records fit; msg itself is not changed. Owner names are packed as given:
// the caller writes them relative to the key, as "<z32>." for the apex and
// "_foo.<z32>." for "_foo" (see SignedPacket.Records). Sign refuses a message
// that packs to more than MaxDNSBytes bytes (ErrTooLarge).
func Sign(priv ed25519.PrivateKey, timestamp uint64, msg *dns.Msg) (*SignedPacket, error) {
	if msg == nil {
		return nil, errors.New("signed packet: sign: no DNS message")
	}
	m := msg.Copy()
	m.Compress = true
	wire, err := m.Pack()
	if err != nil {
		return nil, newError(ErrBadDNS, err, "signed packet: sign: packing the DNS message: %v", err)
	}
	if len(wire) > MaxDNSBytes {
		return nil, newError(ErrTooLarge, nil,
			"signed packet: sign: dns message packs to %d bytes, the limit is %d", len(wire), MaxDNSBytes)
	}
	return SignWire(priv, timestamp, wire)
}

// SignWire signs a DNS message already in wire format with priv under the
// given timestamp (microseconds since the Unix epoch). It refuses a message
// longer than MaxDNSBytes bytes (ErrTooLarge) or one that does not parse as a
// DNS message (ErrBadDNS), so that what it returns always passes Parse. The
// returned packet does not share memory with wire.
func SignWire(priv ed25519.PrivateKey, timestamp uint64, wire []byte) (*SignedPacket, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signed packet: sign: private key is %d bytes, want %d",
			len(priv), ed25519.PrivateKeySize)
	}
	if len(wire) > MaxDNSBytes {
		return nil, newError(ErrTooLarge, nil,
			"signed packet: sign: dns part is %d bytes, the limit is %d", len(wire), MaxDNSBytes)
	}
	if err := new(dns.Msg).Unpack(wire); err != nil {
		return nil, newError(ErrBadDNS, err,
			"signed packet: sign: %d dns bytes are not a DNS message: %v", len(wire), err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	p := &SignedPacket{
		PublicKey: bytes.Clone(pub),
		Timestamp: timestamp,
		DNS:       bytes.Clone(wire),
	}
	if p.DNS == nil {
		p.DNS = []byte{}
	}
	p.Signature = ed25519.Sign(priv, Signable(timestamp, p.DNS))
	return p, nil
}

// Bytes returns the packet in its byte form: public key ‖ signature ‖ 8-byte
// big-endian timestamp ‖ DNS message. For a packet from Parse, Sign or
// SignWire this is what Parse accepts; the fields are written as they are, so
// a packet whose fields were changed afterwards may no longer verify.
func (p *SignedPacket) Bytes() []byte {
	b := make([]byte, 0, len(p.PublicKey)+len(p.Signature)+8+len(p.DNS))
	b = append(b, p.PublicKey...)
	b = append(b, p.Signature...)
	b = binary.BigEndian.AppendUint64(b, p.Timestamp)
	return append(b, p.DNS...)
}

// Msg parses the DNS part of the packet into a new message. Its error wraps
// ErrBadDNS.
func (p *SignedPacket) Msg() (*dns.Msg, error) {
	m := new(dns.Msg)
	if err := m.Unpack(p.DNS); err != nil {
		return nil, newError(ErrBadDNS, err,
			"signed packet: dns part of key %s (%d bytes) is not a DNS message: %v",
			p.Name(), len(p.DNS), err)
	}
	return m, nil
}

// Name returns the public name of the packet's key: the z-base-32 encoding
// of its 32 bytes, 52 lower-case characters.
func (p *SignedPacket) Name() string {
	return EncodeZBase32(p.PublicKey)
}
