// Command braid-ipam is the braid-ipam CNI IPAM plugin.
//
// This build carries only the entry point: the component is not implemented yet (issue 3), so the binary
// refuses to run rather than pretend to work.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "braid-ipam: not implemented in this build (see issue 3)")
	os.Exit(1)
}
