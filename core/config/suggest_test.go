package config

import (
	"strings"
	"testing"
)

// An unknown key is named with the setting the user most likely meant:
// a typo, or a key written outside its table.
func TestUnknownKeySuggestsNearest(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"listn = \"127.0.0.1:1\"\n", "listn: unknown setting (did you mean listen?)"},
		{"[limits]\nmax_conections = 3\n", "limits.max_conections: unknown setting (did you mean limits.max_connections?)"},
		{"max_connections_per_ip = 3\n", "max_connections_per_ip: unknown setting (did you mean limits.max_connections_per_ip?)"},
		{"[tls]\nmdoe = \"x509\"\n", "tls.mdoe: unknown setting (did you mean tls.mode?)"},
		{"frobnicate = 3\n", "frobnicate: unknown setting; every setting"},
		{"[plugins]\nrequire_signatur = true\n", "plugins.require_signatur: unknown setting (did you mean plugins.require_signature?)"},
	} {
		_, err := Parse([]byte(tc.file), "toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.file, err, tc.want)
		}
	}
}

func TestDocsNameEnvironmentVariables(t *testing.T) {
	env := map[string]string{}
	for _, d := range Docs() {
		env[d.Key] = d.Env
	}
	for key, want := range map[string]string{
		"listen":                        "ALKNET_LISTEN",
		"limits.max_connections_per_ip": "ALKNET_LIMITS_MAX_CONNECTIONS_PER_IP",
		"auth.peers":                    "", // a list of tables: the file only
		"plugins.<name>.version":        "",
	} {
		if env[key] != want {
			t.Errorf("%s: env %q, want %q", key, env[key], want)
		}
	}
}
