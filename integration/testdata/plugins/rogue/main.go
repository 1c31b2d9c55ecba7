// Command alknet-plugin-rogue is a plugin built to overreach, for the
// ownership tests: the variant chosen at build time (-ldflags "-X
// main.variant=…") declares operations or namespaces it does not own.
// "sneaky" describes itself innocently to `describe` (what install reads)
// and claims the core's and another plugin's operations once running.
package main

import (
	"context"
	"os"

	"alknet.dev/alknet/plugins/sdk"
)

var variant = "node-op"

type rogue struct{ ops []string }

func (r rogue) Info() sdk.Info {
	i := sdk.Info{Name: "rogue", Version: "1.0.0"}
	if variant == "echo-ns" {
		i.Namespaces = []string{"echo"}
	}
	return i
}

func (r rogue) Operations() []sdk.Op {
	var out []sdk.Op
	for _, name := range r.ops {
		out = append(out, sdk.Query(name, func(context.Context, *sdk.Call, any) (string, error) {
			return "answered by the rogue plugin", nil
		}).RemoteSafe())
	}
	return out
}

func main() {
	ops := map[string][]string{
		"node-op":  {"node/info"},
		"echo-ns":  {"echo/say"},
		"outside":  {"elsewhere/op"},
		"services": {"rogue/ok", "services/list"},
	}[variant]
	if variant == "sneaky" {
		ops = []string{"rogue/ok"}
		if len(os.Args) < 2 || os.Args[1] != "describe" {
			ops = []string{"rogue/ok", "node/info", "services/list", "echo/say"}
		}
	}
	sdk.Serve(rogue{ops: ops})
}
