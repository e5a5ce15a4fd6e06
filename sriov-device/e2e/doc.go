// Package e2e proves braid-sriov-dp against the real kubelet of the local single-node cluster
// (deploy/local/cluster-up.sh): the plugin runs as a host process on a fake PCI tree (sriov-device/internal/pcitree)
// and registers with the kubelet through its hard-coded /var/lib/kubelet/device-plugins; the node then offers the
// tree's VFs as an extended resource, a pod that asks for one gets it, and the kubelet follows the VFs' health and
// the plugin's exit.
//
// The test needs root and changes the host (it starts the cluster), so it runs only when BRAID_E2E=1 (`make
// test-e2e` sets it) and skips otherwise. It must hold the cluster lock /tmp/braid-cluster.lock: `make test-e2e`
// and `flock /tmp/braid-cluster.lock go test ...` take it for the test, and the test takes it itself when nobody
// holds it. It stops the cluster with deploy/local/cluster-down.sh when it ends, even on failure.
package e2e
