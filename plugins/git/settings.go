package git

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// Settings are the keys of [plugins.git] (README.md lists them).
type Settings struct {
	// Root holds the bare repositories, <root>/<name>.git (default: the
	// plugin's state directory, <data>/git).
	Root string `json:"root,omitempty"`
	// Repos are per-repository settings: public reading and push rules.
	Repos []RepoSettings `json:"repos,omitempty"`
	// MaxConcurrent bounds the git programs (upload-pack, receive-pack,
	// upload-archive) running at once in the plugin (default 16).
	MaxConcurrent int `json:"max_concurrent,omitempty"`
	// MaxPerIdentity bounds those of one identity (anonymous callers: of
	// one remote address) (default 4).
	MaxPerIdentity int `json:"max_per_identity,omitempty"`
	// MaxPushSize bounds the pack one push sends (default "1GiB").
	MaxPushSize *sdk.ByteSize `json:"max_push_size,omitempty"`
	// RequestTimeout bounds one request from its first byte to the end of
	// its git program (a Go duration, default "30m").
	RequestTimeout string `json:"request_timeout,omitempty"`
}

// RepoSettings are one [[plugins.git.repos]] entry.
type RepoSettings struct {
	// Name is the repository ("team/app"; a ".git" suffix is dropped).
	Name string `json:"name"`
	// Public repositories are readable by anyone, anonymous callers
	// included (fetch, clone, archive, git/refs, git/list).
	Public bool `json:"public,omitempty"`
	// FastForwardOnly refuses non-fast-forward updates of every branch.
	FastForwardOnly bool `json:"fast_forward_only,omitempty"`
	// Protected are branch name patterns (path.Match: "main",
	// "release/*"): no force push, no deletion.
	Protected []string `json:"protected,omitempty"`
	// DenyTagOverwrite refuses moving an existing tag.
	DenyTagOverwrite bool `json:"deny_tag_overwrite,omitempty"`
	// DenyDelete refuses deleting any branch or tag.
	DenyDelete bool `json:"deny_delete,omitempty"`
}

// Defaults of the bounds (docs/architecture.md D14).
const (
	defaultMaxConcurrent  = 16
	defaultMaxPerIdentity = 4
	defaultMaxPushSize    = 1 << 30
	defaultRequestTimeout = 30 * time.Minute
	// headerTimeout bounds the wait for a stream's request line.
	headerTimeout = 30 * time.Second
)

// config is the parsed settings.
type config struct {
	root           string
	repos          map[string]*RepoSettings
	maxConcurrent  int
	maxPerIdentity int
	maxPushSize    int64
	requestTimeout time.Duration

	// Set by Configure.
	git       string // the git executable
	home      string // HOME of git's programs: the plugin's state directory
	rulesFile string // the push rules the hooks read
	hookExe   string // the program the hooks run
}

// rules returns the settings of repository name (nil: none).
func (c *config) rules(name string) *RepoSettings { return c.repos[name] }

func (c *config) public(name string) bool {
	r := c.repos[name]
	return r != nil && r.Public
}

// parseSettings decodes and checks settings; stateDir is the default root.
func parseSettings(raw json.RawMessage, stateDir string) (*config, error) {
	var s Settings
	if err := sdk.DecodeSettings("git", raw, &s); err != nil {
		return nil, err
	}
	c := &config{root: s.Root, repos: map[string]*RepoSettings{}, maxConcurrent: s.MaxConcurrent, maxPerIdentity: s.MaxPerIdentity,
		maxPushSize: defaultMaxPushSize, requestTimeout: defaultRequestTimeout}
	if c.root == "" {
		c.root = stateDir
	}
	if c.root != "" {
		if !filepath.IsAbs(c.root) {
			return nil, fmt.Errorf("git settings: root %q must be an absolute path", c.root)
		}
		c.root = filepath.Clean(c.root)
	}
	switch {
	case c.maxConcurrent < 0:
		return nil, errors.New("git settings: max_concurrent must be 1 or more")
	case c.maxConcurrent == 0:
		c.maxConcurrent = defaultMaxConcurrent
	}
	switch {
	case c.maxPerIdentity < 0:
		return nil, errors.New("git settings: max_per_identity must be 1 or more")
	case c.maxPerIdentity == 0:
		c.maxPerIdentity = defaultMaxPerIdentity
	}
	if s.MaxPushSize != nil {
		if *s.MaxPushSize <= 0 {
			return nil, errors.New("git settings: max_push_size must be more than 0 (e.g. \"1GiB\")")
		}
		c.maxPushSize = int64(*s.MaxPushSize)
	}
	if s.RequestTimeout != "" {
		d, err := time.ParseDuration(s.RequestTimeout)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("git settings: request_timeout: %q is not a positive duration (e.g. \"30m\")", s.RequestTimeout)
		}
		c.requestTimeout = d
	}
	for i := range s.Repos {
		r := s.Repos[i]
		name, err := repoName(r.Name)
		if err != nil {
			return nil, fmt.Errorf("git settings: repos[%d]: %v", i, err)
		}
		if _, dup := c.repos[name]; dup {
			return nil, fmt.Errorf("git settings: repos lists %q twice", name)
		}
		for _, pat := range r.Protected {
			if pat == "" || strings.HasPrefix(pat, "refs/") {
				return nil, fmt.Errorf("git settings: repos %q: protected pattern %q: give branch names or patterns (\"main\", \"release/*\"), without refs/heads/", name, pat)
			}
			if _, err := path.Match(pat, ""); err != nil {
				return nil, fmt.Errorf("git settings: repos %q: protected pattern %q: %v", name, pat, err)
			}
		}
		r.Name = name
		c.repos[name] = &r
	}
	return c, nil
}

const configSchema = `{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "root": {"type": "string", "description": "absolute directory holding the bare repositories, <root>/<name>.git (default: <data>/git)"},
    "repos": {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": false,
      "properties": {
        "name": {"type": "string", "description": "repository name, e.g. team/app"},
        "public": {"type": "boolean", "description": "readable by anyone, anonymous callers included"},
        "fast_forward_only": {"type": "boolean", "description": "refuse non-fast-forward updates of every branch"},
        "protected": {"type": "array", "items": {"type": "string"}, "description": "branch patterns (main, release/*): no force push, no deletion"},
        "deny_tag_overwrite": {"type": "boolean", "description": "refuse moving an existing tag"},
        "deny_delete": {"type": "boolean", "description": "refuse deleting any branch or tag"}}}},
    "max_concurrent": {"type": "integer", "minimum": 1, "default": 16, "description": "git programs running at once in the plugin"},
    "max_per_identity": {"type": "integer", "minimum": 1, "default": 4, "description": "git programs running at once for one identity (anonymous: one remote address)"},
    "max_push_size": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 1}], "default": "1GiB", "description": "largest pack one push may send"},
    "request_timeout": {"type": "string", "default": "30m", "description": "longest time one request may take"}
  }
}`
