package vault

import (
	"crypto/pbkdf2"
	"crypto/sha512"
	"errors"
	"fmt"
	"strings"

	"github.com/tyler-smith/go-bip39"
	"golang.org/x/text/unicode/norm"
)

// Mnemonic is a validated BIP39 English phrase: words looked up, checksum
// verified, re-joined with single spaces. It redacts like every secret.
type Mnemonic struct {
	s Secret
}

// ErrInvalidMnemonic is returned (wrapped) for any phrase that is not a valid
// BIP39 English mnemonic. The message never repeats the words.
var ErrInvalidMnemonic = errors.New("invalid mnemonic")

// validWordCounts are the BIP39 lengths: 128…256 bits of entropy.
var validWordCounts = map[int]bool{12: true, 15: true, 18: true, 21: true, 24: true}

// ParseMnemonic splits phrase on any whitespace, lower-cases and looks up
// each word in the English list, verifies the checksum and returns the
// normalised phrase. Errors say which position failed, never which word.
func ParseMnemonic(phrase string) (Mnemonic, error) {
	words := strings.Fields(norm.NFKD.String(phrase))
	if !validWordCounts[len(words)] {
		return Mnemonic{}, fmt.Errorf("%w: %d words; a mnemonic has 12, 15, 18, 21 or 24 words", ErrInvalidMnemonic, len(words))
	}
	for i, w := range words {
		w = strings.ToLower(w)
		if _, ok := bip39.GetWordIndex(w); !ok {
			return Mnemonic{}, fmt.Errorf("%w: word %d is not in the BIP39 English word list", ErrInvalidMnemonic, i+1)
		}
		words[i] = w
	}
	joined := strings.Join(words, " ")
	// go-bip39 does the bit packing and checksum; we only use it for that and
	// for the word list (the seed derivation below adds the NFKD step it skips).
	if _, err := bip39.EntropyFromMnemonic(joined); err != nil {
		return Mnemonic{}, fmt.Errorf("%w: checksum does not match; check the words and their order", ErrInvalidMnemonic)
	}
	return Mnemonic{s: NewSecret([]byte(joined))}, nil
}

// NewMnemonic returns a fresh 24-word mnemonic from crypto/rand.
func NewMnemonic() (Mnemonic, error) {
	entropy, err := bip39.NewEntropy(256)
	if err != nil {
		return Mnemonic{}, fmt.Errorf("generate entropy: %w", err)
	}
	defer wipe(entropy)
	phrase, err := bip39.NewMnemonic(entropy)
	if err != nil {
		return Mnemonic{}, fmt.Errorf("encode mnemonic: %w", err)
	}
	return Mnemonic{s: NewSecret([]byte(phrase))}, nil
}

// Phrase returns the normalised words. Only `alknet init`/`vault init`
// display it, once.
func (m Mnemonic) Phrase() string { return string(m.s.Bytes()) }

// Seed computes the 64-byte BIP39 seed: PBKDF2-HMAC-SHA512 over the
// NFKD-normalised phrase with salt "mnemonic"+NFKD(passphrase), 2048 rounds.
func (m Mnemonic) Seed(passphrase string) (Secret, error) {
	pw := norm.NFKD.String(m.Phrase())
	salt := "mnemonic" + norm.NFKD.String(passphrase)
	seed, err := pbkdf2.Key(sha512.New, pw, []byte(salt), 2048, 64)
	if err != nil {
		// Only reachable in FIPS-140 only mode, which rejects this salt length.
		return Secret{}, fmt.Errorf("bip39 seed: %w", err)
	}
	s := NewSecret(seed)
	wipe(seed)
	return s, nil
}

// Wipe overwrites the phrase in memory.
func (m Mnemonic) Wipe() { m.s.Wipe() }

// String implements fmt.Stringer.
func (Mnemonic) String() string { return redacted }

// GoString implements fmt.GoStringer (%#v).
func (Mnemonic) GoString() string { return redacted }

// Format implements fmt.Formatter so that every verb redacts.
func (Mnemonic) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON refuses to serialise the mnemonic.
func (Mnemonic) MarshalJSON() ([]byte, error) { return nil, errNoMarshal }
