// Command alknet-plugin-dns is the DNS plugin executable.
package main

import (
	dnsplugin "alknet.dev/alknet/plugins/dns"
	"alknet.dev/alknet/plugins/sdk"
)

func main() { sdk.Serve(&dnsplugin.Plugin{}) }
