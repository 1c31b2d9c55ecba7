package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

type checked struct{}

func (checked) Info() Info { return Info{Name: "checked", Version: "0.1.0"} }
func (checked) ValidateSettings(raw json.RawMessage) error {
	var s struct {
		Port int `json:"port"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return err
	}
	if s.Port > 65535 {
		return errors.New("port: 70000 is not a port")
	}
	return nil
}

type unchecked struct{}

func (unchecked) Info() Info { return Info{Name: "unchecked", Version: "0.1.0"} }

// `validate` exits 0 for settings the plugin accepts, 1 with its reason
// on stderr for settings it refuses, and says "unchecked" for a plugin
// without a check.
func TestValidateSubcommand(t *testing.T) {
	for _, c := range []struct {
		p        Plugin
		in       string
		code     int
		out, err string
	}{
		{checked{}, `{"port": 22}`, 0, "ok", ""},
		{checked{}, ``, 0, "ok", ""},
		{checked{}, `{"port": 70000}`, 1, "", "port: 70000 is not a port"},
		{checked{}, `{"port": `, 1, "", "not JSON"},
		{unchecked{}, `{"anything": 1}`, 0, "unchecked", ""},
	} {
		var out, errb bytes.Buffer
		code := validate(c.p, strings.NewReader(c.in), &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.err) {
			t.Errorf("%T %q: exit %d, stdout %q, stderr %q", c.p, c.in, code, out.String(), errb.String())
		}
	}
}
