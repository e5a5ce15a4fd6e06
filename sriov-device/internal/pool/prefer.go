package pool

import (
	"cmp"
	"slices"
)

// Prefer picks size devices among available for one container, keeping mustInclude, so that they share one
// PF and one NUMA node whenever possible:
//
//  1. the devices that must be included; if their NUMA node can supply the rest, only that node is considered;
//  2. then, if one PF can supply the rest, that PF: the PF of the must-include devices first, then a PF on
//     their NUMA node, then the PF with the fewest free devices that suffices (so large PFs stay whole);
//  3. otherwise, if one NUMA node can supply the rest, that node (theirs first, then the smallest that
//     suffices), taking PFs with the most free devices first;
//  4. otherwise, nodes and PFs with the most free devices first.
//
// Within a PF devices go in address order. devices describes the pool; IDs it does not know are taken last.
// The result has min(size, len(mustInclude ∪ available)) IDs.
func Prefer(devices []Device, available, mustInclude []string, size int) []string {
	known := make(map[string]Device, len(devices))
	for _, d := range devices {
		known[d.Address] = d
	}
	chosen := make([]string, 0, size)
	taken := map[string]bool{}
	for _, id := range mustInclude {
		if !taken[id] {
			taken[id] = true
			chosen = append(chosen, id)
		}
	}
	need := size - len(chosen)
	if need <= 0 {
		return chosen
	}

	// Group the free devices by NUMA node and PF.
	var unknown []string
	groups := map[groupKey][]string{}
	for _, id := range available {
		if taken[id] {
			continue
		}
		taken[id] = true
		d, ok := known[id]
		if !ok {
			unknown = append(unknown, id)
			continue
		}
		k := keyOf(d)
		groups[k] = append(groups[k], id)
	}
	for k := range groups {
		slices.Sort(groups[k])
	}
	slices.Sort(unknown)

	// The PF and NUMA node the must-include devices agree on, if they do.
	wantPF, wantNUMA := "", noNUMA
	for i, id := range mustInclude {
		d, ok := known[id]
		if !ok {
			wantPF, wantNUMA = "", noNUMA
			break
		}
		k := keyOf(d)
		if i == 0 {
			wantPF, wantNUMA = k.pf, k.numa
			continue
		}
		if k.pf != wantPF {
			wantPF = ""
		}
		if k.numa != wantNUMA {
			wantNUMA = noNUMA
		}
	}

	perNode := map[int]int{}
	for k, ids := range groups {
		perNode[k.numa] += len(ids)
	}
	// When the must-include devices' node can supply the rest, stay on it, even if a PF elsewhere could too.
	stayOnNode := wantNUMA != noNUMA && perNode[wantNUMA] >= need
	keys := make([]groupKey, 0, len(groups))
	for k := range groups {
		if !stayOnNode || k.numa == wantNUMA {
			keys = append(keys, k)
		}
	}

	// 2. One PF.
	var fits []groupKey
	for _, k := range keys {
		if len(groups[k]) >= need {
			fits = append(fits, k)
		}
	}
	if len(fits) > 0 {
		slices.SortFunc(fits, func(a, b groupKey) int {
			return cmp.Or(
				preferTrue(a.pf == wantPF && wantPF != "", b.pf == wantPF && wantPF != ""),
				preferTrue(a.numa == wantNUMA && wantNUMA != noNUMA, b.numa == wantNUMA && wantNUMA != noNUMA),
				cmp.Compare(len(groups[a]), len(groups[b])),
				a.compare(b))
		})
		return append(chosen, groups[fits[0]][:need]...)
	}

	// 3. One NUMA node, 4. anything: order the nodes, then the PFs within a node, and take in that order.
	nodeFits := func(n int) bool { return perNode[n] >= need && n != noNUMA }
	slices.SortFunc(keys, func(a, b groupKey) int {
		if a.numa != b.numa {
			return cmp.Or(
				preferTrue(nodeFits(a.numa) && a.numa == wantNUMA, nodeFits(b.numa) && b.numa == wantNUMA),
				preferTrue(nodeFits(a.numa), nodeFits(b.numa)),
				// Among fitting nodes the smallest, among the others the largest.
				smallerIfBoth(nodeFits(a.numa) && nodeFits(b.numa), perNode[a.numa], perNode[b.numa]),
				cmp.Compare(a.numa, b.numa))
		}
		return cmp.Or(
			preferTrue(a.pf == wantPF && wantPF != "", b.pf == wantPF && wantPF != ""),
			cmp.Compare(len(groups[b]), len(groups[a])),
			a.compare(b))
	})
	for _, k := range keys {
		for _, id := range groups[k] {
			if need == 0 {
				return chosen
			}
			chosen = append(chosen, id)
			need--
		}
	}
	for _, id := range unknown {
		if need == 0 {
			break
		}
		chosen = append(chosen, id)
		need--
	}
	return chosen
}

// noNUMA stands for "no NUMA node known or agreed on".
const noNUMA = -1

type groupKey struct {
	numa int
	pf   string
}

// keyOf groups a VF under its PF; a function that is not a VF is a group of its own.
func keyOf(d Device) groupKey {
	pf := d.PF
	if pf == "" {
		pf = d.Address
	}
	numa := d.NUMANode
	if numa < 0 {
		numa = noNUMA
	}
	return groupKey{numa: numa, pf: pf}
}

func (k groupKey) compare(o groupKey) int {
	return cmp.Or(cmp.Compare(k.numa, o.numa), cmp.Compare(k.pf, o.pf))
}

// preferTrue orders true before false.
func preferTrue(a, b bool) int {
	switch {
	case a && !b:
		return -1
	case b && !a:
		return 1
	}
	return 0
}

// smallerIfBoth orders the smaller first when both is set, the larger first otherwise.
func smallerIfBoth(both bool, a, b int) int {
	if both {
		return cmp.Compare(a, b)
	}
	return cmp.Compare(b, a)
}
