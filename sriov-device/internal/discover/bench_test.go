package discover_test

import (
	"testing"

	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
)

// BenchmarkScan1024VFs scans 16 X710 ports with 64 VFs each.
func BenchmarkScan1024VFs(b *testing.B) {
	tree, vfs, err := pcitree.Scale(b.TempDir(), 16, 64)
	if err != nil {
		b.Fatal(err)
	}
	s := discover.NewScanner(tree.Root)
	b.ResetTimer()
	for b.Loop() {
		inv, err := s.Scan()
		if err != nil {
			b.Fatal(err)
		}
		if len(inv.Devices) != len(vfs)+16 {
			b.Fatalf("found %d functions", len(inv.Devices))
		}
	}
}
