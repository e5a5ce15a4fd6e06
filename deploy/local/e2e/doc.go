// Package e2e holds braid's end-to-end tests against a real single-node Kubernetes started on this
// machine by deploy/local/cluster-up.sh (containerd, etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kubelet, all state under .cache/cluster).
//
// The tests need root and change the host (network links, mounts, cgroups), so they run only when
// BRAID_E2E=1 (`make test-e2e` sets it) and skip otherwise. Each test stops the cluster with
// deploy/local/cluster-down.sh when it ends, even on failure, and checks that nothing was left behind.
package e2e
