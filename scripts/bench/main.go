// Command bench runs the benchmark suite and prints each figure next to its
// anchor measured in the same run, with the ratio (CONVENTIONS.md).
package main

import "fmt"

func main() {
	fmt.Println("no benchmarks are defined yet")
}
