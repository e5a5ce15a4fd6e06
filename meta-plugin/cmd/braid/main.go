// Command braid is the braid CNI meta-plugin.
//
// This build carries only the entry point: the component is not implemented yet (issue 4), so the binary
// refuses to run rather than pretend to work.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "braid: not implemented in this build (see issue 4)")
	os.Exit(1)
}
