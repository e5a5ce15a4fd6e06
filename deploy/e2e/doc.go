// Package e2e tests braid installed from deploy/ on the local single-node cluster, as `make demo` installs it:
// it runs deploy/local/demo.sh (build, simulated underlay, cluster-up, kubectl apply -k, deploy/examples, the
// demo's own proofs), then checks what users rely on: a StatefulSet pod keeps its addresses, a Deployment
// scaled 0 -> 20 -> 0 leaks nothing, pods wait for braid-ipam-server and running pods do not notice it is gone,
// a restarted braid DaemonSet pod disturbs nothing. It ends with demo.sh down and checks that nothing is left.
//
// It needs root and BRAID_E2E=1, and holds the local cluster for about ten minutes: run it under the cluster
// lock, as `make e2e` and `make test` do (`flock -o /tmp/braid-cluster.lock go test ./deploy/e2e`).
package e2e
