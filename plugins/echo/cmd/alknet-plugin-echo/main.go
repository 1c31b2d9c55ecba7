// Command alknet-plugin-echo is the echo plugin executable.
package main

import (
	"alknet.dev/alknet/plugins/echo"
	"alknet.dev/alknet/plugins/sdk"
)

func main() { sdk.Serve(&echo.Plugin{}) }
