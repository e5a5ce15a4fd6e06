// Command braid-ipam is braid's node-side CNI IPAM plugin: it returns the Floating IPs braid-ipam-server
// assigned to a pod's interface, for macvlan, bridge, host-device or SR-IOV delegates.
//
// Unlike the reference plugins it does not lock its goroutine to an OS thread: it never enters a network
// namespace, and a locked thread costs every blocking read (the wait for the daemon's answer) a hand-over
// between threads, about a tenth of the plugin's CPU per call.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/braid-cni/braid/ipam-server/internal/plugin"
)

func main() {
	p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig}
	skel.PluginMainFuncs(p.Funcs(), version.All, "braid-ipam: serves braid-ipam-server's Floating IPs")
}
