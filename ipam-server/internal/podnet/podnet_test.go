package podnet

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseSelections(t *testing.T) {
	cases := []struct {
		name, in string
		want     []Selection
	}{
		{"empty", "", nil},
		{"short form with defaults", "mgmt, other/ctl@ctl0,data",
			[]Selection{{Namespace: "ns", Name: "mgmt", Interface: "net1"}, {Namespace: "other", Name: "ctl", Interface: "ctl0"}, {Namespace: "ns", Name: "data", Interface: "net3"}}},
		{"a requested netN is skipped like the meta-plugin does", `[{"name":"a","interface":"net2"},{"name":"b"}]`,
			[]Selection{{Namespace: "ns", Name: "a", Interface: "net2"}, {Namespace: "ns", Name: "b", Interface: "net3"}}},
		{"json with ips", `[{"name":"mgmt","ips":["192.0.2.10/24","2001:db8::a"]},{"name":"ctl","namespace":"x","interface":"c0"}]`,
			[]Selection{{Namespace: "ns", Name: "mgmt", Interface: "net1", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::a")},
				Lengths: map[netip.Addr]int{netip.MustParseAddr("192.0.2.10"): 24}},
				{Namespace: "x", Name: "ctl", Interface: "c0"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSelections(tc.in, "ns", nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseSelectionsErrorsNameTheField(t *testing.T) {
	for in, field := range map[string]string{
		`[{"name":"a","ips":["nope"]}]`: "networks[0].ips[0]",
		`[{"namespace":"x"}]`:           "networks[0].name",
		`[{"name":`:                     "networks",
		`a,,b`:                          "networks[1]",
	} {
		if _, err := ParseSelections(in, "ns", nil); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: want an error naming %s, got %v", in, field, err)
		}
	}
}

func TestDefaultNetworksComeFirstOutsideSystemNamespaces(t *testing.T) {
	d := Defaults{Networks: []string{"kube-system/mgmt", "infra/ctl"}, SystemNamespaces: []string{"kube-system"}}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := ParseSelections("data,extra@x0,more", "app", d.For("app"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Selection{{Namespace: "kube-system", Name: "mgmt", Interface: "net1"}, {Namespace: "infra", Name: "ctl", Interface: "net2"},
		{Namespace: "app", Name: "data", Interface: "net3"}, {Namespace: "app", Name: "extra", Interface: "x0"}, {Namespace: "app", Name: "more", Interface: "net5"}}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := d.For("kube-system"); len(got) != 0 {
		t.Errorf("a system namespace got default networks %v", got)
	}
	for _, bad := range []string{"mgmt", "Bad NS/x", "infra/", "infra/a/b"} {
		err = Defaults{Networks: []string{"infra/ctl", bad}}.Validate()
		if err == nil || !strings.Contains(err.Error(), "default-networks[1]") {
			t.Errorf("default network %q: %v, want an error naming default-networks[1]", bad, err)
		}
	}
	if err := (Defaults{SystemNamespaces: []string{"kube-system", "Kube System"}}).Validate(); err == nil || !strings.Contains(err.Error(), "system-namespaces[1]") {
		t.Errorf("a bad system namespace: %v, want an error naming system-namespaces[1]", err)
	}
}

func TestBraidIPAM(t *testing.T) {
	conf, ok, err := BraidIPAM(`{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","ipam":{"type":"braid-ipam","pools":["a","b"]}},{"type":"tuning"}]}`)
	if err != nil || !ok || strings.Join(conf.Pools, ",") != "a,b" {
		t.Fatalf("conflist: got %+v %v %v", conf, ok, err)
	}
	if _, ok, err := BraidIPAM(`{"type":"macvlan","ipam":{"type":"host-local"}}`); ok || err != nil {
		t.Fatalf("host-local network: ok=%v err=%v, want not braid's", ok, err)
	}
	if _, _, err := BraidIPAM(`{"type":"macvlan","ipam":{"type":"braid-ipam"}}`); err == nil || !strings.Contains(err.Error(), "ipam.pools") {
		t.Fatalf("no pools: want an error naming ipam.pools, got %v", err)
	}
	if _, _, err := BraidIPAM(`{"type":`); err == nil || !strings.Contains(err.Error(), "spec.config") {
		t.Fatalf("bad JSON: want an error naming spec.config, got %v", err)
	}
}

func TestBraidIPAMRefusesKeysOfOtherIPAMPlugins(t *testing.T) {
	_, ok, err := BraidIPAM(`{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","ipam":{"type":"braid-ipam","pools":["a"],"routes":[]}}]}`)
	want := "spec.config: plugins[0].ipam.routes: braid-ipam takes addresses, gateway, routes and DNS from the IPPools in pools: set spec.routes on the pool and remove routes here"
	if !ok || err == nil || err.Error() != want {
		t.Fatalf("BraidIPAM = ok %v, %v; want ok and %q", ok, err, want)
	}
}
