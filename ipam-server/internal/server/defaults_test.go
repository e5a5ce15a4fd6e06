package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/braid-cni/braid/ipam-server/internal/podnet"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// TestDefaultNetworksAreServedAndNumberedFirst: with braid's defaultNetworks given to the server, a pod with no
// annotation gets an address for each default braid-ipam network, a pod with its own networks gets theirs on
// the interfaces the meta-plugin will use (after the defaults), and a pod in a system namespace gets none.
func TestDefaultNetworksAreServedAndNumberedFirst(t *testing.T) {
	infra, app, system := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	mkPool(t, "defaults-mgmt", "192.0.2.0/24")
	mkPool(t, "defaults-data", "198.51.100.0/24")
	mkNAD(t, infra, "mgmt", "defaults-mgmt")
	mkNAD(t, app, "data", "defaults-data")
	startServer(t, "", func(o *server.Options) {
		o.Defaults = podnet.Defaults{Networks: []string{infra + "/mgmt"}, SystemNamespaces: []string{system}}
	})

	bare := mkPod(t, app, "bare", "node-1", "")
	a := assignments(t, app, bare.Name, "net1")
	if got := a.Interfaces["net1"]; got.Network != infra+"/mgmt" || got.Addresses[0].Pool != "defaults-mgmt" {
		t.Errorf("pod without annotation: net1 = %+v, want the default network's address", got)
	}

	own := mkPod(t, app, "own", "node-1", "data")
	a = assignments(t, app, own.Name, "net1", "net2")
	if got := a.Interfaces["net2"]; got.Network != app+"/data" || got.Addresses[0].Pool != "defaults-data" {
		t.Errorf("pod's own network: net2 = %+v, want data's address after the default on net1", got)
	}

	sys := mkPod(t, system, "sys", "node-1", "")
	other := mkPod(t, app, "after", "node-1", "")
	assignments(t, app, other.Name, "net1") // the server has gone past the system pod by now
	for _, f := range append(fips(t, "defaults-mgmt"), fips(t, "defaults-data")...) {
		if f.Spec.Pod == system+"/"+sys.Name {
			t.Errorf("a pod in a system namespace got %s", f.Spec.IP)
		}
	}
	for _, p := range []string{"bare", "own", "after"} {
		deletePod(t, podObj(app, p, "", ""))
	}
	deletePod(t, sys) // else the next test's server, to which this namespace is not a system one, serves it
	eventually(t, 10*time.Second, "addresses released", func() (bool, string) {
		var left []string
		for _, f := range append(fips(t, "defaults-mgmt"), fips(t, "defaults-data")...) {
			// This server serves every pod without an annotation: other tests' pods left behind too.
			if ns, _, _ := strings.Cut(f.Spec.Pod, "/"); ns == app || ns == system {
				left = append(left, fmt.Sprintf("%s (pod %s, %s)", f.Name, f.Spec.Pod, f.Status.Phase))
			}
		}
		return len(left) == 0, fmt.Sprintf("FloatingIPs left: %v", left)
	})
}
