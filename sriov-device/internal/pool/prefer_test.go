package pool_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pool"
)

// preferPool: PF A (4 VFs) and PF B (2 VFs) on NUMA node 0, PF C (6 VFs) on node 1, and a plain NIC n on node
// 1. VF IDs are a0..a3, b0..b1, c0..c5 (their PCI addresses, shortened for the table).
func preferPool() []pool.Device {
	var devs []pool.Device
	add := func(prefix, pf string, n, numa int) {
		for i := range n {
			devs = append(devs, pool.Device{Device: discover.Device{Address: fmt.Sprintf("%s%d", prefix, i),
				PF: pf, VFIndex: i, NUMANode: numa}, Healthy: true})
		}
	}
	add("a", "0000:3b:00.0", 4, 0)
	add("b", "0000:3b:00.1", 2, 0)
	add("c", "0000:5e:00.0", 6, 1)
	devs = append(devs, pool.Device{Device: discover.Device{Address: "n", NUMANode: 1, VFIndex: -1}, Healthy: true})
	return devs
}

func TestPrefer(t *testing.T) {
	all := []string{"a0", "a1", "a2", "a3", "b0", "b1", "c0", "c1", "c2", "c3", "c4", "c5"}
	tests := []struct {
		name      string
		available []string
		must      []string
		size      int
		want      []string
	}{
		{"one: the smallest group that fits (the plain NIC)", append([]string{"n"}, all...), nil, 1, []string{"n"}},
		{"two: the smallest PF that fits", all, nil, 2, []string{"b0", "b1"}},
		{"three: PF A, keeping C whole", all, nil, 3, []string{"a0", "a1", "a2"}},
		{"five: only C fits", all, nil, 5, []string{"c0", "c1", "c2", "c3", "c4"}},
		{"must-include VF stays with its PF", all, []string{"a2"}, 3, []string{"a2", "a0", "a1"}},
		{"must-include on C", all, []string{"c5"}, 2, []string{"c5", "c0"}},
		{"its PF cannot supply the rest: stay on its NUMA node rather than take PF C", all, []string{"a0"}, 5,
			[]string{"a0", "a1", "a2", "a3", "b0"}},
		{"its node cannot supply the rest: one other PF", all, []string{"b0"}, 7,
			[]string{"b0", "c0", "c1", "c2", "c3", "c4", "c5"}},
		{"no PF fits: one node, largest PF first", []string{"a0", "a1", "b0", "b1", "c0"}, nil, 3,
			[]string{"a0", "a1", "b0"}},
		{"no node fits: largest node first", all, nil, 8,
			[]string{"a0", "a1", "a2", "a3", "b0", "b1", "c0", "c1"}},
		{"no node fits, node 1 larger", []string{"a0", "b0", "c0", "c1", "c2"}, nil, 4,
			[]string{"c0", "c1", "c2", "a0"}},
		{"everything", all, nil, 12, []string{"a0", "a1", "a2", "a3", "b0", "b1", "c0", "c1", "c2", "c3", "c4", "c5"}},
		{"more than available", []string{"a0", "c0"}, nil, 3, []string{"a0", "c0"}},
		{"unknown IDs last", []string{"zz", "a0"}, nil, 2, []string{"a0", "zz"}},
		{"must-include fills the request", all, []string{"c1", "a1"}, 2, []string{"c1", "a1"}},
		{"duplicates are taken once", []string{"a0", "a0", "a1"}, []string{"a1", "a1"}, 2, []string{"a1", "a0"}},
		{"must-include on two nodes: no node preference", all, []string{"a0", "c0"}, 4,
			[]string{"a0", "c0", "b0", "b1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := pool.Prefer(preferPool(), tt.available, tt.must, tt.size)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Prefer (-want +got):\n%s", diff)
			}
		})
	}
}
