// Package soak is braid's soak test on the local single-node cluster (`make soak`): deploy/local/demo.sh brings
// up the cluster, braid and deploy/examples; braid-ipam-server runs two replicas; then, for SOAK_DURATION
// (default 3m), pods are created and deleted continuously while, at random moments (seeded: SOAK_SEED), the
// IPAM leader is SIGKILLed, kube-apiserver is restarted and braid's DaemonSet pod is deleted. Once the churn
// stops and the cluster settles, a consistency check (check.go, a pure function of a Snapshot that node.go and
// cluster.go read) proves that no address is held twice and nothing leaked: FloatingIPs, pool status, braid's
// and libcni's cache files, host-local allocations, pod sandboxes, veths, macvlans and VFs.
//
// The test's last line is `SOAK pods=<created> faults=<injected> duplicates=<n> leaks=<n>` (-1 for both counts
// when it failed before the check ran). It needs root and BRAID_SOAK=1, holds the local cluster for about ten
// minutes and leaves it down: run it under the cluster lock, as `make soak` does. The package is not named
// e2e, so `make test` does not run it; its unit tests of the check run everywhere.
package soak
