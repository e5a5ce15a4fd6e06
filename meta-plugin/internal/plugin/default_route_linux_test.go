package plugin

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/crds/selection"
)

// TestDefaultRouteFromTheAttachmentsOwnRoutes: "default-route": [] gives the attachment the default route its
// own IPAM configures. A static IPAM names its gateway in "routes", not on the address, as operators write it
// for Multus; braid must take that gateway rather than refuse the request.
func TestDefaultRouteFromTheAttachmentsOwnRoutes(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.nad("static-gw", r.macvlanConf(`{"type":"static","addresses":[{"address":"192.0.2.5/24"}],
		"routes":[{"dst":"0.0.0.0/0","gw":"192.0.2.1"}]}`, ""), nil)
	p := r.pod("own-gw", map[string]string{selection.NetworksAnnotation: `[{"name":"static-gw","default-route":[]}]`})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	routes := defaultRoutes(t, p.netns)
	if !slices.Contains(routes, "net1 via 192.0.2.1") || slices.Contains(routes, "eth0 via 203.0.113.1") {
		t.Errorf("default routes = %v, want IPv4's via 192.0.2.1 on net1 and none on eth0", routes)
	}
	if sts := r.status(p); len(sts) != 2 || !cmp.Equal(sts[1].DefaultRoute, []string{"192.0.2.1"}) {
		t.Errorf("status = %+v, want net1's default-route [192.0.2.1]", sts)
	}
	// Multus' "gateway" (the NAD client's NetworkStatus.Gateway) says where each interface's default routes go,
	// after the move: IPv4's is gone from eth0, IPv6's stays.
	if sts := r.status(p); len(sts) != 2 || !cmp.Equal(sts[0].Gateway, []string{"2001:db8:1::1"}) ||
		!cmp.Equal(sts[1].Gateway, []string{"192.0.2.1"}) {
		t.Errorf("status = %+v, want gateway [2001:db8:1::1] on eth0 and [192.0.2.1] on net1", sts)
	}
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	r.assertGone(p)
}

// TestDefaultRouteIPv6: an IPv6 gateway moves only IPv6's default route; IPv4's stays with the cluster network.
func TestDefaultRouteIPv6(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.nad("v6", r.macvlanConf(`{"type":"static","addresses":[{"address":"2001:db8:5::5/64"}]}`, ""), nil)
	p := r.pod("v6", map[string]string{selection.NetworksAnnotation: `[{"name":"v6","default-route":["2001:db8:5::1"]}]`})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	routes := defaultRoutes(t, p.netns)
	slices.Sort(routes)
	if want := []string{"eth0 via 203.0.113.1", "net1 via 2001:db8:5::1"}; !cmp.Equal(routes, want) {
		t.Errorf("default routes = %v, want %v", routes, want)
	}
	if sts := r.status(p); len(sts) != 2 || !cmp.Equal(sts[0].Gateway, []string{"203.0.113.1"}) ||
		!cmp.Equal(sts[1].Gateway, []string{"2001:db8:5::1"}) {
		t.Errorf("status = %+v, want gateway [203.0.113.1] on eth0 and [2001:db8:5::1] on net1, as Multus writes them", sts)
	}
	if err := r.check(p); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	r.assertGone(p)
}

// TestDefaultRouteThroughAnUnreachableGateway: a gateway that is not on the attachment's network is the pod's
// mistake: ADD fails with the annotation's code (100), names the field and says what to fix, and leaves nothing.
func TestDefaultRouteThroughAnUnreachableGateway(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.standardNADs()
	p := r.pod("far-gw", map[string]string{selection.NetworksAnnotation: `[{"name":"net-a","default-route":["203.0.113.77"]}]`})
	_, err := r.add(p)
	if cniCode(err) != CodeSelection || err == nil || !strings.Contains(err.Error(), "networks[0].default-route") ||
		!strings.Contains(err.Error(), "not reachable through net1") {
		t.Errorf("ADD = %v (code %d), want code %d naming networks[0].default-route and saying the gateway is not reachable through net1",
			err, cniCode(err), CodeSelection)
	}
	r.assertGone(p)
}
