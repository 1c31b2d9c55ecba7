// Package pluginexec makes the alknet executable a plugin launcher when it
// is run as `alknet __plugin-exec …` (core/pluginhost/trampoline): its
// initializer runs the trampoline and never returns, so none of the
// node's other packages initialize first.
//
// Why in an initializer: every plugin launch runs this executable once,
// and initializing all of its packages (JSON Schema meta-schemas,
// protobuf descriptors, word lists, …) costs ~40 ms, which every plugin
// start and restart would otherwise pay before its own process even
// begins. Go initializes packages in import-path order among those whose
// imports are initialized (the language specification, "Package
// initialization"), so this package — importing only the standard library
// and golang.org/x/sys/unix through the trampoline — runs before the
// heavy ones. cmd/alknet imports it for that effect alone.
package pluginexec

import (
	"os"

	"alknet.dev/alknet/core/pluginhost/trampoline"
)

func init() {
	if len(os.Args) > 1 && os.Args[1] == trampoline.Command {
		trampoline.Main(os.Args[2:])
	}
}
