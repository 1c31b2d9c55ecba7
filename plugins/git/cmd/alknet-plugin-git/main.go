// Command alknet-plugin-git is the Git plugin executable; run with
// `pre-receive` it is also the hook of the repositories it serves.
package main

import "alknet.dev/alknet/plugins/git"

func main() { git.Main() }
