package integration

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"alknet.dev/alknet/core/identity"
	"alknet.dev/alknet/core/vault"
)

// The shared vault vectors: mnemonic, and the keys it must give.
type vaultVectors struct {
	Mnemonic string `json:"mnemonic"`
	Cases    []struct {
		Seed       string `json:"seed"`
		Path       string `json:"path"`
		PrivateKey string `json:"private_key"`
		PublicKey  string `json:"public_key"`
	} `json:"cases"`
}

func loadVectors(t *testing.T) vaultVectors {
	t.Helper()
	b, err := os.ReadFile("../core/vault/testdata/vault_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vaultVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// numberedWord is one entry of the numbered grid `init` prints the
// recovery words in.
var numberedWord = regexp.MustCompile(`(?m)(?:^| )\s*(\d+)\. ([a-z]+)`)

// printedMnemonic reads the recovery words from init's numbered grid, in
// the order of their numbers; "" unless exactly 1..24 are there.
func printedMnemonic(out string) string {
	words := make([]string, 24)
	for _, m := range numberedWord.FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(m[1])
		if n < 1 || n > 24 || words[n-1] != "" {
			return ""
		}
		words[n-1] = m[2]
	}
	if slices.Contains(words, "") {
		return ""
	}
	return strings.Join(words, " ")
}

var fingerprintRe = regexp.MustCompile(`^ed25519:[0-9a-f]{64}$`)

// TestVaultCLI drives every vault and credential command as a user would,
// then scans everything printed and logged for secrets.
func TestVaultCLI(t *testing.T) {
	tr := &transcript{}
	vec := loadVectors(t)
	secretHex := []string{}
	for _, c := range vec.Cases {
		secretHex = append(secretHex, c.Seed, c.PrivateKey)
	}
	var initMnemonic string
	var initOutput string

	t.Run("InitPrintsMnemonicOnceAndRefusesOverwrite", func(t *testing.T) {
		c := newCLI(t, tr)
		if r := c.run("", "init"); r.code != 1 || !strings.Contains(r.stderr, "--show-mnemonic-once") {
			t.Fatalf("init without a terminal must ask for --show-mnemonic-once: %+v", r)
		}
		initOutput = c.ok("", "init", "--show-mnemonic-once")
		initMnemonic = printedMnemonic(initOutput)
		if initMnemonic == "" {
			t.Fatalf("no 24 numbered words in init output:\n%s", initOutput)
		}
		if _, err := vault.ParseMnemonic(initMnemonic); err != nil {
			t.Fatalf("printed mnemonic is invalid: %v", err)
		}
		before, _ := os.ReadFile(filepath.Join(c.dataDir, "vault.json"))
		msg := c.fail("", "init", "--show-mnemonic-once")
		if !strings.Contains(msg, "refusing to overwrite") || !strings.Contains(msg, "vault.json") {
			t.Fatalf("second init: %s", msg)
		}
		after, _ := os.ReadFile(filepath.Join(c.dataDir, "vault.json"))
		if string(before) != string(after) {
			t.Fatal("second init changed the vault file")
		}
		if st, _ := os.Stat(c.dataDir); st.Mode().Perm() != 0o700 {
			t.Fatalf("data dir mode %o", st.Mode().Perm())
		}
		if st, _ := os.Stat(filepath.Join(c.dataDir, "vault.json")); st.Mode().Perm() != 0o600 {
			t.Fatalf("vault mode %o", st.Mode().Perm())
		}
		// The mnemonic is not in the vault file, and recovering from it gives the same node.
		if strings.Contains(string(after), strings.Fields(initMnemonic)[0]+" ") {
			t.Fatal("vault file holds the mnemonic")
		}
		id := strings.TrimSpace(c.ok("", "id"))
		c2 := newCLI(t, tr)
		c2.ok(initMnemonic+"\n", "vault", "recover")
		if id2 := strings.TrimSpace(c2.ok("", "id")); id2 != id {
			t.Fatalf("recovered node %s, initialised %s", id2, id)
		}
		if !strings.Contains(initOutput, "Fingerprint:  "+id) || !strings.Contains(initOutput, id+"@") {
			t.Fatalf("init output lacks the fingerprint/dial string:\n%s", initOutput)
		}
	})

	t.Run("DeriveVectorPublicKeyAfterRecover", func(t *testing.T) {
		c := newCLI(t, tr)
		c.ok(vec.Mnemonic+"\n", "vault", "recover")
		for _, vc := range vec.Cases {
			if vc.Path == "m" {
				continue
			}
			got := strings.TrimSpace(c.ok("", "vault", "derive", vc.Path, "--public"))
			if got != vc.PublicKey {
				t.Errorf("derive %s --public = %s, want %s", vc.Path, got, vc.PublicKey)
			}
		}
		msg := c.fail("", "vault", "derive", "m/74'/0'/0'/0", "--public")
		if !strings.Contains(msg, "m/74'/0'/0'/0") || !strings.Contains(msg, "not hardened") {
			t.Fatalf("non-hardened path: %s", msg)
		}
	})

	t.Run("IdFingerprintMatchesDeterministicCertificate", func(t *testing.T) {
		c := newCLI(t, tr)
		c.ok(vec.Mnemonic+"\n", "vault", "recover")
		id := strings.TrimSpace(c.ok("", "id"))
		if !fingerprintRe.MatchString(id) {
			t.Fatalf("alknet id printed %q", id)
		}
		pem1 := c.ok("", "id", "--cert")
		pem2 := c.ok("", "id", "--cert") // a second process
		if pem1 != pem2 {
			t.Fatal("certificate DER differs between two processes")
		}
		block, _ := pem.Decode([]byte(pem1))
		if block == nil {
			t.Fatalf("no PEM: %s", pem1)
		}
		if fp := identity.CertFingerprint(block.Bytes); fp != id {
			t.Fatalf("certificate fingerprint %s, alknet id %s", fp, id)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.NotAfter.Year() != 9999 {
			t.Fatalf("validity %v", cert.NotAfter)
		}
		if id != "ed25519:"+vec.Cases[1].PublicKey {
			t.Fatalf("node fingerprint %s is not the vector's node key", id)
		}
	})

	t.Run("SealedVault", func(t *testing.T) {
		c := newCLI(t, tr)
		c.ok(vec.Mnemonic+"\n", "vault", "recover")
		dir := t.TempDir()
		pass := writeFile(t, filepath.Join(dir, "pass"), "correct horse battery\n", 0o600)
		c.ok("", "--vault-passphrase-file", pass, "vault", "seal")
		raw, _ := os.ReadFile(filepath.Join(c.dataDir, "vault.json"))
		if !strings.Contains(string(raw), `"mode": "sealed"`) || strings.Contains(string(raw), `"seed"`) {
			t.Fatalf("vault not sealed:\n%s", raw)
		}
		// id works while sealed, without a passphrase.
		if id := strings.TrimSpace(c.ok("", "id")); id != "ed25519:"+vec.Cases[1].PublicKey {
			t.Fatalf("id while sealed: %s", id)
		}
		got := strings.TrimSpace(c.ok("", "--vault-passphrase-file", pass, "vault", "derive", "m/74'/0'/1'/0'"))
		if got != vec.Cases[2].PublicKey {
			t.Fatalf("derive through sealed vault: %s", got)
		}
		wrong := writeFile(t, filepath.Join(dir, "wrong"), "wrong horse\n", 0o600)
		msg1 := c.fail("", "--vault-passphrase-file", wrong, "vault", "derive", "m/74'/0'/1'/0'")
		if msg1 != "alknet: unlock vault: wrong passphrase or damaged vault file" {
			t.Fatalf("wrong passphrase: %q", msg1)
		}
		// No terminal and no file: a clear instruction, not a hang.
		if msg := c.fail("", "vault", "derive", "m/0'"); !strings.Contains(msg, "--vault-passphrase-file") {
			t.Fatalf("no passphrase source: %s", msg)
		}
		loose := writeFile(t, filepath.Join(dir, "loose"), "correct horse battery\n", 0o644)
		if msg := c.fail("", "--vault-passphrase-file", loose, "vault", "derive", "m/0'"); !strings.Contains(msg, "chmod 600 "+loose) {
			t.Fatalf("0644 passphrase file: %s", msg)
		}
		vf := filepath.Join(c.dataDir, "vault.json")
		if err := os.Chmod(vf, 0o644); err != nil {
			t.Fatal(err)
		}
		if msg := c.fail("", "id"); !strings.Contains(msg, "chmod 600 "+vf) {
			t.Fatalf("0644 vault file: %s", msg)
		}
		_ = os.Chmod(vf, 0o600)
		st := c.ok("", "vault", "status")
		if !strings.Contains(st, "mode:         sealed") || !strings.Contains(st, "argon2id t=3 m=65536 KiB p=2") {
			t.Fatalf("status:\n%s", st)
		}
		c.ok("", "--vault-passphrase-file", pass, "vault", "unseal")
		if st := c.ok("", "vault", "status", "--json"); !strings.Contains(st, `"mode": "plain"`) {
			t.Fatalf("status after unseal:\n%s", st)
		}
	})

	t.Run("CredentialsAndRotate", func(t *testing.T) {
		c := newCLI(t, tr)
		c.ok(vec.Mnemonic+"\n", "vault", "recover")
		c.ok("sk-proj-abc123xyz789\n", "credential", "set", "openai")
		c.ok("tok-dns-5150", "credential", "set", "dns.token")
		if msg := c.fail("", "credential", "set", "empty"); !strings.Contains(msg, "empty value") {
			t.Fatalf("empty credential: %s", msg)
		}
		list := c.ok("", "credential", "list")
		if !strings.Contains(list, "openai") || !strings.Contains(list, "dns.token") || strings.Contains(list, "sk-proj") {
			t.Fatalf("list:\n%s", list)
		}
		credPath := filepath.Join(c.dataDir, "credentials.json")
		before, _ := os.ReadFile(credPath)
		if strings.Contains(string(before), "sk-proj") {
			t.Fatal("credentials.json holds plaintext")
		}
		out := c.ok("", "vault", "rotate", "--to", "3")
		if !strings.Contains(out, "rotated 2 credential(s) to key version 3") {
			t.Fatalf("rotate: %s", out)
		}
		// Open the store as the core would and check both values and versions.
		v, _, err := vault.Open(filepath.Join(c.dataDir, "vault.json"), nil)
		if err != nil {
			t.Fatal(err)
		}
		cs := vault.NewCredentialStore(credPath, v)
		for name, want := range map[string]string{"openai": "sk-proj-abc123xyz789", "dns.token": "tok-dns-5150"} {
			s, err := cs.Get(name)
			if err != nil || string(s.Bytes()) != want {
				t.Fatalf("%s after rotate: %v", name, err)
			}
		}
		if l, _ := cs.List(); l[0].KeyVersion != 3 || l[1].KeyVersion != 3 {
			t.Fatalf("versions after rotate: %+v", l)
		}
		// An old v2 blob kept from before the rotation still opens.
		var old struct {
			Credentials map[string]vault.EncryptedData `json:"credentials"`
		}
		_ = json.Unmarshal(before, &old)
		if s, err := v.Decrypt(old.Credentials["openai"]); err != nil || string(s.Bytes()) != "sk-proj-abc123xyz789" {
			t.Fatalf("v2 blob after rotation: %v", err)
		}
		for _, bad := range []string{"0", "1"} {
			if msg := c.fail("", "vault", "rotate", "--to", bad); !strings.Contains(msg, "invalid key version") {
				t.Fatalf("rotate --to %s: %s", bad, msg)
			}
		}
		c.ok("", "credential", "remove", "openai")
		if msg := c.fail("", "credential", "remove", "openai"); !strings.Contains(msg, "no such credential") {
			t.Fatalf("remove twice: %s", msg)
		}
	})

	t.Run("NoSecretsPrinted", func(t *testing.T) {
		all := tr.String()
		if initMnemonic == "" {
			t.Skip("init subtest did not run")
		}
		// The init mnemonic appears exactly once: in init's own display.
		if n := strings.Count(all, initOutput); n != 1 {
			t.Fatalf("init's display of the mnemonic appears %d times in CLI output", n)
		}
		rest := strings.Replace(all, initOutput, "", 1)
		if strings.Contains(rest, initMnemonic) || printedMnemonic(rest) != "" {
			t.Fatal("the init mnemonic is printed outside init's display")
		}
		scan := func(phrase string) {
			w := strings.Fields(phrase)
			for i := 0; i+1 < len(w); i++ {
				pair := w[i] + " " + w[i+1]
				if strings.Contains(rest, pair) {
					t.Errorf("mnemonic words %q printed", pair)
				}
			}
		}
		scan(initMnemonic)
		scan(vec.Mnemonic)
		lower := strings.ToLower(rest)
		for _, h := range secretHex {
			for i := 0; i+16 <= len(h); i += 8 {
				if strings.Contains(lower, h[i:i+16]) {
					t.Errorf("key material %s… printed", h[:16])
					break
				}
			}
		}
		for _, s := range []string{"sk-proj-abc123xyz789", "tok-dns-5150", "correct horse battery"} {
			if strings.Contains(all, s) {
				t.Errorf("secret %q printed", s)
			}
		}
	})
}
