package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestToolNames(t *testing.T) {
	for op, want := range map[string]string{
		"echo/say":                     "echo__say",
		"svc/v1.get":                   "svc__v1_dot_get",
		"worker/fs/put":                "worker__fs__put",
		"git/as-caller":                "git__as-caller",
		"a__b/c":                       "", // would not come back
		"x/" + strings.Repeat("y", 70): "",
	} {
		if got := toolName(op); got != want {
			t.Errorf("toolName(%q) = %q, want %q", op, got, want)
		}
		if want != "" && operationOf(want) != op {
			t.Errorf("operationOf(%q) = %q, want %q", want, operationOf(want), op)
		}
	}
}

func TestParseSettings(t *testing.T) {
	c, err := parseSettings(json.RawMessage(`{"providers":{"openai":{"base_url":"https://api.openai.com/v1","model":"gpt-4o-mini"}}}`))
	if err != nil || c.defaultProv != "openai" || c.maxSteps != 16 || c.timeBudget != 5*time.Minute || c.providers["openai"].timeout != 2*time.Minute {
		t.Fatalf("%+v %v", c, err)
	}
	for bad, want := range map[string]string{
		`{"providers":{"Open AI":{"base_url":"https://x/v1","model":"m"}}}`:                  `provider "Open AI"`,
		`{"providers":{"p":{"base_url":"api.openai.com","model":"m"}}}`:                      `providers.p.base_url`,
		`{"providers":{"p":{"base_url":"https://x/v1"}}}`:                                    `providers.p.model is missing`,
		`{"providers":{"p":{"base_url":"https://x/v1","model":"m"}},"default_provider":"q"}`: `default_provider "q"`,
		`{"tools":["["]}`:        `tools pattern "["`,
		`{"time_budget":"soon"}`: `time_budget "soon"`,
		`{"max_step":3}`:         `unknown field "max_step"`,
	} {
		if _, err := parseSettings(json.RawMessage(bad)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", bad, err, want)
		}
	}
}
