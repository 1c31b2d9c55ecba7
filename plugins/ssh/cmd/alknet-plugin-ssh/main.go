// Command alknet-plugin-ssh is the SSH plugin executable.
package main

import (
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/ssh"
)

func main() { sdk.Serve(&ssh.Plugin{}) }
