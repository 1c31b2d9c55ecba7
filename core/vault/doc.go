// Package vault derives every key of a node from one BIP39 mnemonic and
// encrypts stored credentials (docs/spec/vault.md, docs/architecture.md D3, D8).
//
//   - BIP39: English word list and checksum, NFKD, PBKDF2-HMAC-SHA512 seed.
//   - SLIP-0010 ed25519, hardened indices only, strict path grammar.
//   - EncryptedData: AES-256-GCM blobs, key = SLIP-0010 key at the version path.
//   - At rest: <data>/vault.json (plain or Argon2id-sealed, mode 0600) and
//     <data>/credentials.json (EncryptedData only, atomic writes).
//
// Every secret is held in a type that prints [REDACTED] and refuses to be
// marshalled. The vault is a library of the core process; plugins never see
// it, only capabilities resolved from it.
package vault
