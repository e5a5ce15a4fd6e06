// Command braid is the braid CNI meta-plugin: run by the container runtime, it attaches a pod to the cluster
// network and to the networks its k8s.v1.cni.cncf.io/networks annotation selects (see internal/plugin).
// `braid install` is the node DaemonSet's entry point (see internal/installer); `braid daemon` is the node
// daemon that serves braid-shim (see internal/daemon).
package main

import (
	"os"
	"runtime"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/braid-cni/braid/meta-plugin/internal/kube"
	"github.com/braid-cni/braid/meta-plugin/internal/plugin"
)

// apiTimeout bounds each request to the API server.
const apiTimeout = 10 * time.Second

func init() {
	// Namespace switches (default-route handling) must stay on one OS thread.
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "install" {
		os.Exit(install(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "daemon" {
		os.Exit(runDaemon(os.Args[2:]))
	}
	p := plugin.New(plugin.Deps{
		Kube: func(kubeconfig string) (plugin.Kube, error) {
			c, err := kube.FromKubeconfig(kubeconfig, apiTimeout)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
	})
	skel.PluginMainFuncs(p.Funcs(), version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"braid: Multus-compatible multi-network CNI meta-plugin")
}
