package ssh

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func TestSplitWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "uptime", want: []string{"uptime"}},
		{in: "  echo   a\tb  ", want: []string{"echo", "a", "b"}},
		{in: `echo 'a  b' "c d"`, want: []string{"echo", "a  b", "c d"}},
		{in: `git-upload-pack '/srv/my repo.git'`, want: []string{"git-upload-pack", "/srv/my repo.git"}},
		{in: `echo $HOME * | rm -rf ; x > y`, want: []string{"echo", "$HOME", "*", "|", "rm", "-rf", ";", "x", ">", "y"}},
		{in: `echo "a\"b\\c\$d\x"`, want: []string{"echo", `a"b\c$d\x`}},
		{in: `echo a\ b \'c`, want: []string{"echo", "a b", "'c"}},
		{in: `echo ''`, want: []string{"echo", ""}},
		{in: `echo x''y"z"`, want: []string{"echo", "xyz"}},
		{in: "echo a\\\nb", want: []string{"echo", "ab"}},
		{in: "", want: nil},
		{in: `echo 'open`, err: true},
		{in: `echo "open`, err: true},
		{in: `echo \`, err: true},
	} {
		got, err := splitWords(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("splitWords(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// FuzzSplitWords: the command line comes from the client. Splitting never
// panics, and words without quote or blank characters survive a round
// trip through single quotes.
func FuzzSplitWords(f *testing.F) {
	for _, s := range []string{"echo hi", `a 'b c' "d\"e"`, `\`, `'`, `"\`, "x\\\ny"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := splitWords(s)
		if err != nil {
			return
		}
		var quoted []string
		for _, w := range words {
			if strings.Contains(w, "'") {
				return
			}
			quoted = append(quoted, "'"+w+"'")
		}
		again, err := splitWords(strings.Join(quoted, " "))
		if err != nil || !slices.Equal(again, words) {
			t.Fatalf("round trip of %q: %q then %q, %v", s, words, again, err)
		}
	})
}

func TestAllowedPatterns(t *testing.T) {
	pats, err := parsePatterns("forward_allow", []string{"127.0.0.1:*", "localhost:8080", "[::1]:22", "db.internal:5432"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host string
		port int
		want bool
	}{
		{"127.0.0.1", 1, true},
		{"127.0.0.1", 65535, true},
		{"127.0.0.2", 80, false},
		{"localhost", 8080, true},
		{"LOCALHOST", 8080, true},
		{"localhost", 8081, false},
		{"::1", 22, true},
		{"0:0::1", 22, true},
		{"::1", 23, false},
		{"db.internal", 5432, true},
		{"db.internal.evil", 5432, false},
		{"10.0.0.1", 5432, false},
	} {
		if got := allowed(pats, tc.host, tc.port); got != tc.want {
			t.Errorf("allowed(%s:%d) = %v; want %v", tc.host, tc.port, got, tc.want)
		}
	}
	if allowed(nil, "127.0.0.1", 80) {
		t.Error("an empty allow-list allowed something")
	}
	for _, bad := range []string{"127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:http"} {
		if _, err := parsePatterns("forward_allow", []string{bad}); err == nil || !strings.Contains(err.Error(), "forward_allow") {
			t.Errorf("pattern %q accepted (%v)", bad, err)
		}
	}
}

func TestKeyOptions(t *testing.T) {
	for _, tc := range []struct {
		opts []string
		want keyEntry
		bad  string
	}{
		{nil, keyEntry{}, ""},
		{[]string{"restrict"}, keyEntry{noForward: true, noPTY: true}, ""},
		{[]string{"restrict", "pty"}, keyEntry{noForward: true}, ""},
		{[]string{"no-port-forwarding", "no-agent-forwarding"}, keyEntry{noForward: true}, ""},
		{[]string{`command="/bin/date"`}, keyEntry{}, "command"},
		{[]string{`from="10.0.0.0/8"`}, keyEntry{}, "from"},
		{[]string{"cert-authority"}, keyEntry{}, "cert-authority"},
	} {
		got, bad := keyOptions(tc.opts)
		if bad != tc.bad || (bad == "" && got != tc.want) {
			t.Errorf("keyOptions(%q) = %+v, %q; want %+v, %q", tc.opts, got, bad, tc.want, tc.bad)
		}
	}
}

func TestManifestSchemaIsJSON(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal([]byte(configSchema), &v); err != nil {
		t.Fatal(err)
	}
	props := v["properties"].(map[string]any)
	for _, k := range []string{"host_key_file", "exec", "shell", "forward_allow", "remote_forward_allow", "authorized_keys", "cert_authorities", "max_auth_attempts", "handshake_timeout"} {
		if _, ok := props[k]; !ok {
			t.Errorf("config schema lacks %s", k)
		}
	}
}
