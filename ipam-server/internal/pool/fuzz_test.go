package pool

import (
	"errors"
	"math/big"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// specField are the field paths an IPPool spec error may name.
var specField = regexp.MustCompile(`^spec\.(?:cidr|gateway|releasePolicy|reuseCooldown|ranges\[\d+\](?:\.start|\.end)?|` +
	`excludes\[\d+\]|routes\[\d+\]\.(?:dst|gw))$`)

// countBits is the most host bits of a pool whose addresses the fuzz body counts one by one.
const countBits = 10

// FuzzParse builds IPPool specs from arbitrary text (ranges "a-b,c-d", excludes "x,y", routes "dst>gw,dst")
// and checks Parse: every rejection is a list of field errors under spec; every accepted model only ever
// hands out addresses inside the CIDR, inside a range, not excluded, not the gateway, and never the network or
// broadcast address of an IPv4 CIDR (nor the Subnet-Router anycast address of an IPv6 one) where those
// exist, and Size counts exactly those addresses. Seed corpus: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add("192.0.2.0/24", "192.0.2.1", "192.0.2.1-192.0.2.20,192.0.2.100-192.0.2.109", "192.0.2.16/30,192.0.2.17,192.0.2.105", "0.0.0.0/0", int64(60), "")
	f.Add("192.0.2.0/29", "", "192.0.2.0-192.0.2.7", "", "", int64(-1), "Never")
	f.Add("198.51.100.0/31", "", "", "", "", int64(0), "KeepForStatefulSet")
	f.Add("203.0.113.9/32", "203.0.113.9", "", "", "", int64(0), "")
	f.Add("2001:db8:1::/64", "", "", "2001:db8:1::/120,2001:db8:1::5,2001:db8:1::1:0/112", "::/0,2001:db8:2::/64>2001:db8:1::fe", int64(0), "")
	f.Add("2001:db8::/127", "", "", "", "", int64(0), "")
	f.Add("2001:db8:1::/120", "2001:db8:1::1", "2001:db8:1::0-2001:db8:1::ff", "2001:db8:1::80/121", "", int64(0), "OnPodDeletion")
	f.Add("192.0.2.0/33", "", "", "", "", int64(0), "")
	f.Add("192.0.2.7/24", "", "", "", "", int64(0), "")
	f.Add("2001:db8:1::/64", "", "2001:db8:1::1:0-2001:db8:1::ff", "", "", int64(0), "")
	f.Add("192.0.2.0/24", "198.51.100.1", "192.0.2.10-192.0.2.20,192.0.2.20-192.0.2.30", "2001:db8::/64", "0.0.0.0/0>2001:db8::1", int64(0), "Sometimes")
	f.Fuzz(func(t *testing.T, cidr, gateway, ranges, excludes, routes string, cooldownSeconds int64, policy string) {
		spec := braidv1.IPPoolSpec{CIDR: cidr, Gateway: gateway, ReleasePolicy: braidv1.ReleasePolicy(policy)}
		for _, r := range split(ranges) {
			start, end, _ := strings.Cut(r, "-")
			spec.Ranges = append(spec.Ranges, braidv1.IPRange{Start: start, End: end})
		}
		spec.Excludes = split(excludes)
		for _, r := range split(routes) {
			dst, gw, _ := strings.Cut(r, ">")
			spec.Routes = append(spec.Routes, braidv1.Route{Dst: dst, GW: gw})
		}
		if cooldownSeconds != 0 {
			spec.ReuseCooldown = &metav1.Duration{Duration: time.Duration(cooldownSeconds % (1 << 33) * int64(time.Second))}
		}
		m, err := Parse(spec)
		if err != nil {
			requireSpecFieldErrors(t, spec, err)
			return
		}
		checkModel(t, spec, m)
	})
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// requireSpecFieldErrors fails unless err is one *field.Error, or an aggregate of them, each naming a field
// of the spec and saying what is wrong.
func requireSpecFieldErrors(t *testing.T, spec braidv1.IPPoolSpec, err error) {
	t.Helper()
	errs := []error{err}
	var agg utilerrors.Aggregate
	if errors.As(err, &agg) {
		errs = agg.Errors()
	}
	for _, e := range errs {
		var fe *field.Error
		if !errors.As(e, &fe) || !specField.MatchString(fe.Field) || fe.ErrorBody() == "" {
			t.Fatalf("Parse(%+v) error %q does not name a field of the spec", spec, e)
		}
	}
}

// checkModel asserts what an accepted model promises.
func checkModel(t *testing.T, spec braidv1.IPPoolSpec, m Model) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("Parse(%+v) accepted a model that "+format, append([]any{spec}, args...)...)
	}
	if p, err := netip.ParsePrefix(spec.CIDR); err != nil || m.Prefix != p || m.Prefix.Masked() != m.Prefix {
		fail("has prefix %s", m.Prefix)
	}
	v4 := m.Prefix.Addr().Is4()
	if len(m.Ranges) == 0 {
		fail("has no range")
	}
	for _, r := range m.Ranges {
		if !m.Prefix.Contains(r.Start) || !m.Prefix.Contains(r.End) || r.Start.Compare(r.End) > 0 {
			fail("has the range %s-%s", r.Start, r.End)
		}
	}
	for i, x := range m.Excludes {
		if x.Addr().Is4() != v4 || x.Bits() < m.Prefix.Bits() || !m.Prefix.Contains(x.Addr()) || x.Masked() != x {
			fail("has the exclude %s", x)
		}
		for _, y := range m.Excludes[:i] {
			if x.Overlaps(y) {
				fail("has the overlapping excludes %s and %s", x, y)
			}
		}
	}
	if m.Gateway.IsValid() && !m.Prefix.Contains(m.Gateway) {
		fail("has the gateway %s outside the CIDR", m.Gateway)
	}
	for _, r := range m.Routes {
		if r.Dst.Addr().Is4() != v4 || (r.GW.IsValid() && r.GW.Is4() != v4) {
			fail("has the route %+v of another family", r)
		}
	}
	if m.Cooldown < 0 || (m.Policy != braidv1.ReleaseOnPodDeletion && m.Policy != braidv1.ReleaseKeepForStatefulSet && m.Policy != braidv1.ReleaseNever) {
		fail("has cooldown %s and policy %q", m.Cooldown, m.Policy)
	}

	hostBits := m.Prefix.Addr().BitLen() - m.Prefix.Bits()
	network, last := m.Prefix.Addr(), Last(m.Prefix)
	if hostBits >= 2 && m.Usable(network) {
		fail("hands out the network (or Subnet-Router anycast) address %s", network)
	}
	if v4 && hostBits >= 2 && m.Usable(last) {
		fail("hands out the broadcast address %s", last)
	}
	if hostBits <= countBits { // small enough to count: Size must be exactly the usable addresses
		n := 0
		for a := network; a.IsValid() && m.Prefix.Contains(a); a = a.Next() {
			if m.Usable(a) {
				checkUsable(t, spec, &m, a)
				n++
			}
		}
		if m.Size().Cmp(big.NewInt(int64(n))) != 0 {
			fail("has Size %s but %d usable addresses", m.Size(), n)
		}
		return
	}
	// Too big to count: probe the addresses around every boundary the spec draws.
	probes := []netip.Addr{network, network.Next(), last, last.Prev(), m.Gateway}
	for _, r := range m.Ranges {
		probes = append(probes, r.Start, r.Start.Prev(), r.End, r.End.Next())
	}
	for _, x := range m.Excludes {
		probes = append(probes, x.Addr(), x.Addr().Prev(), Last(x), Last(x).Next())
	}
	for _, a := range probes {
		if a.IsValid() && m.Usable(a) {
			checkUsable(t, spec, &m, a)
		}
	}
	if all := new(big.Int).Lsh(big.NewInt(1), uint(hostBits)); m.Size().Sign() < 0 || m.Size().Cmp(all) > 0 {
		fail("has Size %s for a /%d", m.Size(), m.Prefix.Bits())
	}
}

// checkUsable asserts that a, which the model says it may hand out, is inside the CIDR and a range, and is
// neither excluded nor the gateway.
func checkUsable(t *testing.T, spec braidv1.IPPoolSpec, m *Model, a netip.Addr) {
	t.Helper()
	inRange := false
	for _, r := range m.Ranges {
		inRange = inRange || r.Contains(a)
	}
	excluded := false
	for _, x := range m.Excludes {
		excluded = excluded || x.Contains(a)
	}
	if !m.Prefix.Contains(a) || !inRange || excluded || a == m.Gateway {
		t.Fatalf("Parse(%+v) accepted a model that hands out %s (in range %v, excluded %v)", spec, a, inRange, excluded)
	}
}
