package pool

import (
	"math/big"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

func TestSizeAndUsable(t *testing.T) {
	cases := []struct {
		name            string
		spec            braidv1.IPPoolSpec
		size            string
		usable, blocked []string
	}{
		{"v4 /24 drops network and broadcast", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}, "254",
			[]string{"192.0.2.1", "192.0.2.254"}, []string{"192.0.2.0", "192.0.2.255", "198.51.100.1"}},
		{"v4 /30", braidv1.IPPoolSpec{CIDR: "192.0.2.4/30"}, "2", []string{"192.0.2.5", "192.0.2.6"}, []string{"192.0.2.4", "192.0.2.7"}},
		{"v4 /31 is point-to-point (RFC 3021)", braidv1.IPPoolSpec{CIDR: "198.51.100.0/31"}, "2", []string{"198.51.100.0", "198.51.100.1"}, nil},
		{"v4 /32 is one address", braidv1.IPPoolSpec{CIDR: "203.0.113.9/32"}, "1", []string{"203.0.113.9"}, []string{"203.0.113.8"}},
		{"v6 /64 drops the Subnet-Router anycast", braidv1.IPPoolSpec{CIDR: "2001:db8:1::/64"}, "18446744073709551615",
			[]string{"2001:db8:1::1", "2001:db8:1::ffff:ffff:ffff:ffff"}, []string{"2001:db8:1::", "2001:db8:2::1"}},
		{"v6 /127 is point-to-point (RFC 6164)", braidv1.IPPoolSpec{CIDR: "2001:db8::/127"}, "2", []string{"2001:db8::", "2001:db8::1"}, nil},
		{"v6 /128 is one address", braidv1.IPPoolSpec{CIDR: "2001:db8::5/128"}, "1", []string{"2001:db8::5"}, nil},
		{"ranges, excludes and gateway", braidv1.IPPoolSpec{
			CIDR:     "192.0.2.0/24",
			Ranges:   []braidv1.IPRange{{Start: "192.0.2.1", End: "192.0.2.20"}, {Start: "192.0.2.100", End: "192.0.2.109"}},
			Excludes: []string{"192.0.2.16/30", "192.0.2.17", "192.0.2.105"},
			Gateway:  "192.0.2.1",
		}, "24", // 20 + 10 - 4 (the /30, which also covers .17) - 1 (.105) - 1 (gateway)
			[]string{"192.0.2.2", "192.0.2.15", "192.0.2.20", "192.0.2.100"},
			[]string{"192.0.2.1", "192.0.2.16", "192.0.2.17", "192.0.2.19", "192.0.2.105", "192.0.2.50"}},
		{"range covering network and broadcast is clipped", braidv1.IPPoolSpec{
			CIDR: "192.0.2.0/29", Ranges: []braidv1.IPRange{{Start: "192.0.2.0", End: "192.0.2.7"}},
		}, "6", []string{"192.0.2.1", "192.0.2.6"}, []string{"192.0.2.0", "192.0.2.7"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Parse(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := new(big.Int).SetString(tc.size, 10)
			if got := m.Size(); got.Cmp(want) != 0 {
				t.Errorf("Size = %s, want %s", got, want)
			}
			for _, s := range tc.usable {
				if !m.Usable(netip.MustParseAddr(s)) {
					t.Errorf("%s should be usable", s)
				}
				if why := m.Unusable(netip.MustParseAddr(s)); why != "" {
					t.Errorf("Unusable(%s) = %q for a usable address", s, why)
				}
			}
			for _, s := range tc.blocked {
				if m.Usable(netip.MustParseAddr(s)) {
					t.Errorf("%s must not be usable", s)
				}
				if m.Unusable(netip.MustParseAddr(s)) == "" {
					t.Errorf("Unusable(%s) gives no reason for an address that is not usable", s)
				}
			}
		})
	}
}

func TestUnusableNamesTheReason(t *testing.T) {
	m, err := Parse(braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Gateway: "192.0.2.1", Excludes: []string{"192.0.2.8/29"},
		Ranges: []braidv1.IPRange{{Start: "192.0.2.0", End: "192.0.2.200"}}})
	if err != nil {
		t.Fatal(err)
	}
	m6, err := Parse(braidv1.IPPoolSpec{CIDR: "2001:db8::/64"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, words := range map[string]string{
		"198.51.100.1": "outside spec.cidr", "192.0.2.0": "network address", "192.0.2.255": "broadcast address",
		"192.0.2.1": "spec.gateway", "192.0.2.201": "spec.ranges", "192.0.2.9": "spec.excludes",
		"2001:db8::": "Subnet-Router anycast",
	} {
		a := netip.MustParseAddr(addr)
		mm := m
		if a.Is6() {
			mm = m6
		}
		if got := mm.Unusable(a); !strings.Contains(got, words) {
			t.Errorf("Unusable(%s) = %q, want it to say %q", addr, got, words)
		}
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct {
		name  string
		spec  braidv1.IPPoolSpec
		field string
		words string
	}{
		{"bad cidr", braidv1.IPPoolSpec{CIDR: "192.0.2.0/33"}, "spec.cidr", "exactly one CIDR"},
		{"two cidrs", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24,198.51.100.0/24"}, "spec.cidr", "exactly one CIDR"},
		{"host bits", braidv1.IPPoolSpec{CIDR: "192.0.2.7/24"}, "spec.cidr", "192.0.2.0/24"},
		{"inverted v6 range", braidv1.IPPoolSpec{CIDR: "2001:db8:1::/64",
			Ranges: []braidv1.IPRange{{Start: "2001:db8:1::1:0", End: "2001:db8:1::ff"}}}, "spec.ranges[0]", "inverted range"},
		{"inverted v4 range", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24",
			Ranges: []braidv1.IPRange{{Start: "192.0.2.10", End: "192.0.2.9"}}}, "spec.ranges[0]", "inverted range"},
		{"overlapping ranges", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24",
			Ranges: []braidv1.IPRange{{Start: "192.0.2.10", End: "192.0.2.20"}, {Start: "192.0.2.20", End: "192.0.2.30"}}}, "spec.ranges[1]", "overlaps spec.ranges[0]"},
		{"range end outside", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24",
			Ranges: []braidv1.IPRange{{Start: "192.0.2.10", End: "198.51.100.1"}}}, "spec.ranges[0].end", "inside cidr"},
		{"exclude other family", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Excludes: []string{"2001:db8::/64"}}, "spec.excludes[0]", "same IP family"},
		{"exclude wider than pool", braidv1.IPPoolSpec{CIDR: "192.0.2.0/25", Excludes: []string{"192.0.2.0/24"}}, "spec.excludes[0]", "inside cidr"},
		{"gateway outside", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Gateway: "198.51.100.1"}, "spec.gateway", "inside cidr"},
		{"gateway other family", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Gateway: "2001:db8::1"}, "spec.gateway", "same IP family"},
		{"route gw other family", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24",
			Routes: []braidv1.Route{{Dst: "0.0.0.0/0", GW: "2001:db8::1"}}}, "spec.routes[0].gw", "same IP family"},
		// IPv4-mapped IPv6 prefixes and addresses come out of every CNI result as IPv4 (Go's net.IP formatting):
		// ::ffff:0:0/96 would become an IPv4 default route.
		{"v4-mapped cidr", braidv1.IPPoolSpec{CIDR: "::ffff:192.0.2.0/120"}, "spec.cidr", "IPv4-mapped"},
		{"v4-mapped route", braidv1.IPPoolSpec{CIDR: "2001:db8::/64",
			Routes: []braidv1.Route{{Dst: "::ffff:0:0/96"}}}, "spec.routes[0].dst", "IPv4-mapped"},
		{"v4-mapped route gw", braidv1.IPPoolSpec{CIDR: "2001:db8::/64",
			Routes: []braidv1.Route{{Dst: "2001:db8:1::/64", GW: "::ffff:192.0.2.1"}}}, "spec.routes[0].gw", "IPv4-mapped"},
		{"route gw with zone", braidv1.IPPoolSpec{CIDR: "2001:db8::/64",
			Routes: []braidv1.Route{{Dst: "2001:db8:1::/64", GW: "fe80::1%eth0"}}}, "spec.routes[0].gw", "zone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.words) {
				t.Fatalf("want an error naming %s with %q, got %v", tc.field, tc.words, err)
			}
		})
	}
}

func TestParseModel(t *testing.T) {
	m, err := Parse(braidv1.IPPoolSpec{
		CIDR:     "2001:db8:1::/64",
		Excludes: []string{"2001:db8:1::/120", "2001:db8:1::5", "2001:db8:1::1:0/112"},
		Routes:   []braidv1.Route{{Dst: "::/0"}, {Dst: "2001:db8:2::/64", GW: "2001:db8:1::fe"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Model{
		Prefix:   netip.MustParsePrefix("2001:db8:1::/64"),
		Ranges:   []Range{{Start: netip.MustParseAddr("2001:db8:1::1"), End: netip.MustParseAddr("2001:db8:1::ffff:ffff:ffff:ffff")}},
		Excludes: []netip.Prefix{netip.MustParsePrefix("2001:db8:1::/120"), netip.MustParsePrefix("2001:db8:1::1:0/112")},
		Routes: []Route{{Dst: netip.MustParsePrefix("::/0")},
			{Dst: netip.MustParsePrefix("2001:db8:2::/64"), GW: netip.MustParseAddr("2001:db8:1::fe")}},
		Cooldown: DefaultCooldown,
		Policy:   braidv1.ReleaseOnPodDeletion,
	}
	if diff := cmp.Diff(want, m, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("model (-want +got):\n%s", diff)
	}
}
