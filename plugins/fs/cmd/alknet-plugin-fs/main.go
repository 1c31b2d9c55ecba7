// Command alknet-plugin-fs is the fs plugin executable.
package main

import (
	"alknet.dev/alknet/plugins/fs"
	"alknet.dev/alknet/plugins/sdk"
)

func main() { sdk.Serve(&fs.Plugin{}) }
