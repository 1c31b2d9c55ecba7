package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gitConfig points git at a global configuration file holding content and
// nothing else.
func gitConfig(t *testing.T, content string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skipf("git not installed: %v", err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "gitconfig")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CONFIG_GLOBAL", file)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	t.Setenv("GIT_DIR", filepath.Join(dir, "no-repository"))
	t.Setenv("GIT_CONFIG_PARAMETERS", "")
	t.Setenv("GIT_CONFIG_COUNT", "")
	t.Setenv(envDataDir, filepath.Join(dir, "data"))
	t.Setenv(envTrustOnFirstUse, "")
}

func TestSettingsFromGitConfig(t *testing.T) {
	gitConfig(t, "[protocol]\n\tversion = 1\n[alknet]\n\ttrustOnFirstUse\n\ttcp = yes\n\tconnectTimeout = 3s\n\tserverName = node.example\n\tstatelessConnect = false\n")
	s, err := loadSettings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.protocol != 1 || !s.trustOnFirstUse || !s.tcp || s.quic || s.connectTimeout != 3*time.Second ||
		s.serverName != "node.example" || s.statelessOnly || !strings.HasSuffix(s.dataDir, "data") {
		t.Fatalf("settings %+v", s)
	}
	// The environment wins over git's configuration.
	t.Setenv(envTrustOnFirstUse, "0")
	if s, err = loadSettings(context.Background()); err != nil || s.trustOnFirstUse {
		t.Fatalf("%s=0: %+v %v", envTrustOnFirstUse, s, err)
	}
}

func TestSettingsDefaults(t *testing.T) {
	gitConfig(t, "")
	s, err := loadSettings(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.protocol != 2 || s.trustOnFirstUse || s.tcp || s.quic || s.connectTimeout != 15*time.Second || s.statelessOnly {
		t.Fatalf("defaults %+v", s)
	}
}

func TestSettingsRefused(t *testing.T) {
	for _, c := range []struct{ config, want string }{
		{"[alknet]\n\ttrustOnFirstUse = perhaps\n", `git config alknet.trustonfirstuse = "perhaps": not a boolean`},
		{"[alknet]\n\tconnectTimeout = soon\n", `git config alknet.connecttimeout = "soon"`},
		{"[protocol]\n\tversion = 3\n", `git config protocol.version = "3": want 0, 1 or 2`},
		{"[alknet]\n\ttcp = true\n\tquic = true\n", "alknet.tcp and alknet.quic are both true"},
	} {
		t.Run(c.want, func(t *testing.T) {
			gitConfig(t, c.config)
			if _, err := loadSettings(context.Background()); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%q: %v, want %q", c.config, err, c.want)
			}
		})
	}
}
