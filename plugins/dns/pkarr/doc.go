// Package pkarr implements pkarr-compatible self-certifying DNS record sets,
// called signed packets: a set of DNS records that anyone can verify against
// the Ed25519 public key that names them, without trusting whoever served it.
// The DNS plugin serves them as described in docs/spec/handlers.md (section
// "DNS"), where they are published with dns/publish and replicated to peers.
//
// # Format
//
// The package follows pkarr's published layout. A signed packet is the byte
// string
//
//	public key    32 bytes   Ed25519 public key
//	signature     64 bytes   Ed25519 signature over the signable bytes (below)
//	timestamp      8 bytes   big-endian, microseconds since the Unix epoch
//	dns        ≤ 1000 bytes   a DNS message in wire format (RFC 1035)
//
// so the fixed header is [HeaderSize] (104) bytes and the whole packet at most
// 1104 bytes. The 1000-byte limit on the DNS part is the limit on a mutable
// value in the BitTorrent mainline DHT (BEP 44), where pkarr stores packets.
//
// The signature covers the bencoded "seq" and "v" entries of a BEP 44 mutable
// item without salt, the timestamp being the sequence number and the DNS
// message the value:
//
//	3:seqi<timestamp in decimal>e1:v<length of dns in decimal>:<dns>
//
// see [Signable]. A packet is accepted by [Parse] only if its length is in
// range, the signature verifies for the public key it carries, and the DNS
// part parses as a DNS message.
//
// # Names
//
// The public name of a key is the z-base-32 encoding of its 32 bytes: 52
// characters of the alphabet "ybndrfg8ejkmcpqxot1uwisza345h769", five bits
// per character taken most-significant bit first, without padding (see
// [EncodeZBase32] and [DecodeZBase32]). The records of a packet are stored in
// its answer section with owner names relative to that name: the apex is
// "<z32>" and a record "_foo" is stored as "_foo.<z32>", with no top-level
// domain after the key. [SignedPacket.Records] places them under a zone of
// the server, as "<z32>.<zone>" and "_foo.<z32>.<zone>".
package pkarr
