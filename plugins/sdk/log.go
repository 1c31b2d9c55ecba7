package sdk

import (
	"log"
	"os"

	"github.com/hashicorp/go-hclog"
)

// stderr is the process's standard error as it was at start: go-plugin's
// Serve later points os.Stderr at a pipe the node discards, while the real
// stderr is what the node reads and re-emits as log lines.
var stderr = os.Stderr

// logger writes hclog JSON on the real stderr. Its level follows the
// node's (ConfigureRequest.node.log_level).
var logger = hclog.New(&hclog.LoggerOptions{Output: stderr, JSONFormat: true, Level: hclog.Info})

func init() {
	// Lines of the standard log package (a library's log.Printf) reach the
	// node's log too, at the level their prefix says (INFO otherwise).
	log.SetFlags(0)
	log.SetOutput(logger.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.NoLevel}))
}

// Logger is the plugin's logger. Its lines reach the node's log under the
// plugin's name, at the node's log level; never log secrets, tokens or
// tunnel destinations (docs/spec/identity.md §7).
func Logger() hclog.Logger { return logger }

// setLogLevel follows the node's level; an unknown name keeps the current.
func setLogLevel(name string) {
	if l := hclog.LevelFromString(name); l != hclog.NoLevel {
		logger.SetLevel(l)
	}
}
