package route

import (
	"net/netip"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/google/go-cmp/cmp"
)

func res(t *testing.T, s string) *types100.Result {
	t.Helper()
	r, err := create.Create("1.0.0", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	out, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func routes(r *types100.Result) []string {
	var out []string
	for _, rt := range r.Routes {
		out = append(out, rt.Dst.String()+" via "+rt.GW.String())
	}
	return out
}

func TestEditResults(t *testing.T) {
	r := res(t, `{"cniVersion":"1.0.0","interfaces":[{"name":"br"},{"name":"eth0","sandbox":"/p"}],
		"ips":[{"address":"203.0.113.5/24","gateway":"203.0.113.1","interface":1},{"address":"203.0.113.1/24","gateway":"203.0.113.254","interface":0},
		{"address":"2001:db8:1::5/64","gateway":"2001:db8:1::1","interface":1}],
		"routes":[{"dst":"0.0.0.0/0","gw":"203.0.113.1"},{"dst":"::/0","gw":"2001:db8:1::1"},{"dst":"198.51.100.0/24","gw":"203.0.113.9"}]}`)
	if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8:1::1")}, Gateways(r),
		cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Gateways (-want +got):\n%s", diff)
	}
	DropDefault(r, true, false)
	if diff := cmp.Diff([]string{"::/0 via 2001:db8:1::1", "198.51.100.0/24 via 203.0.113.9"}, routes(r)); diff != "" {
		t.Errorf("after dropping IPv4 defaults (-want +got):\n%s", diff)
	}
	DropDefault(r, false, true)
	AddDefault(r, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")})
	if diff := cmp.Diff([]string{"198.51.100.0/24 via 203.0.113.9", "0.0.0.0/0 via 192.0.2.1", "::/0 via 2001:db8::1"}, routes(r)); diff != "" {
		t.Errorf("after AddDefault (-want +got):\n%s", diff)
	}
	if v4, v6 := Families([]netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1")}); !v4 || v6 {
		t.Errorf("Families of a mapped IPv4 = %v %v", v4, v6)
	}
}

func TestGatewaysOfDefaultRoutes(t *testing.T) {
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	// A static IPAM names its gateway in "routes" only; the address's gateway of the other family still counts.
	r := res(t, `{"cniVersion":"1.0.0","interfaces":[{"name":"net1","sandbox":"/p"}],
		"ips":[{"address":"192.0.2.5/24","interface":0},{"address":"2001:db8:5::5/64","gateway":"2001:db8:5::1","interface":0}],
		"routes":[{"dst":"0.0.0.0/0","gw":"192.0.2.1"},{"dst":"198.51.100.0/24","gw":"192.0.2.9"}]}`)
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8:5::1")}
	if diff := cmp.Diff(want, Gateways(r), cmpAddr); diff != "" {
		t.Errorf("Gateways (-want +got):\n%s", diff)
	}
	// A default route of the result wins over the address's gateway of the same family.
	r = res(t, `{"cniVersion":"1.0.0","ips":[{"address":"192.0.2.5/24","gateway":"192.0.2.254"}],
		"routes":[{"dst":"0.0.0.0/0","gw":"192.0.2.1"}]}`)
	if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr("192.0.2.1")}, Gateways(r), cmpAddr); diff != "" {
		t.Errorf("Gateways with both (-want +got):\n%s", diff)
	}
}
