// Command braid-ipam-api is the part of braid's braid-ipam CNI IPAM plugin that reads the API server: braid-ipam
// runs it, in its own place, for an ADD that braid's node daemon cannot answer (a node without the daemon) and
// for CHECK and STATUS. It is installed beside braid-ipam; networks name braid-ipam, never this. Its one
// argument, -daemon-asked, says that braid-ipam asked the daemon already.
//
// Unlike the reference plugins it does not lock its goroutine to an OS thread: it never enters a network
// namespace, and a locked thread costs every blocking read (the wait for the API server's answer) a hand-over
// between threads.
package main

import (
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/braid-cni/braid/ipam-server/internal/plugin"
)

func main() {
	p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig, DaemonAsked: slices.Contains(os.Args[1:], "-daemon-asked")}
	skel.PluginMainFuncs(p.Funcs(), version.All, "braid-ipam-api: braid-ipam's calls that read the API server")
}
