package pool

import "net/netip"

// Shared returns the lowest address both pools may hand out, if any: two pools of one network that share an
// address would give it to two pods, since each guards only its own FloatingIP names.
func (m *Model) Shared(o *Model) (netip.Addr, bool) {
	if m.Prefix.Addr().Is4() != o.Prefix.Addr().Is4() {
		return netip.Addr{}, false
	}
	// Within the intersection of two ranges the blocked addresses (excludes, gateways, the CIDRs' reserved
	// ends) form intervals, so the lowest address usable in both is the intersection's start or the one right
	// after a blocked interval.
	var after []netip.Addr
	for _, p := range []*Model{m, o} {
		for _, x := range p.Excludes {
			after = append(after, Last(x).Next())
		}
		if p.Gateway.IsValid() {
			after = append(after, p.Gateway.Next())
		}
		after = append(after, p.Prefix.Masked().Addr().Next(), usable(p.Prefix).Start)
	}
	var best netip.Addr
	for _, a := range m.Ranges {
		for _, b := range o.Ranges {
			in := clip(a, b)
			if !in.Start.IsValid() {
				continue
			}
			for _, c := range append([]netip.Addr{in.Start}, after...) {
				if c.IsValid() && in.Contains(c) && m.Usable(c) && o.Usable(c) && (!best.IsValid() || c.Less(best)) {
					best = c
				}
			}
		}
	}
	return best, best.IsValid()
}
