// Command alknet-plugin-http is the HTTP plugin executable.
package main

import (
	httpplugin "alknet.dev/alknet/plugins/http"
	"alknet.dev/alknet/plugins/sdk"
)

func main() { sdk.Serve(&httpplugin.Plugin{}) }
