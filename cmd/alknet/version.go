package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/call"
	"alknet.dev/alknet/proto/pluginrpc"
)

// commit is the source revision, set at build time with
// -ldflags "-X main.commit=…"; otherwise the one Go recorded (vcs.revision).
var commit = ""

// versionInfo is `alknet version --json` (docs/json.md).
type versionInfo struct {
	Version string `json:"version"`
	// Commit is the source revision ("" when the build recorded none);
	// Modified: the working tree had uncommitted changes.
	Commit   string `json:"commit"`
	Modified bool   `json:"modified"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
	// PluginProtocol is the core↔plugin protocol version
	// (docs/spec/plugins.md §3); a plugin must speak it.
	PluginProtocol int `json:"plugin_protocol"`
	// CallProtocol is the ALPN of the call protocol (docs/spec/call.md);
	// it carries no version number of its own.
	CallProtocol string `json:"call_protocol"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		PluginProtocol: pluginrpc.ProtocolVersion, CallProtocol: call.ALPN}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	return v
}

func (v versionInfo) String() string {
	c := v.Commit
	switch {
	case c == "":
		c = "unknown"
	case v.Modified:
		c += " (modified)"
	}
	return fmt.Sprintf("alknet %s\ncommit:          %s\ngo:              %s %s\nplugin protocol: %d\ncall protocol:   %s\n",
		v.Version, c, v.Go, v.Platform, v.PluginProtocol, v.CallProtocol)
}

func (a *app) versionCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and protocol versions",
		Long: `Print alknet's version, the source commit it was built from, the Go version,
the core↔plugin protocol version a plugin must speak, and the call protocol.
'alknet --version' prints the same.`,
		Example: "  alknet version\n  alknet version --json",
		Args:    cobra.NoArgs,
		// No configuration is read: the version prints even when the
		// config file is broken.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(*cobra.Command, []string) error {
			v := buildVersion()
			if asJSON {
				return a.printJSON(v)
			}
			fmt.Fprint(a.out, v.String())
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON (docs/json.md)")
	return c
}

// setVersionFlag makes `alknet --version` print what `alknet version` does.
func (a *app) setVersionFlag() {
	a.root.Version = version
	a.root.SetVersionTemplate(buildVersion().String())
}
