// Command alknet-plugin-agent is the agent plugin executable.
package main

import (
	"alknet.dev/alknet/plugins/agent"
	"alknet.dev/alknet/plugins/sdk"
)

func main() { sdk.Serve(&agent.Plugin{}) }
