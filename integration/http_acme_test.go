package integration

import (
	"encoding/pem"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"alknet.dev/alknet/core/identity/acmetest"
)

// TestHTTPGatewayACME: with a certificate from an ACME CA (pebble on
// loopback, validated through TLS-ALPN-01 on the node's own port), the
// stock curl reaches the gateway over HTTP/2 verifying the node by its
// name against the CA's root, with no pin and no -k.
func TestHTTPGatewayACME(t *testing.T) {
	const domain = "www.alknet.test"
	port := freePort(t)
	ca := acmetest.Start(t, domain, port)
	dir := t.TempDir()
	dirCA := writeFile(t, filepath.Join(dir, "directory-ca.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.DirectoryCert.Raw})), 0o600)
	rootPEM := writeFile(t, filepath.Join(dir, "pebble-root.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})), 0o600)

	node := newCLI(t, nil)
	srv := startServe(t, node, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--tls-mode", "acme", "--acme-domain", domain, "--acme-directory", ca.DirectoryURL,
		"--acme-email", "ops@alknet.test", "--acme-ca-file", dirCA)
	srv.waitLog("acme certificate ready: domain=" + domain)
	base := fmt.Sprintf("https://%s:%d", domain, port)
	curl := func(args ...string) (string, int) {
		full := append([]string{"-sS", "--http2", "--cacert", rootPEM, "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", domain, port),
			"-w", "\n%{http_code} %{http_version}", "--max-time", "30"}, args...)
		out, err := exec.Command("curl", full...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("curl: %v", err)
		}
		return string(out), 0
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{base + "/healthz"}, "ok\n\n200 2"},
		{[]string{"-H", "Content-Type: application/json", "--data-binary", `{"operation":"echo/say","input":"acme"}`, base + "/call"}, `"output":"acme"}`},
		{[]string{"--data-binary", `{"operation":"echo/caps"}`, base + "/call"}, "\n401 2"},
		{[]string{"-N", "--data-binary", `{"operation":"echo/ticks","input":{"count":2}}`, base + "/subscribe"}, "data: {\"n\":0}\n\ndata: {\"n\":1}\n\nevent: completed\ndata: {}\n\n\n200 2"},
	} {
		var out string
		// Until the http plugin is up, the node refuses the h2 ALPN.
		waitFor(t, "the http plugin to answer "+tc.args[len(tc.args)-1], func() bool {
			var code int
			out, code = curl(tc.args...)
			return code == 0
		})
		if !strings.Contains(out, tc.want) {
			t.Errorf("curl %v:\n%s\nwant it to contain %q", tc.args, out, tc.want)
		}
	}
	// The pebble root is what makes the node trusted: without it, curl
	// refuses the certificate.
	out, err := exec.Command("curl", "-sS", "--resolve", fmt.Sprintf("%s:%d:127.0.0.1", domain, port), base+"/healthz").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "certificate") {
		t.Errorf("curl without the CA root: %v %s", err, out)
	}
}
