// Command braid-shim is what a container runtime runs for `"type": "braid-shim"`: it forwards the CNI call to
// braid's node daemon (`braid daemon`, in braid's DaemonSet pod) over the unix socket named by the conf's
// `daemonSocket` (default /run/braid/braid.sock) and prints the daemon's answer. The daemon keeps the pods and
// NADs of its node in a watch cache and writes network-status in the background, so a call does no API
// round trip on its path. VERSION is answered here.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/braid-cni/braid/crds/shim"
)

// callTimeout is longer than the daemon's own bound on a call (100 s), shorter than the kubelet's 2 minutes.
const callTimeout = 110 * time.Second

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    forward("ADD"),
		Del:    forward("DEL"),
		Check:  forward("CHECK"),
		Status: forward("STATUS"),
		GC:     forward("GC"),
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"braid-shim: forwards CNI calls to braid's node daemon")
	runtime.KeepAlive(heldUntilExit) // the connection closes with the process, not before
}

// heldUntilExit keeps the call's connection reachable (not closed by the garbage collector) until the exit.
var heldUntilExit func()

func forward(command string) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		var c struct {
			DaemonSocket string `json:"daemonSocket"`
		}
		if err := json.Unmarshal(args.StdinData, &c); err != nil {
			return types.NewError(types.ErrDecodingFailure, "braid-shim: conf: "+err.Error(), "")
		}
		if c.DaemonSocket == "" {
			c.DaemonSocket = shim.DefaultSocket
		}
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		out, hangUp, err := shim.Call(ctx, c.DaemonSocket, shim.Request{
			Command: command, ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
			Args: args.Args, Path: args.Path, Stdin: args.StdinData,
		})
		var te *types.Error
		if command == "STATUS" && errors.As(err, &te) && te.Code == types.ErrTryAgainLater {
			// For STATUS, a daemon that cannot be asked is the plugin not being available (CNI 1.1).
			return types.NewError(types.ErrPluginNotAvailable, te.Msg, te.Details)
		}
		if err != nil {
			return err
		}
		// Not called: the exit closes the connection, and the daemon's background work for this call (the
		// network-status write) starts only then, when the runtime has the answer.
		heldUntilExit = hangUp
		if len(out) > 0 {
			if _, err := writeStdout(out); err != nil {
				return types.NewError(types.ErrIOFailure, "braid-shim: print result: "+err.Error(), "")
			}
		}
		return nil
	}
}
