// Command alknet is the Alknet node: the daemon (`alknet serve`) and the
// tools to manage its vault, credentials, peers and plugins.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	app := newApp(os.Stdin, os.Stdout, os.Stderr)
	if err := app.root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code) // the error was printed already (as JSON)
		}
		fmt.Fprintf(os.Stderr, "alknet: %v\n", err)
		os.Exit(1)
	}
}
