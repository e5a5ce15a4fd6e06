package server_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/braid-cni/braid/ipam-server/internal/pool"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// TestAPoolNotLoadedYetMakesThePodWait: a pool that exists and is valid but that the allocator has not loaded
// yet (created a moment ago) is not taken for a missing or invalid one: the pod waits for it instead of being
// served without its family. A pool that does not exist is reported missing, the others are eligible.
func TestAPoolNotLoadedYetMakesThePodWait(t *testing.T) {
	mkPool(t, "loading-v4", "192.0.2.0/24")
	mkPool(t, "loading-v6", "2001:db8:8::/64")
	v4, err := pool.Parse(getPool(t, "loading-v4").Spec)
	if err != nil {
		t.Fatal(err)
	}
	pod := podObj("ns", "p", "node-1", "")
	names := []string{"loading-v4", "loading-v6", "loading-gone"}

	_, _, err = server.PoolsFor(t.Context(), k8s, pod, names, map[string]pool.Model{"loading-v4": v4})
	if !errors.Is(err, server.ErrPoolLoading) {
		t.Fatalf("with loading-v6 not loaded: err = %v, want ErrPoolLoading", err)
	}

	v6, err := pool.Parse(getPool(t, "loading-v6").Spec)
	if err != nil {
		t.Fatal(err)
	}
	eligible, missing, err := server.PoolsFor(t.Context(), k8s, pod, names, map[string]pool.Model{"loading-v4": v4, "loading-v6": v6})
	if err != nil || !slices.Equal(eligible, []string{"loading-v4", "loading-v6"}) || !slices.Equal(missing, []string{"loading-gone"}) {
		t.Fatalf("with both loaded: eligible %v, missing %v, err %v; want both eligible and loading-gone missing", eligible, missing, err)
	}
}
