package vault

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type trezorFile struct {
	Passphrase string `json:"passphrase"`
	English    []struct {
		Entropy, Mnemonic, Seed string
	} `json:"english"`
}

type sharedVectors struct {
	Mnemonic string `json:"mnemonic"`
	Cases    []struct {
		Passphrase string `json:"passphrase"`
		Seed       string `json:"seed"`
		Path       string `json:"path"`
		PrivateKey string `json:"private_key"`
		ChainCode  string `json:"chain_code"`
		PublicKey  string `json:"public_key"`
	} `json:"cases"`
	Encrypted []struct {
		Plaintext string        `json:"plaintext"`
		Blob      EncryptedData `json:"blob"`
	} `json:"encrypted"`
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func vectorVault(t *testing.T) (*Vault, sharedVectors) {
	t.Helper()
	var sv sharedVectors
	readJSON(t, "vault_vectors.json", &sv)
	m, err := ParseMnemonic(sv.Mnemonic)
	if err != nil {
		t.Fatal(err)
	}
	v := New()
	if err := v.Unlock(m, ""); err != nil {
		t.Fatal(err)
	}
	return v, sv
}

func TestBIP39OfficialVectors(t *testing.T) {
	var tv trezorFile
	readJSON(t, "bip39_trezor.json", &tv)
	if len(tv.English) < 24 {
		t.Fatalf("want the 24 English vectors, have %d", len(tv.English))
	}
	for i, c := range tv.English {
		m, err := ParseMnemonic(c.Mnemonic)
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		seed, err := m.Seed(tv.Passphrase)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(seed.Bytes()); got != c.Seed {
			t.Errorf("vector %d: seed %s, want %s", i, got, c.Seed)
		}
	}
}

func TestMnemonicParsingNormalises(t *testing.T) {
	var tv trezorFile
	readJSON(t, "bip39_trezor.json", &tv)
	c := tv.English[1]
	messy := "  " + strings.ToUpper(strings.ReplaceAll(c.Mnemonic, " ", " \t\n ")) + "\n"
	m, err := ParseMnemonic(messy)
	if err != nil {
		t.Fatal(err)
	}
	if m.Phrase() != c.Mnemonic {
		t.Fatalf("phrase not re-joined: %q", m.Phrase())
	}
	// checksum: swap the last word for another valid word.
	words := strings.Fields(c.Mnemonic)
	words[len(words)-1] = "abandon"
	if _, err := ParseMnemonic(strings.Join(words, " ")); !errors.Is(err, ErrInvalidMnemonic) || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("bad checksum accepted or unclear: %v", err)
	}
	words[3] = "notaword"
	_, err = ParseMnemonic(strings.Join(words, " "))
	if !errors.Is(err, ErrInvalidMnemonic) || strings.Contains(err.Error(), "notaword") || !strings.Contains(err.Error(), "word 4") {
		t.Fatalf("unknown word: %v", err)
	}
	if _, err := ParseMnemonic("abandon abandon"); !errors.Is(err, ErrInvalidMnemonic) {
		t.Fatalf("2 words accepted: %v", err)
	}
}

func TestNewMnemonicIs24Words(t *testing.T) {
	a, err := NewMnemonic()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewMnemonic()
	if n := len(strings.Fields(a.Phrase())); n != 24 {
		t.Fatalf("%d words", n)
	}
	if a.Phrase() == b.Phrase() {
		t.Fatal("two fresh mnemonics are equal")
	}
	if _, err := ParseMnemonic(a.Phrase()); err != nil {
		t.Fatalf("fresh mnemonic does not parse: %v", err)
	}
}

func TestSLIP10Ed25519Vectors(t *testing.T) {
	type step struct{ path, chain, key string }
	vectors := []struct {
		name, seed string
		steps      []step
	}{
		{"TV1", "000102030405060708090a0b0c0d0e0f", []step{
			{"m", "90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb", "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7"},
			{"m/0'", "8b59aa11380b624e81507a27fedda59fea6d0b779a778918a2fd3590e16e9c69", "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3"},
			{"m/0'/1'", "a320425f77d1b5c2505a6b1b27382b37368ee640e3557c315416801243552f14", "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2"},
			{"m/0'/1'/2'", "2e69929e00b5ab250f49c3fb1c12f252de4fed2c1db88387094a0f8c4c9ccd6c", "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9"},
			{"m/0'/1'/2'/2'", "8f6d87f93d750e0efccda017d662a1b31a266e4a6f5993b15f5c1f07f74dd5cc", "30d1dc7e5fc04c31219ab25a27ae00b50f6fd66622f6e9c913253d6511d1e662"},
			{"m/0'/1'/2'/2'/1000000000'", "68789923a0cac2cd5a29172a475fe9e0fb14cd6adb5ad98a3fa70333e7afa230", "8f94d394a8e8fd6b1bc2f3f49f5c47e385281d5c17e65324b0f62483e37e8793"},
		}},
		{"TV2", "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a29f9c999693908d8a8784817e7b7875726f6c696663605d5a5754514e4b484542", []step{
			{"m", "ef70a74db9c3a5af931b5fe73ed8e1a53464133654fd55e7a66f8570b8e33c3b", "171cb88b1b3c1db25add599712e36245d75bc65a1a5c9e18d76f9f2b1eab4012"},
			{"m/0h", "0b78a3226f915c082bf118f83618a618ab6dec793752624cbeb622acb562862d", "1559eb2bbec5790b0c65d8693e4d0875b1747f4970ae8b650486ed7470845635"},
			{"m/0'/2147483647'", "138f0b2551bcafeca6ff2aa88ba8ed0ed8de070841f0c4ef0165df8181eaad7f", "ea4f5bfe8694d8bb74b7b59404632fd5968b774ed545e810de9c32a4fb4192f4"},
			{"m/0'/2147483647'/1'", "73bd9fff1cfbde33a1b846c27085f711c0fe2d66fd32e139d3ebc28e5a4a6b90", "3757c7577170179c7868353ada796c839135b3d30554bbb74a4b1e4a5a58505c"},
			{"m/0'/2147483647'/1'/2147483646'", "0902fe8a29f9140480a00ef244bd183e8a13288e4412d8389d140aac1794825a", "5837736c89570de861ebc173b1086da4f505d4adb387c6a1b1342d5e4ac9ec72"},
			{"m/0'/2147483647'/1'/2147483646'/2'", "5d70af781f3a37b829f0d060924d5e960bdc02e85423494afc0b1a41bbe196d4", "551d333177df541ad876a60ea71f00447931c0a9da16f227c11ea080d7391b8d"},
		}},
	}
	for _, tv := range vectors {
		for _, s := range tv.steps {
			t.Run(tv.name+"/"+s.path, func(t *testing.T) {
				p, err := ParsePath(s.path)
				if err != nil {
					t.Fatal(err)
				}
				x := DeriveSLIP10(unhex(t, tv.seed), p)
				if got := hex.EncodeToString(x.ChainCode.Bytes()); got != s.chain {
					t.Errorf("chain code %s, want %s", got, s.chain)
				}
				if got := hex.EncodeToString(x.Key.Bytes()); got != s.key {
					t.Errorf("key %s, want %s", got, s.key)
				}
			})
		}
	}
	// The public key of the TV1 master (published as 00||pub in SLIP-0010).
	x := DeriveSLIP10(unhex(t, vectors[0].seed), Path{})
	k, _ := PrivateKeyFromSeed(x.Key.Bytes())
	if got := hex.EncodeToString(k.Public()); got != "a4b2856bfec510abab89753fac1ac0e1112364e7d250545963f135f2a33188ed" {
		t.Errorf("TV1 master public key %s", got)
	}
}

func TestSharedVaultVectors(t *testing.T) {
	v, sv := vectorVault(t)
	for _, c := range sv.Cases {
		m, _ := ParseMnemonic(sv.Mnemonic)
		seed, _ := m.Seed(c.Passphrase)
		if got := hex.EncodeToString(seed.Bytes()); got != c.Seed {
			t.Fatalf("seed %s, want %s", got, c.Seed)
		}
		p, err := ParsePath(c.Path)
		if err != nil {
			t.Fatal(err)
		}
		x := DeriveSLIP10(seed.Bytes(), p)
		if got := hex.EncodeToString(x.Key.Bytes()); got != c.PrivateKey {
			t.Errorf("%s: key %s, want %s", c.Path, got, c.PrivateKey)
		}
		if got := hex.EncodeToString(x.ChainCode.Bytes()); got != c.ChainCode {
			t.Errorf("%s: chain code %s, want %s", c.Path, got, c.ChainCode)
		}
		k, err := v.DeriveEd25519(c.Path)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(k.Public()); got != c.PublicKey {
			t.Errorf("%s: public key %s, want %s", c.Path, got, c.PublicKey)
		}
	}
	if len(sv.Encrypted) != 2 {
		t.Fatalf("want 2 encrypted vectors, have %d", len(sv.Encrypted))
	}
	for i, e := range sv.Encrypted {
		pt, err := v.Decrypt(e.Blob)
		if err != nil {
			t.Fatalf("blob %d: %v", i, err)
		}
		if string(pt.Bytes()) != e.Plaintext {
			t.Errorf("blob %d decrypts to the wrong plaintext", i)
		}
		// Fixed IV and salt reproduce the blob exactly.
		iv, _ := base64.StdEncoding.DecodeString(e.Blob.IV)
		salt, _ := base64.StdEncoding.DecodeString(e.Blob.Salt)
		again, err := v.encryptWith([]byte(e.Plaintext), e.Blob.KeyVersion, iv, salt)
		if err != nil || again != e.Blob {
			t.Errorf("blob %d: re-encryption gave %+v (%v)", i, again, err)
		}
	}
}

func TestNonHardenedPathRefused(t *testing.T) {
	v, _ := vectorVault(t)
	_, err := v.DeriveEd25519("m/74'/0'/0/0'")
	if !errors.Is(err, ErrInvalidPath) || !strings.Contains(err.Error(), "m/74'/0'/0/0'") || !strings.Contains(err.Error(), "hardened") {
		t.Fatalf("non-hardened path: %v", err)
	}
}

func TestPathGrammarStrict(t *testing.T) {
	good := map[string]string{"m": "m", "m/0'": "m/0'", "m/0h/1'": "m/0'/1'", "m/2147483647'": "m/2147483647'"}
	for in, want := range good {
		p, err := ParsePath(in)
		if err != nil || p.String() != want {
			t.Errorf("%q: %v %v", in, p, err)
		}
	}
	for _, in := range []string{"", "M", "m/", "/0'", "m//0'", "m/0'/", "n/0'", "m/-1'", "m/+1'", "m/01'", "m/2147483648'",
		"m/4294967296'", "m/0''", "m/0H", "m/ 0'", "m/0' ", "m/0x1'", "m/1e3'", "m/0'/1", "m/’0", "m/0'm", "mm/0'"} {
		if _, err := ParsePath(in); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestDeriveWhileLocked(t *testing.T) {
	v := New()
	if _, err := v.NodeKey(); !errors.Is(err, ErrLocked) {
		t.Fatalf("locked derive: %v", err)
	}
	if _, err := v.Encrypt([]byte("x"), 2); !errors.Is(err, ErrLocked) {
		t.Fatalf("locked encrypt: %v", err)
	}
	v2, sv := vectorVault(t)
	v2.Lock()
	if _, err := v2.Decrypt(sv.Encrypted[0].Blob); !errors.Is(err, ErrLocked) {
		t.Fatalf("locked decrypt: %v", err)
	}
}

func TestLockWipesCache(t *testing.T) {
	v, _ := vectorVault(t)
	if _, err := v.NodeKey(); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeriveEd25519(PathSSHHostKey); err != nil {
		t.Fatal(err)
	}
	if got := v.cachedPaths(); len(got) != 2 || got[0] != "ed25519:"+PathNodeIdentity {
		t.Fatalf("cache: %v", got)
	}
	v.mu.Lock()
	entries := make([]ExtendedKey, 0)
	for _, x := range v.cache {
		entries = append(entries, x)
	}
	seed := v.seed
	v.mu.Unlock()
	v.Lock()
	if len(v.cachedPaths()) != 0 || !v.Locked() {
		t.Fatal("cache not emptied by Lock")
	}
	zero := make([]byte, 32)
	for _, x := range entries {
		if !bytes.Equal(x.Key.Bytes(), zero) || !bytes.Equal(x.ChainCode.Bytes(), zero) {
			t.Fatal("cached key material not wiped")
		}
	}
	if !bytes.Equal(seed.Bytes(), make([]byte, 64)) {
		t.Fatal("seed not wiped")
	}
}

func TestCacheIsBounded(t *testing.T) {
	v, _ := vectorVault(t)
	for i := range cacheLimit + 10 {
		if _, err := v.DeriveEd25519(DevicePath(uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(v.cachedPaths()); n != cacheLimit {
		t.Fatalf("cache holds %d keys, limit %d", n, cacheLimit)
	}
}

func TestEncryptTwiceDiffers(t *testing.T) {
	v, _ := vectorVault(t)
	a, err := v.Encrypt([]byte("same secret"), 2)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := v.Encrypt([]byte("same secret"), 2)
	if a.IV == b.IV || a.Data == b.Data || a.Salt == b.Salt {
		t.Fatalf("encryptions repeat: %+v %+v", a, b)
	}
	for _, e := range []EncryptedData{a, b} {
		pt, err := v.Decrypt(e)
		if err != nil || string(pt.Bytes()) != "same secret" {
			t.Fatalf("round trip: %v", err)
		}
		if salt, _ := base64.StdEncoding.DecodeString(e.Salt); len(salt) != 32 {
			t.Fatalf("salt is %d bytes", len(salt))
		}
	}
}

func TestWrongKeyOrTamperedDataOneError(t *testing.T) {
	v, sv := vectorVault(t)
	blob := sv.Encrypted[0].Blob
	data, _ := base64.StdEncoding.DecodeString(blob.Data)
	data[0] ^= 1
	tampered := blob
	tampered.Data = base64.StdEncoding.EncodeToString(data)
	wrongVersion := blob
	wrongVersion.KeyVersion = 3
	iv, _ := base64.StdEncoding.DecodeString(blob.IV)
	iv[0] ^= 1
	wrongIV := blob
	wrongIV.IV = base64.StdEncoding.EncodeToString(iv)
	shortData := blob
	shortData.Data = "AAAA"
	other := New()
	m, _ := NewMnemonic()
	_ = other.Unlock(m, "")

	var msgs []string
	for name, c := range map[string]struct {
		v *Vault
		e EncryptedData
	}{"tampered": {v, tampered}, "wrong version key": {v, wrongVersion}, "wrong iv": {v, wrongIV}, "short": {v, shortData}, "other vault": {other, blob}} {
		_, err := c.v.Decrypt(c.e)
		if !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: %v", name, err)
			continue
		}
		msgs = append(msgs, err.Error())
	}
	for _, m := range msgs {
		if m != msgs[0] {
			t.Fatalf("decrypt errors differ: %q vs %q", m, msgs[0])
		}
	}
}

func TestKeyVersion0And1Refused(t *testing.T) {
	v, sv := vectorVault(t)
	for _, ver := range []int{0, 1, -1} {
		e := sv.Encrypted[0].Blob
		e.KeyVersion = ver
		if _, err := v.Decrypt(e); !errors.Is(err, ErrInvalidKeyVersion) || !strings.Contains(err.Error(), "invalid key version") {
			t.Errorf("decrypt v%d: %v", ver, err)
		}
		if _, err := v.Encrypt([]byte("x"), ver); !errors.Is(err, ErrInvalidKeyVersion) {
			t.Errorf("encrypt v%d: %v", ver, err)
		}
	}
}

func TestRotate2To3(t *testing.T) {
	v, sv := vectorVault(t)
	old := sv.Encrypted[0]
	rotated, err := v.Rotate(old.Blob, 3)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.KeyVersion != 3 {
		t.Fatalf("rotated to %d", rotated.KeyVersion)
	}
	for _, e := range []EncryptedData{rotated, old.Blob} {
		pt, err := v.Decrypt(e)
		if err != nil || string(pt.Bytes()) != old.Plaintext {
			t.Fatalf("v%d blob: %v", e.KeyVersion, err)
		}
	}
	// The v3 blob is not readable with the v2 key.
	rotated.KeyVersion = 2
	if _, err := v.Decrypt(rotated); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("v3 blob opened as v2: %v", err)
	}
}

// fastKDF keeps sealed-file tests quick; the default cost is tested once.
var fastKDF = KDFParams{Time: 1, MemoryKiB: minKDFMemoryKiB, Threads: 1}

func writeVault(t *testing.T, mode Mode, pass string, kdf KDFParams) (string, string) {
	t.Helper()
	v, _ := vectorVault(t)
	seed, _ := v.Seed()
	path := filepath.Join(t.TempDir(), FileName)
	if err := WriteFile(path, seed, mode, []byte(pass), kdf); err != nil {
		t.Fatal(err)
	}
	k, _ := v.NodeKey()
	return path, "ed25519:" + hex.EncodeToString(k.Public())
}

func TestVaultFileRoundTrip(t *testing.T) {
	for _, mode := range []Mode{ModePlain, ModeSealed} {
		t.Run(string(mode), func(t *testing.T) {
			kdf := fastKDF
			if mode == ModeSealed {
				kdf = DefaultKDF
			}
			path, fp := writeVault(t, mode, "correct horse", kdf)
			st, _ := os.Stat(path)
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("vault file mode %o", st.Mode().Perm())
			}
			raw, _ := os.ReadFile(path)
			f, err := ParseFile(raw)
			if err != nil {
				t.Fatal(err)
			}
			if f.Info().Fingerprint != fp || f.Info().Mode != mode || f.Info().Format != FileFormat {
				t.Fatalf("info %+v", f.Info())
			}
			if mode == ModeSealed {
				if f.Info().KDF.Time != 3 || f.Info().KDF.MemoryKiB != 65536 || f.Info().KDF.Threads != 2 {
					t.Fatalf("kdf %+v", f.Info().KDF)
				}
				var sv sharedVectors
				readJSON(t, "vault_vectors.json", &sv)
				if bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString(unhex(t, sv.Cases[0].Seed)))) {
					t.Fatal("sealed file contains the seed in clear")
				}
			}
			v, info, err := Open(path, []byte("correct horse"))
			if err != nil {
				t.Fatal(err)
			}
			k, _ := v.NodeKey()
			if "ed25519:"+hex.EncodeToString(k.Public()) != info.Fingerprint {
				t.Fatal("opened vault has another node key")
			}
		})
	}
}

func TestVaultFileMode0644Refused(t *testing.T) {
	path, _ := writeVault(t, ModePlain, "", fastKDF)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Open(path, nil)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
		t.Fatalf("0644 vault file: %v", err)
	}
}

func TestPassphraseFileMode0644Refused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(p, []byte("pw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPassphraseFile(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("0644 passphrase file: %v", err)
	}
	_ = os.Chmod(p, 0o600)
	s, err := ReadPassphraseFile(p)
	if err != nil || string(s.Bytes()) != "pw" {
		t.Fatalf("0600 passphrase file: %v", err)
	}
}

func TestWrongPassphraseRefused(t *testing.T) {
	path, _ := writeVault(t, ModeSealed, "right", fastKDF)
	_, _, err := Open(path, []byte("wrong"))
	if !errors.Is(err, ErrUnlock) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	// Editing the stored header (here: the fingerprint) gives the very same
	// error, so an attacker learns nothing about which part failed.
	raw, _ := os.ReadFile(path)
	var j map[string]any
	_ = json.Unmarshal(raw, &j)
	j["fingerprint"] = "ed25519:" + strings.Repeat("ab", 32)
	edited, _ := json.Marshal(j)
	_ = os.WriteFile(path, edited, 0o600)
	_, _, err2 := Open(path, []byte("right"))
	if !errors.Is(err2, ErrUnlock) || err2.Error() != err.Error() {
		t.Fatalf("edited header: %v", err2)
	}
	if _, _, err := Open(path, nil); !errors.Is(err, ErrPassphraseRequired) {
		t.Fatalf("no passphrase: %v", err)
	}
}

func TestSecretsRedacted(t *testing.T) {
	v, sv := vectorVault(t)
	k, _ := v.NodeKey()
	m, _ := ParseMnemonic(sv.Mnemonic)
	seed, _ := v.Seed()
	secret := NewSecret([]byte("sk-proj-abc123xyz789"))
	path, _ := writeVault(t, ModePlain, "", fastKDF)
	f, _ := ReadFile(path)
	values := []any{k, m, seed, secret, &k, &secret, f, struct{ K PrivateKey }{k}}
	needles := []string{"abandon", "sk-proj", hex.EncodeToString(k.Signer().Seed()), hex.EncodeToString(seed.Bytes())[:16]}
	for i, val := range values {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
			out := fmt.Sprintf(verb, val)
			for _, n := range needles {
				if strings.Contains(strings.ToLower(out), strings.ToLower(n)) {
					t.Errorf("value %d with %s leaks: %s", i, verb, out)
				}
			}
		}
		if _, isFile := val.(*File); isFile {
			continue
		}
		if b, err := json.Marshal(val); err == nil {
			t.Errorf("value %d marshals to JSON: %s", i, b)
		}
	}
	// Also the raw byte-slice verbs on a secret inside a struct printed with %+v.
	if out := fmt.Sprintf("%+v", struct{ S Secret }{secret}); strings.Contains(out, "sk-proj") {
		t.Fatal(out)
	}
	secret.Wipe()
	if !bytes.Equal(secret.Bytes(), make([]byte, 20)) {
		t.Fatal("Wipe did not zero the secret")
	}
}
