// Command braid-sriov-dp is the SR-IOV kubelet device plugin.
//
// This build carries only the entry point: the component is not implemented yet (issue 5), so the binary
// refuses to run rather than pretend to work.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "braid-sriov-dp: not implemented in this build (see issue 5)")
	os.Exit(1)
}
