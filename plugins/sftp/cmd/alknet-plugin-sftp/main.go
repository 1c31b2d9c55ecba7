// Command alknet-plugin-sftp is the SFTP plugin executable.
package main

import (
	"alknet.dev/alknet/plugins/sdk"
	"alknet.dev/alknet/plugins/sftp"
)

func main() { sdk.Serve(&sftp.Plugin{}) }
