package datadir

import "testing"

// A plugin keeps its data in <data>/<name>; names of the node's own files
// are refused rather than shared with a plugin.
func TestPluginStatePath(t *testing.T) {
	d := Dir{Path: "/var/lib/alknet"}
	if p, err := d.PluginStatePath("sftp"); err != nil || p != "/var/lib/alknet/sftp" {
		t.Fatalf("sftp: %q %v", p, err)
	}
	for _, name := range []string{"plugins", "known_peers", "acme", "alknet.lock", "vault.json", "", "..", "a/b"} {
		if p, err := d.PluginStatePath(name); err == nil {
			t.Errorf("PluginStatePath(%q) = %q, want an error", name, p)
		}
	}
}
