package sdk

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{`1048576`: 1 << 20, `"10GiB"`: 10 << 30, `"500MB"`: 500e6, `"512 KiB"`: 512 << 10, `"7"`: 7, `"3B"`: 3} {
		var b ByteSize
		if err := json.Unmarshal([]byte(in), &b); err != nil || int64(b) != want {
			t.Errorf("%s: %d %v, want %d", in, b, err, want)
		}
	}
	for _, in := range []string{`"-1"`, `"ten"`, `"1.5GiB"`, `"9999999999TiB"`, `true`} {
		var b ByteSize
		if err := json.Unmarshal([]byte(in), &b); err == nil {
			t.Errorf("%s accepted as %d", in, b)
		}
	}
	if s := ByteSize(3 << 30).String(); s != "3 GiB" {
		t.Errorf("String: %q", s)
	}
	if s := ByteSize(1000).String(); s != "1000 bytes" {
		t.Errorf("String: %q", s)
	}
}

func TestDecodeSettings(t *testing.T) {
	var s struct {
		Root string `json:"root"`
	}
	if err := DecodeSettings("demo", json.RawMessage(` null `), &s); err != nil {
		t.Fatal(err)
	}
	if err := DecodeSettings("demo", json.RawMessage(`{"root":"/x"}`), &s); err != nil || s.Root != "/x" {
		t.Fatalf("%+v %v", s, err)
	}
	err := DecodeSettings("demo", json.RawMessage(`{"rot":"/x"}`), &s)
	if err == nil || !strings.Contains(err.Error(), `unknown field "rot"`) || !strings.Contains(err.Error(), "[plugins.demo]") {
		t.Fatalf("misspelt key: %v", err)
	}
}
