// Package pool turns an IPPool spec into a validated model of which addresses may be handed out.
// It is pure: no I/O, no clock, no logging. The API server's schema refuses most bad specs already; Parse
// checks everything again (a pool may predate a schema change) and also what CEL cannot, such as an inverted
// IPv6 range, and its errors name the field the way the API server does.
package pool

import (
	"fmt"
	"math/big"
	"net/netip"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// DefaultCooldown is the reuse cool-down when the spec leaves it empty (the CRD defaults it too).
const DefaultCooldown = 60 * time.Second

// Range is an inclusive range of addresses.
type Range struct {
	Start, End netip.Addr
}

// Contains reports whether a lies in the range.
func (r Range) Contains(a netip.Addr) bool {
	return r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// Route is a route handed to pods.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr // invalid means the pool's gateway
}

// Model is a validated pool.
type Model struct {
	Prefix   netip.Prefix
	Ranges   []Range        // never empty: the whole usable part of Prefix when the spec gives none
	Excludes []netip.Prefix // single addresses are /32 or /128 prefixes
	Gateway  netip.Addr     // invalid when the spec gives none
	Routes   []Route
	DNS      *braidv1.DNS // nil when the spec gives none
	Cooldown time.Duration
	Policy   braidv1.ReleasePolicy
}

// Parse validates spec and builds its model. Errors name fields under spec (spec.ranges[0].end, ...).
func Parse(spec braidv1.IPPoolSpec) (Model, error) {
	path := field.NewPath("spec")
	var errs field.ErrorList
	m := Model{Policy: spec.ReleasePolicy, Cooldown: DefaultCooldown, DNS: spec.DNS.DeepCopy()}
	switch m.Policy {
	case "":
		m.Policy = braidv1.ReleaseOnPodDeletion
	case braidv1.ReleaseOnPodDeletion, braidv1.ReleaseKeepForStatefulSet, braidv1.ReleaseNever:
	default: // it would go into every FloatingIP of the pool, whose schema refuses it
		errs = append(errs, field.NotSupported(path.Child("releasePolicy"), spec.ReleasePolicy,
			[]braidv1.ReleasePolicy{braidv1.ReleaseOnPodDeletion, braidv1.ReleaseKeepForStatefulSet, braidv1.ReleaseNever}))
	}
	if spec.ReuseCooldown != nil {
		if spec.ReuseCooldown.Duration < 0 {
			errs = append(errs, field.Invalid(path.Child("reuseCooldown"), spec.ReuseCooldown.Duration.String(), "must not be negative"))
		}
		m.Cooldown = spec.ReuseCooldown.Duration
	}

	prefix, err := netip.ParsePrefix(spec.CIDR)
	switch {
	case err != nil:
		return Model{}, field.Invalid(path.Child("cidr"), spec.CIDR, "must be exactly one CIDR, e.g. 192.0.2.0/24 or 2001:db8:1::/64")
	case prefix.Addr().Is4In6():
		return Model{}, field.Invalid(path.Child("cidr"), spec.CIDR, notMapped)
	case prefix.Masked() != prefix:
		return Model{}, field.Invalid(path.Child("cidr"), spec.CIDR, "must be a network address with no host bits set, e.g. "+prefix.Masked().String())
	}
	m.Prefix = prefix

	inPool := func(p *field.Path, s string) (netip.Addr, bool) {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(p, s, "must be an IP address"))
		case a.Is4() != prefix.Addr().Is4():
			errs = append(errs, field.Invalid(p, s, "must be of the same IP family as cidr "+spec.CIDR))
		case !prefix.Contains(a):
			errs = append(errs, field.Invalid(p, s, "must lie inside cidr "+spec.CIDR))
		default:
			return a, true
		}
		return netip.Addr{}, false
	}

	for i, r := range spec.Ranges {
		p := path.Child("ranges").Index(i)
		start, okStart := inPool(p.Child("start"), r.Start)
		end, okEnd := inPool(p.Child("end"), r.End)
		if okStart && okEnd {
			if start.Compare(end) > 0 {
				errs = append(errs, field.Invalid(p, r.Start+"-"+r.End, "start must not be greater than end (inverted range)"))
				continue
			}
			m.Ranges = append(m.Ranges, Range{Start: start, End: end})
		}
	}
	for i := range m.Ranges {
		for j := range i {
			if m.Ranges[i].Start.Compare(m.Ranges[j].End) <= 0 && m.Ranges[j].Start.Compare(m.Ranges[i].End) <= 0 {
				errs = append(errs, field.Invalid(path.Child("ranges").Index(i), spec.Ranges[i].Start+"-"+spec.Ranges[i].End,
					fmt.Sprintf("overlaps spec.ranges[%d]; ranges must not overlap", j)))
			}
		}
	}
	if len(spec.Ranges) == 0 {
		m.Ranges = []Range{usable(prefix)}
	}

	for i, x := range spec.Excludes {
		p := path.Child("excludes").Index(i)
		if xp, err := netip.ParsePrefix(x); err == nil {
			switch {
			case xp.Addr().Is4() != prefix.Addr().Is4():
				errs = append(errs, field.Invalid(p, x, "must be of the same IP family as cidr "+spec.CIDR))
			case xp.Bits() < prefix.Bits() || !prefix.Contains(xp.Addr()):
				errs = append(errs, field.Invalid(p, x, "must lie inside cidr "+spec.CIDR))
			default:
				m.Excludes = append(m.Excludes, xp.Masked())
			}
			continue
		}
		if a, ok := inPool(p, x); ok {
			m.Excludes = append(m.Excludes, netip.PrefixFrom(a, a.BitLen()))
		}
	}

	m.Excludes = disjoint(m.Excludes)

	if spec.Gateway != "" {
		if gw, ok := inPool(path.Child("gateway"), spec.Gateway); ok {
			m.Gateway = gw
		}
	}

	for i, r := range spec.Routes {
		p := path.Child("routes").Index(i)
		dst, err := netip.ParsePrefix(r.Dst)
		switch {
		case err != nil || dst.Addr().Is4() != prefix.Addr().Is4():
			errs = append(errs, field.Invalid(p.Child("dst"), r.Dst, "must be a CIDR of the same IP family as cidr "+spec.CIDR))
			continue
		case dst.Addr().Is4In6():
			errs = append(errs, field.Invalid(p.Child("dst"), r.Dst, notMapped))
			continue
		}
		route := Route{Dst: dst.Masked()}
		if r.GW != "" {
			gw, err := netip.ParseAddr(r.GW)
			switch {
			case err != nil || gw.Is4() != prefix.Addr().Is4():
				errs = append(errs, field.Invalid(p.Child("gw"), r.GW, "must be an IP address of the same IP family as cidr "+spec.CIDR))
				continue
			case gw.Is4In6():
				errs = append(errs, field.Invalid(p.Child("gw"), r.GW, notMapped))
				continue
			case gw.Zone() != "":
				errs = append(errs, field.Invalid(p.Child("gw"), r.GW, "must not carry a zone (%"+gw.Zone()+"): a CNI result has no place for it"))
				continue
			}
			route.GW = gw
		}
		m.Routes = append(m.Routes, route)
	}
	return m, errs.ToAggregate()
}

// notMapped refuses an IPv4-mapped IPv6 prefix or address: CNI results carry Go's net.IP, which prints it as
// IPv4, so ::ffff:0:0/96 would reach the pod as the IPv4 default route 0.0.0.0/0.
const notMapped = "must not be IPv4-mapped (::ffff:a.b.c.d): a CNI result turns it into IPv4; write IPv4 in an IPv4 pool"

// disjoint drops every prefix that another one contains. Two prefixes are either disjoint or nested, so what
// is left never overlaps, and Size can subtract each one once.
func disjoint(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for i, p := range ps {
		covered := false
		for j, q := range ps {
			if i != j && q.Bits() <= p.Bits() && q.Contains(p.Addr()) && (q.Bits() < p.Bits() || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// usable is the part of prefix that may hold hosts: IPv4 drops the network and broadcast addresses and IPv6
// the Subnet-Router anycast address, except on /31 and /127 point-to-point links (RFC 3021, RFC 6164) and
// single-address /32 and /128 prefixes, where every address is usable.
func usable(prefix netip.Prefix) Range {
	first, last := prefix.Addr(), Last(prefix)
	hostBits := prefix.Addr().BitLen() - prefix.Bits()
	if hostBits >= 2 {
		first = first.Next()
		if prefix.Addr().Is4() {
			last = last.Prev()
		}
	}
	return Range{Start: first, End: last}
}

// Last is the highest address of prefix.
func Last(prefix netip.Prefix) netip.Addr {
	b := prefix.Masked().Addr().AsSlice()
	for i := prefix.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Usable reports whether the pool may ever hand out a: inside a range, not excluded, not the gateway, and
// not the network, broadcast or Subnet-Router anycast address of the CIDR.
func (m *Model) Usable(a netip.Addr) bool {
	if !m.Prefix.Contains(a) || a == m.Gateway || !usable(m.Prefix).Contains(a) {
		return false
	}
	inRange := false
	for _, r := range m.Ranges {
		if r.Contains(a) {
			inRange = true
			break
		}
	}
	if !inRange {
		return false
	}
	for _, x := range m.Excludes {
		if x.Contains(a) {
			return false
		}
	}
	return true
}

// Unusable says why the pool may never hand out a, naming the spec field that decides it; "" when Usable.
func (m *Model) Unusable(a netip.Addr) string {
	hosts := usable(m.Prefix)
	switch {
	case !m.Prefix.Contains(a):
		return "it is outside spec.cidr " + m.Prefix.String()
	case a.Less(hosts.Start) && a.Is4():
		return "it is the network address of spec.cidr " + m.Prefix.String()
	case a.Less(hosts.Start):
		return "it is the Subnet-Router anycast address of spec.cidr " + m.Prefix.String()
	case hosts.End.Less(a):
		return "it is the broadcast address of spec.cidr " + m.Prefix.String()
	case a == m.Gateway:
		return "it is the pool's spec.gateway"
	}
	inRange := false
	for _, r := range m.Ranges {
		inRange = inRange || r.Contains(a)
	}
	if !inRange {
		return "it is outside the pool's spec.ranges"
	}
	for _, x := range m.Excludes {
		if x.Contains(a) {
			return "spec.excludes holds it back (" + x.String() + ")"
		}
	}
	return ""
}

// Size counts the addresses the pool can ever hand out (IPv6 pools can exceed 64 bits).
func (m *Model) Size() *big.Int {
	total := new(big.Int)
	one := big.NewInt(1)
	bounds := usable(m.Prefix)
	for _, r := range m.Ranges {
		r = clip(r, bounds)
		if !r.Start.IsValid() {
			continue
		}
		total.Add(total, new(big.Int).Add(new(big.Int).Sub(toInt(r.End), toInt(r.Start)), one))
		for _, x := range m.Excludes {
			xr := clip(Range{Start: x.Addr(), End: Last(x)}, r)
			if xr.Start.IsValid() {
				total.Sub(total, new(big.Int).Add(new(big.Int).Sub(toInt(xr.End), toInt(xr.Start)), one))
			}
		}
		if m.Gateway.IsValid() && r.Contains(m.Gateway) && !m.excluded(m.Gateway) {
			total.Sub(total, one)
		}
	}
	return total
}

func (m *Model) excluded(a netip.Addr) bool {
	for _, x := range m.Excludes {
		if x.Contains(a) {
			return true
		}
	}
	return false
}

// clip returns the part of r inside bounds, or a zero Range when they do not meet.
func clip(r, bounds Range) Range {
	if r.Start.Compare(bounds.Start) < 0 {
		r.Start = bounds.Start
	}
	if r.End.Compare(bounds.End) > 0 {
		r.End = bounds.End
	}
	if r.Start.Compare(r.End) > 0 {
		return Range{}
	}
	return r
}

func toInt(a netip.Addr) *big.Int {
	return new(big.Int).SetBytes(a.AsSlice())
}
