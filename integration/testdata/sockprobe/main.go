// Command sockprobe tries to connect to each Unix socket named on its
// command line and prints one line per socket: "<path> connected" or
// "<path> refused: <error>". The containment tests run it as another
// local user to see whether that user can reach a node's plugin sockets.
package main

import (
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	for _, path := range os.Args[1:] {
		c, err := net.DialTimeout("unix", path, 2*time.Second)
		if err != nil {
			fmt.Printf("%s refused: %v\n", path, err)
			continue
		}
		_ = c.Close()
		fmt.Printf("%s connected\n", path)
	}
}
