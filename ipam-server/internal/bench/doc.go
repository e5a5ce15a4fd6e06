// Package bench measures braid-ipam against whereabouts in one harness: the same API server, pods bound to
// simulated nodes, and each ADD run by executing the real plugin binary the way a container runtime does.
// It runs only under `make bench-ipam` (BRAID_BENCH=1) and prints BENCH lines; it asserts no timings.
package bench
