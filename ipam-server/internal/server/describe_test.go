package server_test

import (
	"slices"
	"testing"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// An interface's addresses are listed IPv4 first, then by address, whatever order it got them in (its IPv4
// pool loaded after its IPv6 pool, say, which made TestServesDualStackAndReleasesOnDeletion flaky).
func TestAddressesAreListedIPv4First(t *testing.T) {
	models := map[string]pool.Model{}
	for name, spec := range map[string]braidv1.IPPoolSpec{
		"v4": {CIDR: "192.0.2.0/24", Gateway: "192.0.2.1"},
		"v6": {CIDR: "2001:db8:1::/64"},
	} {
		m, err := pool.Parse(spec)
		if err != nil {
			t.Fatal(err)
		}
		models[name] = m
	}
	fip := func(p, ip string) braidv1.FloatingIP {
		return braidv1.FloatingIP{Spec: braidv1.FloatingIPSpec{Pool: p, IP: ip}}
	}
	got := server.Describe([]braidv1.FloatingIP{fip("v6", "2001:db8:1::9"), fip("v4", "192.0.2.20"), fip("v6", "2001:db8:1::2"), fip("v4", "192.0.2.3")}, models)
	var cidrs []string
	for _, a := range got.Addresses {
		cidrs = append(cidrs, a.CIDR)
	}
	want := []string{"192.0.2.3/24", "192.0.2.20/24", "2001:db8:1::2/64", "2001:db8:1::9/64"}
	if !slices.Equal(cidrs, want) {
		t.Fatalf("addresses %v, want %v", cidrs, want)
	}
}
