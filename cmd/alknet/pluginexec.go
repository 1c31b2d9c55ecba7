package main

import (
	"github.com/spf13/cobra"

	// Runs `alknet __plugin-exec` before the other packages initialize.
	_ "alknet.dev/alknet/cmd/alknet/internal/pluginexec"
	"alknet.dev/alknet/core/pluginhost/trampoline"
)

// pluginExecCmd documents the plugin launcher's trampoline in the command
// tree; the trampoline itself runs from a package initializer
// (internal/pluginexec) before any of this, so Run is reached only if that
// package were not linked.
func (a *app) pluginExecCmd() *cobra.Command {
	return &cobra.Command{
		Use:                trampoline.Command,
		Hidden:             true,
		DisableFlagParsing: true,
		PersistentPreRunE:  func(*cobra.Command, []string) error { return nil },
		Run: func(_ *cobra.Command, args []string) {
			trampoline.Main(args)
		},
	}
}
