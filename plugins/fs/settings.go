package fs

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"alknet.dev/alknet/plugins/sdk"
)

// Settings are the keys of [plugins.fs] (README.md lists them).
type Settings struct {
	// Root is the directory the store lives in (default: the plugin's
	// state directory, <data>/fs).
	Root string `json:"root,omitempty"`
	// MaxBlobSize bounds the size of one put (default 64 GiB).
	MaxBlobSize *sdk.ByteSize `json:"max_blob_size,omitempty"`
	// MaxPuts bounds the puts received at once (default 8); one more is
	// refused with UNAVAILABLE.
	MaxPuts *int `json:"max_puts,omitempty"`
	// Lease is how long a blob just put is kept from gc without a tag (a
	// Go duration, default "10m").
	Lease string `json:"lease,omitempty"`
}

// Defaults of the settings.
const (
	DefaultMaxBlobSize = 64 << 30
	DefaultMaxPuts     = 8
	DefaultLease       = 10 * time.Minute

	maxMaxPuts = 1024
	minLease   = time.Second
)

// config is the parsed settings.
type config struct {
	root        string
	maxBlobSize int64
	maxPuts     int
	lease       time.Duration
}

const configSchema = `{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "root": {"type": "string", "description": "absolute directory of the store (default: <data>/fs)"},
    "max_blob_size": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 1}], "default": "64GiB", "description": "largest blob a put may store (\"10GiB\" or a number of bytes)"},
    "max_puts": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 8, "description": "puts received at once; one more is refused with UNAVAILABLE"},
    "lease": {"type": "string", "default": "10m", "description": "how long gc keeps an untagged blob after its put (a Go duration, at least 1s)"}
  }
}`

// parseSettings decodes and checks settings; stateDir is the default root
// ("" when the node gave none).
func parseSettings(raw json.RawMessage, stateDir string) (*config, error) {
	var s Settings
	if err := sdk.DecodeSettings("fs", raw, &s); err != nil {
		return nil, err
	}
	c := &config{root: s.Root, maxBlobSize: DefaultMaxBlobSize, maxPuts: DefaultMaxPuts, lease: DefaultLease}
	if c.root == "" {
		c.root = stateDir
	}
	if c.root != "" {
		if !filepath.IsAbs(c.root) {
			return nil, fmt.Errorf("fs settings: root %q must be an absolute path", c.root)
		}
		c.root = filepath.Clean(c.root)
	}
	if s.MaxBlobSize != nil {
		if *s.MaxBlobSize < 1 {
			return nil, fmt.Errorf("fs settings: max_blob_size %d: want at least 1 byte (e.g. \"10GiB\")", *s.MaxBlobSize)
		}
		c.maxBlobSize = int64(*s.MaxBlobSize)
	}
	if s.MaxPuts != nil {
		if *s.MaxPuts < 1 || *s.MaxPuts > maxMaxPuts {
			return nil, fmt.Errorf("fs settings: max_puts %d: want 1 to %d", *s.MaxPuts, maxMaxPuts)
		}
		c.maxPuts = *s.MaxPuts
	}
	if s.Lease != "" {
		d, err := time.ParseDuration(s.Lease)
		if err != nil {
			return nil, fmt.Errorf("fs settings: lease %q: want a Go duration such as \"10m\" or \"1h30m\"", s.Lease)
		}
		if d < minLease {
			return nil, fmt.Errorf("fs settings: lease %q: want at least %s, or a blob could be collected before its client tags it", s.Lease, minLease)
		}
		c.lease = d
	}
	return c, nil
}
