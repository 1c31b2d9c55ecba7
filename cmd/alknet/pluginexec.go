package main

import (
	"github.com/spf13/cobra"

	"alknet.dev/alknet/core/pluginhost"
)

// pluginExecCmd is the plugin launcher's trampoline (pluginhost.TrampolineMain):
// the node runs its own executable this way to start each plugin under
// its limits. Hidden: it is not for people, and it reads no configuration
// (the node passes everything it needs).
func (a *app) pluginExecCmd() *cobra.Command {
	return &cobra.Command{
		Use:                pluginhost.TrampolineCommand,
		Hidden:             true,
		DisableFlagParsing: true,
		// No config file, data directory or logger: the plugin's launch
		// must not depend on (or be slowed by) them.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		Run: func(_ *cobra.Command, args []string) {
			pluginhost.TrampolineMain(args)
		},
	}
}
