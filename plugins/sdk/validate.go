package sdk

import (
	"encoding/json"
	"fmt"
	"io"
)

// maxSettings bounds the settings `validate` reads: settings come from the
// node's config file, never from a remote party, but a reader that cannot
// grow without bound is the rule here.
const maxSettings = 4 << 20

// Exit statuses of `alknet-plugin-<name> validate`.
const (
	validateOK      = 0 // the settings would be accepted (or the plugin has no check)
	validateRefused = 1 // stderr says why
)

// validate is `alknet-plugin-<name> validate`: it reads the settings (a
// JSON object, empty input meaning none) and runs the plugin's
// SettingsValidator. Stdout says "ok", or "unchecked" for a plugin that
// has no SettingsValidator.
func validate(p Plugin, in io.Reader, out, errw io.Writer) int {
	raw, err := io.ReadAll(io.LimitReader(in, maxSettings+1))
	if err != nil {
		fmt.Fprintf(errw, "reading the settings from stdin: %v\n", err)
		return validateRefused
	}
	if len(raw) > maxSettings {
		fmt.Fprintf(errw, "the settings are larger than %d bytes\n", maxSettings)
		return validateRefused
	}
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	if !json.Valid(raw) {
		fmt.Fprintln(errw, "the settings on stdin are not JSON")
		return validateRefused
	}
	v, ok := p.(SettingsValidator)
	if !ok {
		fmt.Fprintln(out, "unchecked")
		return validateOK
	}
	if err := v.ValidateSettings(json.RawMessage(raw)); err != nil {
		fmt.Fprintln(errw, err)
		return validateRefused
	}
	fmt.Fprintln(out, "ok")
	return validateOK
}
