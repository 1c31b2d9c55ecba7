package main

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	const fp = "ed25519:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for _, c := range []struct {
		url                  string
		fp, addr, host, path string
		err                  string
	}{
		{url: "alknet://" + fp + "@node.example:5000/team/app.git", fp: fp, addr: "node.example:5000", host: "node.example:5000", path: "/team/app.git"},
		{url: "alknet://node.example/proj", addr: "node.example:4433", host: "node.example", path: "/proj"},
		{url: "alknet://" + strings.ToUpper(fp[:8]) + fp[8:] + "@[::1]:4433/a", err: "want ed25519"},
		{url: "alknet://" + fp + "@[::1]:4433/a/b", fp: fp, addr: "[::1]:4433", host: "[::1]:4433", path: "/a/b"},
		{url: "alknet://[::1]/a", addr: "[::1]:4433", host: "[::1]", path: "/a"},
		{url: "127.0.0.1:7000/proj", addr: "127.0.0.1:7000", host: "127.0.0.1:7000", path: "/proj"}, // alknet::<address>
		{url: "alknet://node.example", err: "names no repository"},
		{url: "alknet://node.example/", err: "names no repository"},
		{url: "alknet:///proj", err: "no host"},
		{url: "alknet://nothex@node/proj", err: "want ed25519:<64 hex>"},
		{url: "https://node.example/proj", err: "not an alknet:// URL"},
		{url: "alknet://node.example:99999/proj", err: "port"},
		{url: "alknet://node/a\x00b", err: "NUL"},
	} {
		got, err := parseURL(c.url)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parseURL(%q) = %+v, %v; want an error with %q", c.url, got, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseURL(%q): %v", c.url, err)
			continue
		}
		if got.fingerprint != c.fp || got.addr != c.addr || got.host != c.host || got.path != c.path {
			t.Errorf("parseURL(%q) = %+v; want fp %q addr %q host %q path %q", c.url, got, c.fp, c.addr, c.host, c.path)
		}
	}
}

func TestRequestLine(t *testing.T) {
	tg := target{addr: "node.example:4433", host: "node.example", path: "/team/app.git"}
	if got, want := string(requestLine(serviceUploadPack, tg, 0)), "0034git-upload-pack /team/app.git\x00host=node.example\x00"; got != want {
		t.Errorf("v0 request line %q, want %q", got, want)
	}
	if got, want := string(requestLine(serviceUploadPack, tg, 2)), "003fgit-upload-pack /team/app.git\x00host=node.example\x00\x00version=2\x00"; got != want {
		t.Errorf("v2 request line %q, want %q", got, want)
	}
}

func TestParseBool(t *testing.T) {
	for in, want := range map[string]bool{"true": true, "Yes": true, "on": true, "1": true, "false": false, "no": false, "OFF": false, "0": false, "": false} {
		if got, err := parseBool(in); err != nil || got != want {
			t.Errorf("parseBool(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseBool("maybe"); err == nil {
		t.Error("parseBool(maybe) succeeded")
	}
}
