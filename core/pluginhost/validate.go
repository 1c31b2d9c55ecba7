package pluginhost

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"alknet.dev/alknet/proto/pluginpb"
)

// SettingsError is a plugin's refusal of its settings, as `alknet config
// check` reports it.
type SettingsError struct {
	Plugin string
	// Reason is what the plugin (or its config schema) said.
	Reason string
}

func (e *SettingsError) Error() string {
	return fmt.Sprintf("plugins.%s: %s", e.Plugin, e.Reason)
}

// ValidateSettings checks settings the way plugin m, installed as binary,
// would check them at start (docs/spec/plugins.md §1): against the config
// schema of its manifest, then by `<binary> validate` — the plugin's own
// check, which also finds what a schema cannot (a program that is not
// installed, a file that cannot be read). The binary runs with the
// plugins' minimal environment, so its PATH is the one the node gives
// plugins. A refusal is a *SettingsError; other errors mean the check
// could not run.
func ValidateSettings(ctx context.Context, binary string, m *pluginpb.Manifest, settings json.RawMessage) error {
	if len(settings) == 0 {
		settings = json.RawMessage("{}")
	}
	if raw := schemaJSON(m.GetConfigSchema()); len(raw) > 0 {
		if err := checkSchema(raw, settings); err != nil {
			return &SettingsError{Plugin: m.GetName(), Reason: err.Error()}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "validate")
	cmd.Env = minimalEnv()
	cmd.Stdin = bytes.NewReader(settings)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limitedWriter{w: &out, n: 4 << 10}, &limitedWriter{w: &errb, n: 16 << 10}
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return &SettingsError{Plugin: m.GetName(), Reason: strings.TrimSpace(errb.String())}
	default:
		return fmt.Errorf("%s validate: %w: %s (a plugin built with an older SDK has no settings check; update it)", binary, err, strings.TrimSpace(errb.String()))
	}
}

// checkSchema validates doc against the JSON Schema raw.
func checkSchema(raw, doc json.RawMessage) error {
	sch, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("its config schema is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("mem://settings.json", sch); err != nil {
		return fmt.Errorf("its config schema: %w", err)
	}
	s, err := c.Compile("mem://settings.json")
	if err != nil {
		return fmt.Errorf("its config schema: %w", err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("settings are not JSON: %w", err)
	}
	if err := s.Validate(v); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return fmt.Errorf("settings do not match the plugin's schema: %s", strings.ReplaceAll(strings.TrimSpace(ve.Error()), "\n", "; "))
		}
		return err
	}
	return nil
}
