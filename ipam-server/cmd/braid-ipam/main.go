// Command braid-ipam is braid's node-side CNI IPAM plugin: it returns the Floating IPs braid-ipam-server
// assigned to a pod's interface, for macvlan, bridge, host-device or SR-IOV delegates.
//
// It starts for every CNI call, so it links only what the common call needs: an ADD that braid's node daemon
// answers from its watch cache. The calls that read the API server (an ADD the daemon cannot answer, CHECK and
// STATUS) become braid-ipam-api, installed beside it: an API client's HTTP, TLS and kubeconfig YAML packages
// make every start slower (perf stat of VERSION: 1.58 ms of CPU with them, 1.26 ms without).
//
// Unlike the reference plugins it does not lock its goroutine to an OS thread: it never enters a network
// namespace, and a locked thread costs every blocking read (the wait for the daemon's answer) a hand-over
// between threads, about a tenth of the plugin's CPU per call.
package main

import (
	"context"
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/plugin/front"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add: func(args *skel.CmdArgs) error {
			return front.Add(args, true, func(context.Context, *front.Conf, front.PodArgs, string) (assignment.Interface, error) {
				return assignment.Interface{}, becomeAPIDaemonAsked(args)
			})
		},
		Del:   func(*skel.CmdArgs) error { return nil }, // braid-ipam-server releases by policy; the node holds nothing
		Check: becomeAPI,
		Status: func(args *skel.CmdArgs) error {
			err := becomeAPI(args)
			var e *types.Error
			if errors.As(err, &e) && e.Code == types.ErrTryAgainLater {
				return types.NewError(types.ErrPluginNotAvailable, e.Msg, e.Details) // STATUS' code for it (CNI 1.1)
			}
			return err
		},
	}, version.All, "braid-ipam: serves braid-ipam-server's Floating IPs")
}
