package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// httpNode is a node serving the HTTP plugin (with echo beside it) in the
// default raw-key mode: clients pin its key.
type httpNode struct {
	t    *testing.T
	node *cli
	srv  *server
	// base is https://127.0.0.1:PORT.
	base string
	// pin is curl's --pinnedpubkey value: sha256//<base64 of the SPKI hash>.
	pin string
	// client speaks HTTP/2 to the node, pinned to its key.
	client *http.Client
}

// startHTTPNode starts a node; config is its alknet.toml (settings of
// [plugins.http] go under that table), serveArgs are added to
// `alknet serve`.
func startHTTPNode(t *testing.T, config string, serveArgs ...string) *httpNode {
	t.Helper()
	for _, p := range []string{"alknet-plugin-http", "alknet-plugin-echo"} {
		if _, err := os.Stat(filepath.Join(binDir, p)); err != nil {
			t.Fatalf("%s was not built: %v", p, err)
		}
	}
	n := &httpNode{t: t, node: newCLI(t, nil)}
	n.node.ok("", "init", "--show-mnemonic-once")
	path := writeFile(t, filepath.Join(t.TempDir(), "alknet.toml"), config+"\n", 0o600)
	n.srv = startServe(t, n.node, append([]string{"--config", path}, serveArgs...)...)
	n.base = "https://" + n.srv.Addr
	key, err := hex.DecodeString(strings.TrimPrefix(n.srv.FP, "ed25519:"))
	if err != nil || len(key) != 32 {
		t.Fatalf("node fingerprint %q is not an ed25519 key", n.srv.FP)
	}
	// The SubjectPublicKeyInfo of an Ed25519 key is a fixed 12-byte prefix
	// and the key (RFC 8410).
	spki := append([]byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}, key...)
	sum := sha256.Sum256(spki)
	n.pin = "sha256//" + base64.StdEncoding.EncodeToString(sum[:])
	if got := strings.TrimSpace(n.node.ok("", "id", "--pin")); got != n.pin {
		t.Fatalf("alknet id --pin = %q, want %q", got, n.pin)
	}
	n.client = pinnedClient(spki)
	n.waitReady()
	return n
}

// pinnedClient is an HTTP/2 client that trusts exactly the node whose
// SubjectPublicKeyInfo is spki.
func pinnedClient(spki []byte) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // verified below: the key is pinned
			VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
				c, err := x509.ParseCertificate(raw[0])
				if err != nil {
					return err
				}
				if !bytes.Equal(c.RawSubjectPublicKeyInfo, spki) {
					return fmt.Errorf("the node presented another key")
				}
				return nil
			},
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 64,
	}
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

// waitReady polls /healthz until the plugin answers.
func (n *httpNode) waitReady() {
	n.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := n.client.Get(n.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("the http plugin never answered /healthz: %v\n%s", err, n.srv.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// token creates an API key with scopes on the node.
func (n *httpNode) token(scopes ...string) string {
	n.t.Helper()
	args := []string{"apikey", "create"}
	for _, s := range scopes {
		args = append(args, "--scope", s)
	}
	return strings.TrimSpace(n.node.ok("", args...))
}

// do sends a request with an optional bearer token and returns the
// response and its body.
func (n *httpNode) do(method, path, token string, body io.Reader) (*http.Response, []byte) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, n.base+path, body)
	if err != nil {
		n.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.client.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatalf("%s %s: read the body: %v", method, path, err)
	}
	return resp, b
}

// curl runs the stock curl against the node, pinned to its key, and
// returns stdout, stderr and the exit code.
func (n *httpNode) curl(args ...string) (string, string, int) {
	n.t.Helper()
	full := append([]string{"-sS", "-k", "--pinnedpubkey", n.pin, "--max-time", "60"}, args...)
	cmd := exec.Command("curl", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("curl: %v", err)
	}
	return stdout.String(), stderr.String(), code
}

// A key is in force when `alknet apikey create` returns: the command waits
// for the running node to apply the change it signalled, so a request made
// with the new token at once, on a connection already open, is served.
func TestAPIKeyInForceWhenCreateReturns(t *testing.T) {
	n := startHTTPNode(t, gatewayConfig)
	for i := range 5 {
		tok := n.token("admin")
		if resp, b := n.do("POST", "/call", tok, strings.NewReader(`{"operation":"http/stats"}`)); resp.StatusCode != 200 {
			t.Fatalf("key %d, used as `alknet apikey create` returned: %d %s", i, resp.StatusCode, b)
		}
	}
	r := n.node.run("", "apikey", "create", "--scope", "call:invoke")
	if r.code != 0 || !strings.Contains(r.stderr, fmt.Sprintf("asked the running node (pid %d) to reload: applied", n.srv.cmd.Process.Pid)) {
		t.Errorf("apikey create: exit %d, stderr %q", r.code, r.stderr)
	}
}
