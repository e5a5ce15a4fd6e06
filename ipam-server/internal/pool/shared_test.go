package pool

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

func TestShared(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b braidv1.IPPoolSpec
		want string // "" when no address is shared
	}{
		{"same CIDR", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}, braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}, "192.0.2.1"},
		{"nested", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}, braidv1.IPPoolSpec{CIDR: "192.0.2.128/25"}, "192.0.2.129"},
		{"one CIDR split into ranges", r("192.0.2.0/24", "192.0.2.10", "192.0.2.49"), r("192.0.2.0/24", "192.0.2.50", "192.0.2.99"), ""},
		{"ranges touching", r("192.0.2.0/24", "192.0.2.10", "192.0.2.50"), r("192.0.2.0/24", "192.0.2.50", "192.0.2.99"), "192.0.2.50"},
		{"apart by excludes", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Excludes: []string{"192.0.2.64/26"}}, r("192.0.2.0/24", "192.0.2.64", "192.0.2.127"), ""},
		{"excludes leave one", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Excludes: []string{"192.0.2.64/27"}}, r("192.0.2.0/24", "192.0.2.64", "192.0.2.127"), "192.0.2.96"},
		{"only the gateway in common", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Gateway: "192.0.2.1"}, r("192.0.2.0/24", "192.0.2.1", "192.0.2.1"), ""},
		{"only a broadcast in common", braidv1.IPPoolSpec{CIDR: "192.0.2.0/25"}, r("192.0.2.0/24", "192.0.2.127", "192.0.2.127"), ""},
		{"disjoint", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}, braidv1.IPPoolSpec{CIDR: "198.51.100.0/24"}, ""},
		{"families differ", braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}, braidv1.IPPoolSpec{CIDR: "2001:db8::/64"}, ""},
		{"IPv6", braidv1.IPPoolSpec{CIDR: "2001:db8::/64"}, braidv1.IPPoolSpec{CIDR: "2001:db8::/120", Excludes: []string{"2001:db8::/121"}}, "2001:db8::80"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := mustParse(t, tc.a), mustParse(t, tc.b)
			for _, pair := range [][2]*Model{{&a, &b}, {&b, &a}} {
				got, ok := pair[0].Shared(pair[1])
				if (tc.want == "") == ok || (ok && got.String() != tc.want) {
					t.Fatalf("Shared = %s %v, want %q", got, ok, tc.want)
				}
			}
		})
	}
}

// Shared agrees with checking every address of small random pools one by one.
func TestSharedAgreesWithBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func() braidv1.IPPoolSpec {
		bits := 26 + rng.IntN(5)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(4) * 64)}), bits).Masked()
		s := braidv1.IPPoolSpec{CIDR: p.String()}
		n := 1 << (32 - bits)
		at := func(i int) string { return netip.AddrFrom4([4]byte{192, 0, 2, p.Addr().As4()[3] + byte(i)}).String() }
		if rng.IntN(2) == 0 {
			lo := rng.IntN(n)
			s.Ranges = []braidv1.IPRange{{Start: at(lo), End: at(lo + rng.IntN(n-lo))}}
		}
		if rng.IntN(2) == 0 {
			s.Excludes = []string{at(rng.IntN(n))}
		}
		if rng.IntN(3) == 0 {
			s.Gateway = at(rng.IntN(n))
		}
		return s
	}
	for range 3000 {
		sa, sb := random(), random()
		a, errA := Parse(sa)
		b, errB := Parse(sb)
		if errA != nil || errB != nil {
			continue
		}
		var want netip.Addr
		for x := netip.MustParseAddr("192.0.2.0"); x.Is4() && x.As4()[2] == 2; x = x.Next() {
			if a.Usable(x) && b.Usable(x) {
				want = x
				break
			}
		}
		got, ok := a.Shared(&b)
		if ok != want.IsValid() || got != want {
			t.Fatalf("%+v and %+v: Shared = %s %v, brute force says %s", sa, sb, got, ok, want)
		}
	}
}

func r(cidr, start, end string) braidv1.IPPoolSpec {
	return braidv1.IPPoolSpec{CIDR: cidr, Ranges: []braidv1.IPRange{{Start: start, End: end}}}
}

func mustParse(t *testing.T, s braidv1.IPPoolSpec) Model {
	t.Helper()
	m, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
