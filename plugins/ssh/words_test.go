package ssh

import (
	"encoding/json"
	"reflect"
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

func rules(t *testing.T, in ...ForwardRule) []forwardRule {
	t.Helper()
	var out []forwardRule
	for _, r := range in {
		fr, err := parseForwardRule(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fr)
	}
	return out
}

func TestForwardTargetPatterns(t *testing.T) {
	var in []ForwardRule
	for _, target := range []string{"127.0.0.1:*", "localhost:8080", "[::1]:22", "db.internal:5432", "*:443"} {
		in = append(in, ForwardRule{Target: target, Action: "allow"})
	}
	rs := rules(t, in...)
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
		{"[::1]", 22, true},
		{"0:0::1", 22, true},
		{"::1", 23, false},
		{"db.internal", 5432, true},
		{"db.internal.evil", 5432, false},
		{"10.0.0.1", 5432, false},
		{"example.org", 443, true},
		{"10.9.8.7", 443, true},
	} {
		for _, dir := range []string{dirLocal, dirRemote} {
			if got := forwardAllowed(rs, dir, tc.host, tc.port); got != tc.want {
				t.Errorf("forwardAllowed(%s, %s:%d) = %v; want %v", dir, tc.host, tc.port, got, tc.want)
			}
		}
	}
	if forwardAllowed(nil, dirLocal, "127.0.0.1", 80) || forwardAllowed(nil, dirRemote, "127.0.0.1", 80) {
		t.Error("no rules allowed something")
	}
}

func TestForwardRulesOrderAndDirection(t *testing.T) {
	rs := rules(t,
		ForwardRule{Target: "127.0.0.1:22", Action: "deny"},
		ForwardRule{Target: "127.0.0.1:*", Action: "allow", Direction: "local"},
		ForwardRule{Target: "*:8080", Action: "allow", Direction: "remote"},
		ForwardRule{Target: "*:*", Action: "deny"},
		ForwardRule{Target: "*:9090", Action: "allow"}, // after a catch-all deny: never reached
	)
	for _, tc := range []struct {
		dir  string
		host string
		port int
		want bool
	}{
		{dirLocal, "127.0.0.1", 22, false},    // first rule wins over the allow after it
		{dirRemote, "127.0.0.1", 22, false},   // a rule without direction applies both ways
		{dirLocal, "127.0.0.1", 5432, true},   // local only
		{dirRemote, "127.0.0.1", 5432, false}, // ... not remote
		{dirRemote, "0.0.0.0", 8080, true},    // remote only
		{dirLocal, "10.0.0.1", 8080, false},   // ... not local
		{dirLocal, "10.0.0.1", 9090, false},   // the catch-all deny came first
	} {
		if got := forwardAllowed(rs, tc.dir, tc.host, tc.port); got != tc.want {
			t.Errorf("forwardAllowed(%s, %s:%d) = %v; want %v", tc.dir, tc.host, tc.port, got, tc.want)
		}
	}
	for _, tc := range []struct {
		rule ForwardRule
		want string
	}{
		{ForwardRule{Target: "127.0.0.1", Action: "allow"}, "host:port"},
		{ForwardRule{Target: "127.0.0.1:0", Action: "allow"}, "port must be"},
		{ForwardRule{Target: "127.0.0.1:70000", Action: "allow"}, "port must be"},
		{ForwardRule{Target: "127.0.0.1:http", Action: "allow"}, "port must be"},
		{ForwardRule{Action: "allow"}, "target is required"},
		{ForwardRule{Target: "127.0.0.1:22"}, "action is required"},
		{ForwardRule{Target: "127.0.0.1:22", Action: "permit"}, `action "permit"`},
		{ForwardRule{Target: "127.0.0.1:22", Action: "allow", Direction: "in"}, `direction "in"`},
	} {
		if _, err := parseForwardRule(tc.rule); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rule %+v: error %v; want one containing %q", tc.rule, err, tc.want)
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

func TestManifestSchemaMatchesSettings(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal([]byte(configSchema), &v); err != nil {
		t.Fatal(err)
	}
	props := v["properties"].(map[string]any)
	var def []string
	for _, c := range props["ciphers"].(map[string]any)["default"].([]any) {
		def = append(def, c.(string))
	}
	if !slices.Equal(def, DefaultCiphers) {
		t.Errorf("schema's ciphers default %v, DefaultCiphers %v", def, DefaultCiphers)
	}
	keys := map[string]bool{}
	st := reflect.TypeFor[Settings]()
	for i := range st.NumField() {
		k, _, _ := strings.Cut(st.Field(i).Tag.Get("json"), ",")
		keys[k] = true
		if _, ok := props[k]; !ok {
			t.Errorf("config schema lacks %s", k)
		}
	}
	for k := range props {
		if !keys[k] {
			t.Errorf("config schema has %s, which Settings does not accept", k)
		}
	}
	for _, k := range []string{"exec_allow", "allow_shell", "shell", "forward_rules"} {
		if !keys[k] {
			t.Errorf("Settings lacks %s", k)
		}
	}
}
