// Command braid-ipam is braid's node-side CNI IPAM plugin: it returns the Floating IPs braid-ipam-server
// assigned to a pod's interface, for macvlan, bridge, host-device or SR-IOV delegates.
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/braid-cni/braid/ipam-server/internal/plugin"
)

func init() {
	// CNI plugins keep to one OS thread, like the reference plugins.
	runtime.LockOSThread()
}

func main() {
	p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig}
	skel.PluginMainFuncs(p.Funcs(), version.All, "braid-ipam: serves braid-ipam-server's Floating IPs")
}
