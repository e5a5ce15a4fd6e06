package server_test

import (
	"slices"
	"testing"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
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
	got := server.Describe([]braidv1.FloatingIP{fip("v6", "2001:db8:1::9"), fip("v4", "192.0.2.20"), fip("v6", "2001:db8:1::2"), fip("v4", "192.0.2.3")}, models, assignment.Interface{})
	var cidrs []string
	for _, a := range got.Addresses {
		cidrs = append(cidrs, a.CIDR)
	}
	want := []string{"192.0.2.3/24", "192.0.2.20/24", "2001:db8:1::2/64", "2001:db8:1::9/64"}
	if !slices.Equal(cidrs, want) {
		t.Fatalf("addresses %v, want %v", cidrs, want)
	}
}

// An address of a pool with no model in this process (invalid since the server started) keeps the
// description the interface had, with that description's routes and DNS; one the description does not know
// (another FloatingIP of that pool, another address) is not invented.
func TestAddressOfAnUnknownPoolKeepsItsDescription(t *testing.T) {
	v6, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "2001:db8:1::/64", Routes: []braidv1.Route{{Dst: "2001:db8:ff::/48"}}})
	if err != nil {
		t.Fatal(err)
	}
	prev := assignment.Interface{
		Addresses: []assignment.Address{{Pool: "gone-v4", FloatingIP: "gone-v4-192-0-2-7", CIDR: "192.0.2.7/24", Gateway: "192.0.2.1"}},
		Routes:    []assignment.Route{{Dst: "198.51.100.0/24"}, {Dst: "2001:db8:ff::/48"}},
		DNS:       &assignment.DNS{Nameservers: []string{"192.0.2.53"}},
	}
	fip := func(name, p, ip string) braidv1.FloatingIP {
		f := braidv1.FloatingIP{Spec: braidv1.FloatingIPSpec{Pool: p, IP: ip}}
		f.Name = name
		return f
	}
	got := server.Describe([]braidv1.FloatingIP{fip("v6-2001-db8-1--5", "v6", "2001:db8:1::5"), fip("gone-v4-192-0-2-7", "gone-v4", "192.0.2.7"),
		fip("gone-v4-192-0-2-8", "gone-v4", "192.0.2.8")}, map[string]pool.Model{"v6": v6}, prev)
	var cidrs []string
	for _, a := range got.Addresses {
		cidrs = append(cidrs, a.CIDR+" gw="+a.Gateway)
	}
	if want := []string{"192.0.2.7/24 gw=192.0.2.1", "2001:db8:1::5/64 gw="}; !slices.Equal(cidrs, want) {
		t.Fatalf("addresses %v, want %v", cidrs, want)
	}
	if want := []assignment.Route{{Dst: "2001:db8:ff::/48"}, {Dst: "198.51.100.0/24"}}; !slices.Equal(got.Routes, want) {
		t.Errorf("routes %v, want %v", got.Routes, want)
	}
	if got.DNS == nil || !slices.Equal(got.DNS.Nameservers, prev.DNS.Nameservers) {
		t.Errorf("dns %+v, want the previous description's", got.DNS)
	}
}
