package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fail2banRegex runs fail2ban-regex on a log file with the shipped filter
// and returns the lines it matched and missed.
func fail2banRegex(t *testing.T, logFile string) (matched, missed []string) {
	t.Helper()
	if _, err := exec.LookPath("fail2ban-regex"); err != nil {
		t.Fatalf("fail2ban-regex not installed (.ci/run installs the fail2ban package): %v", err)
	}
	filter, err := filepath.Abs("../scripts/fail2ban/alknet.conf")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("fail2ban-regex", "--print-all-matched", "--print-all-missed", logFile, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, out)
	}
	var section *[]string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "|- Matched line(s):"):
			section = &matched
		case strings.HasPrefix(line, "|- Missed line(s):"):
			section = &missed
		case strings.HasPrefix(line, "`-"):
			section = nil
		case section != nil && strings.HasPrefix(line, "|  "):
			*section = append(*section, strings.TrimPrefix(line, "|  "))
		}
	}
	return matched, missed
}

var authLine = regexp.MustCompile(`auth attempt: .*`)

// The shipped fail2ban filter matches every refused SSH key and token, with the address it came from, and none of the
// accepted or anonymous attempts; plugin lines keep one field order and
// carry no second timestamp.
func TestFail2banFilter(t *testing.T) {
	e := startSSH(t, "")
	// SSH: accepted, an unknown key (real ssh), a password guess.
	if out, errs, code := e.ssh(true, "echo", "ok"); code != 0 || out != "ok\n" {
		t.Fatalf("ssh: exit %d %q %s", code, out, errs)
	}
	stranger, _ := writeKey(t, t.TempDir(), "stranger")
	for _, via := range []bool{true, false} {
		args := e.sshArgs(via)
		for i, a := range args {
			if a == e.keyFile {
				args[i] = stranger
			}
		}
		if !via {
			h, p, _ := strings.Cut(e.plainAddr, ":")
			args = append(args, "-p", p, "ops@"+h, "true")
		} else {
			args = append(args, "ops@node", "true")
		}
		if out, err := exec.Command("ssh", args...).CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
			t.Fatalf("unknown key: %v %s", err, out)
		}
	}
	// Tokens: accepted and refused.
	token := strings.TrimSpace(e.node.ok("", "apikey", "create", "--scope", "call:invoke"))
	e.srv.waitLog("configuration reloaded")
	good := writeFile(t, filepath.Join(t.TempDir(), "tok"), token+"\n", 0o600)
	e.client.ok("", "call", "--peer", e.srv.FP, "--token-file", good, e.srv.Addr, "/node/info")
	bad := writeFile(t, filepath.Join(t.TempDir(), "bad"), token[:len(token)-4]+"abcd\n", 0o600)
	if r := e.client.run("", "call", "--peer", e.srv.FP, "--token-file", bad, e.srv.Addr, "/node/info"); r.code == 0 || !strings.Contains(r.stderr, "token not accepted") {
		t.Fatalf("a wrong token: exit %d %s", r.code, r.stderr)
	}
	// Anonymous: without a certificate (no line), and with one no peer
	// entry names (result=anonymous, not a failure).
	e.client.ok("", "call", "--peer", e.srv.FP, e.srv.Addr, "/node/info")
	withCert := newCLI(t, nil)
	withCert.ok("", "init", "--show-mnemonic-once")
	withCert.ok("", "call", "--peer", e.srv.FP, e.srv.Addr, "/node/info")
	e.srv.waitLog("method=tls", "result=anonymous", "method=token")

	logFile := filepath.Join(t.TempDir(), "alknet.log")
	if err := os.WriteFile(logFile, []byte(e.srv.logs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	matched, missed := fail2banRegex(t, logFile)
	isMatched := map[string]bool{}
	for _, l := range matched {
		isMatched[strings.TrimSpace(l)] = true
	}
	kinds := map[string]int{}
	for _, l := range strings.Split(e.srv.logs.String(), "\n") {
		l = strings.TrimSpace(l)
		a := authLine.FindString(l)
		if a == "" {
			continue
		}
		if strings.Contains(l, "timestamp=") {
			t.Errorf("a relayed line carries a second timestamp: %s", l)
		}
		reject := strings.Contains(a, "result=reject")
		if reject != isMatched[l] {
			t.Errorf("fail2ban matched=%v for: %s", isMatched[l], l)
		}
		for _, k := range []string{"method=ssh", "method=token", "method=tls"} {
			if strings.Contains(a, k) {
				kinds[k+" "+regexp.MustCompile(`result=\w+`).FindString(a)]++
			}
		}
	}
	for _, want := range []string{"method=ssh result=reject", "method=ssh result=accept", "method=token result=reject",
		"method=token result=accept", "method=tls result=anonymous"} {
		if kinds[want] == 0 {
			t.Errorf("no %q line in the node's log:\n%s", want, e.srv.logs)
		}
	}
	if kinds["method=ssh result=reject"] < 2 {
		t.Errorf("%d refused SSH keys logged; want 2 (through pipe and plain TCP)", kinds["method=ssh result=reject"])
	}
	for _, l := range matched {
		if !strings.Contains(l, "result=reject") {
			t.Errorf("fail2ban matched a line that is no failure: %s", l)
		}
	}
	if len(missed) == 0 {
		t.Error("fail2ban-regex reported no missed lines; the test's parsing of its output is wrong")
	}

	// Plugin lines list their fields in one order: the relay keeps the
	// order the plugin wrote.
	order := map[string]string{}
	keys := regexp.MustCompile(`(\w+)=`)
	for _, l := range strings.Split(e.srv.logs.String(), "\n") {
		if !strings.Contains(l, "plugin.ssh: auth attempt:") {
			continue
		}
		var ks []string
		for _, m := range keys.FindAllStringSubmatch(authLine.FindString(l), -1) {
			ks = append(ks, m[1])
		}
		seq := strings.Join(ks, " ")
		sig := strings.Contains(l, "ssh_method=")
		k := map[bool]string{true: "password", false: "key"}[sig]
		if prev, ok := order[k]; ok && prev != seq {
			t.Errorf("plugin auth lines change field order: %q then %q", prev, seq)
		}
		order[k] = seq
	}
	if len(order) == 0 {
		t.Errorf("no auth line of the ssh plugin in the node's log:\n%s", e.srv.logs)
	}
}
