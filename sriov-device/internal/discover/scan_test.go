package discover_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
)

func standard(t *testing.T) (*pcitree.Tree, string) {
	t.Helper()
	root := t.TempDir()
	tree, err := pcitree.Standard(root)
	if err != nil {
		t.Fatal(err)
	}
	return tree, root
}

func scan(t *testing.T, root string) discover.Inventory {
	t.Helper()
	inv, err := discover.NewScanner(root).Scan()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func lookup(t *testing.T, inv discover.Inventory, addr string) discover.Device {
	t.Helper()
	d, ok := inv.Lookup(addr)
	if !ok {
		t.Fatalf("%s not found; have %v", addr, addresses(inv))
	}
	return d
}

func addresses(inv discover.Inventory) []string {
	var out []string
	for _, d := range inv.Devices {
		out = append(out, d.Address)
	}
	return out
}

func up(name string) discover.Link {
	return discover.Link{Name: name, Type: "ether", OperState: "up", AdminUp: true, Carrier: true}
}

// idle is a VF netdev waiting on the host: administratively down.
func idle(name string) discover.Link {
	return discover.Link{Name: name, Type: "ether", OperState: "down"}
}

func TestScanStandardFixture(t *testing.T) {
	_, root := standard(t)
	inv := scan(t, root)

	x710vfs, cx6vfs := pcitree.X710VFs(), pcitree.CX6VFs()
	want := []string{pcitree.RootPortA, pcitree.RootPortB, pcitree.X710PF, pcitree.X710NoVFs}
	want = append(want, x710vfs...)
	want = append(want, pcitree.CX6PF)
	want = append(want, cx6vfs...)
	want = append(want, pcitree.BrokenModalias)
	if diff := cmp.Diff(sorted(want), addresses(inv)); diff != "" {
		t.Errorf("functions found (-want +got):\n%s", diff)
	}
	if inv.Degraded != nil {
		t.Errorf("Degraded = %v, want nil", inv.Degraded)
	}

	tests := []struct {
		name string
		want discover.Device
	}{
		{"Intel X710 PF with 4 VFs", discover.Device{
			Address: pcitree.X710PF, VendorID: "8086", DeviceID: "1572", ClassID: "02",
			VendorName: "Intel Corporation", ProductName: "Ethernet Controller X710 for 10GbE SFP+",
			Driver: "i40e", NUMANode: 0, IOMMUGroup: "12", Netdevs: []string{"ens1f0"}, Link: up("ens1f0"),
			TotalVFs: 64, NumVFs: 4, VFs: x710vfs, VFIndex: -1,
		}},
		{"iavf VF 1 of the X710", discover.Device{
			Address: x710vfs[1], VendorID: "8086", DeviceID: "154c", ClassID: "02",
			VendorName: "Intel Corporation", ProductName: "Ethernet Virtual Function 700 Series",
			Driver: "iavf", NUMANode: 0, IOMMUGroup: "14", Netdevs: []string{"ens1f0v1"}, Link: idle("ens1f0v1"),
			PF: pcitree.X710PF, VFIndex: 1, PFNetdev: "ens1f0", PFLink: up("ens1f0"),
		}},
		{"VF 3 of the X710 on vfio-pci: no netdev, /dev/vfio/<group> present", discover.Device{
			Address: pcitree.X710VFIO, VendorID: "8086", DeviceID: "154c", ClassID: "02",
			VendorName: "Intel Corporation", ProductName: "Ethernet Virtual Function 700 Series",
			Driver: "vfio-pci", NUMANode: 0, IOMMUGroup: "16", VFIODevicePresent: true,
			PF: pcitree.X710PF, VFIndex: 3, PFNetdev: "ens1f0", PFLink: up("ens1f0"),
		}},
		{"X710 port without VFs", discover.Device{
			Address: pcitree.X710NoVFs, VendorID: "8086", DeviceID: "1572", ClassID: "02",
			VendorName: "Intel Corporation", ProductName: "Ethernet Controller X710 for 10GbE SFP+",
			Driver: "i40e", NUMANode: 0, IOMMUGroup: "17", Netdevs: []string{"ens1f1"}, Link: up("ens1f1"),
			TotalVFs: 64, VFIndex: -1,
		}},
		{"ConnectX-6 PF on NUMA node 1", discover.Device{
			Address: pcitree.CX6PF, VendorID: "15b3", DeviceID: "101b", ClassID: "02",
			VendorName: "Mellanox Technologies", ProductName: "MT28908 Family [ConnectX-6]",
			Driver: "mlx5_core", NUMANode: 1, IOMMUGroup: "18", Netdevs: []string{"ens2f0"}, Link: up("ens2f0"),
			TotalVFs: 8, NumVFs: 4, VFs: cx6vfs, VFIndex: -1,
		}},
		{"mlx5 VF 3 of the ConnectX-6", discover.Device{
			Address: cx6vfs[3], VendorID: "15b3", DeviceID: "101c", ClassID: "02",
			VendorName: "Mellanox Technologies", ProductName: "MT28908 Family [ConnectX-6 Virtual Function]",
			Driver: "mlx5_core", NUMANode: 1, IOMMUGroup: "22", Netdevs: []string{"ens2f0v3"}, Link: idle("ens2f0v3"),
			PF: pcitree.CX6PF, VFIndex: 3, PFNetdev: "ens2f0", PFLink: up("ens2f0"),
		}},
		{"broken modalias: identity from vendor/device/class, no pci.ids names", discover.Device{
			Address: pcitree.BrokenModalias, VendorID: "8086", DeviceID: "1572", ClassID: "02",
			Driver: "i40e", NUMANode: 1, IOMMUGroup: "23", Netdevs: []string{"ens3f0"}, Link: up("ens3f0"),
			VFIndex: -1,
		}},
		{"root port", discover.Device{
			Address: pcitree.RootPortB, VendorID: "8086", DeviceID: "2030", ClassID: "06",
			VendorName: "Intel Corporation", ProductName: "Sky Lake-E PCI Express Root Port A",
			Driver: "pcieport", NUMANode: 1, IOMMUGroup: "11", VFIndex: -1,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, lookup(t, inv, tt.want.Address)); diff != "" {
				t.Errorf("device (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("problems name the broken functions and hide nothing else", func(t *testing.T) {
		if len(inv.Problems) != 2 {
			t.Fatalf("problems = %v, want 2", inv.Problems)
		}
		unreadable, broken := inv.Problems[0], inv.Problems[1]
		if unreadable.Address != pcitree.Unreadable || !unreadable.Skipped ||
			!errors.Is(unreadable.Err, os.ErrNotExist) || !strings.Contains(unreadable.Error(), "vendor") {
			t.Errorf("problem 0 = %v, want %s skipped for its missing vendor file", unreadable, pcitree.Unreadable)
		}
		if broken.Address != pcitree.BrokenModalias || broken.Skipped ||
			!strings.Contains(broken.Error(), `modalias "pci:v00008086d0000" is malformed`) {
			t.Errorf("problem 1 = %v, want %s recovered, naming its modalias", broken, pcitree.BrokenModalias)
		}
	})
}

func TestScanSeesLinkChanges(t *testing.T) {
	tree, root := standard(t)
	if err := tree.SetLink(pcitree.X710PF, pcitree.X710PFNet, true, false); err != nil {
		t.Fatal(err)
	}
	vf := pcitree.X710VFs()[0]
	if err := tree.SetLink(vf, "ens1f0v0", true, true); err != nil {
		t.Fatal(err)
	}
	inv := scan(t, root)
	got := lookup(t, inv, vf)
	wantPF := discover.Link{Name: "ens1f0", Type: "ether", OperState: "down", AdminUp: true}
	if diff := cmp.Diff(wantPF, got.PFLink); diff != "" {
		t.Errorf("PF link seen from its VF (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(up("ens1f0v0"), got.Link); diff != "" {
		t.Errorf("VF link (-want +got):\n%s", diff)
	}
	if got.PFLink.Running() || !got.Link.Running() {
		t.Errorf("Running: PF %v VF %v, want false, true", got.PFLink.Running(), got.Link.Running())
	}
}

func TestScanAfterVFRemoval(t *testing.T) {
	tree, root := standard(t)
	if err := tree.RemoveVF(pcitree.CX6PF, 1); err != nil {
		t.Fatal(err)
	}
	inv := scan(t, root)
	vfs := pcitree.CX6VFs()
	if _, ok := inv.Lookup(vfs[1]); ok {
		t.Errorf("removed VF %s still found", vfs[1])
	}
	pf := lookup(t, inv, pcitree.CX6PF)
	if pf.NumVFs != 3 || !cmp.Equal(pf.VFs, []string{vfs[0], "", vfs[2], vfs[3]}) {
		t.Errorf("PF after removal: NumVFs %d, VFs %q", pf.NumVFs, pf.VFs)
	}
	if d := lookup(t, inv, vfs[3]); d.VFIndex != 3 {
		t.Errorf("VF 3 index = %d after VF 1 went away", d.VFIndex)
	}
	if len(inv.Problems) != 2 {
		t.Errorf("problems = %v, want only the fixture's two", inv.Problems)
	}
}

func TestScanWithoutPCIIDsFallsBackToSysfs(t *testing.T) {
	// pcidb also looks in $HOME/.cache/pci.ids: make sure there is none.
	t.Setenv("HOME", t.TempDir())
	_, root := standard(t)
	if err := os.Remove(filepath.Join(root, "usr/share/hwdata/pci.ids")); err != nil {
		t.Fatal(err)
	}
	inv := scan(t, root)
	if inv.Degraded == nil {
		t.Fatal("Degraded = nil, want the ghw failure")
	}
	// Every function of the fixture but the unreadable one, as with pci.ids.
	if len(inv.Devices) != 14 || len(inv.Problems) != 1 || inv.Problems[0].Address != pcitree.Unreadable {
		t.Errorf("found %d functions, want 14: %v; problems %v", len(inv.Devices), addresses(inv), inv.Problems)
	}
	vf := lookup(t, inv, pcitree.X710VFs()[2])
	if vf.VendorID != "8086" || vf.DeviceID != "154c" || vf.Driver != "iavf" || vf.PF != pcitree.X710PF ||
		vf.VFIndex != 2 || vf.ProductName != "" {
		t.Errorf("VF read from sysfs alone: %+v", vf)
	}
}

func TestScanDefaultRoute(t *testing.T) {
	tree, root := standard(t)
	if err := tree.SetDefaultRoute(pcitree.BrokenModaliasNet); err != nil {
		t.Fatal(err)
	}
	inv := scan(t, root)
	if !lookup(t, inv, pcitree.BrokenModalias).CarriesDefaultRoute {
		t.Errorf("%s carries the default route but was not marked", pcitree.BrokenModalias)
	}
	if lookup(t, inv, pcitree.X710NoVFs).CarriesDefaultRoute {
		t.Errorf("%s marked as default route", pcitree.X710NoVFs)
	}
}

func TestScanWithoutSysfs(t *testing.T) {
	_, err := discover.NewScanner(t.TempDir()).Scan()
	if !errors.Is(err, discover.ErrNoPCIBus) {
		t.Errorf("Scan of an empty root = %v, want ErrNoPCIBus", err)
	}
}

func TestLinkTypeName(t *testing.T) {
	for in, want := range map[string]string{"1\n": "ether", "32": "infiniband", "772": "loopback", "": "",
		"803": "arphrd-803"} {
		if got := discover.LinkTypeName(in); got != want {
			t.Errorf("LinkTypeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func sorted(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}

func TestRescanWithTheSameScannerSeesChanges(t *testing.T) {
	tree, root := standard(t)
	s := discover.NewScanner(root)
	if _, err := s.Scan(); err != nil {
		t.Fatal(err)
	}
	vfs := pcitree.X710VFs()
	if err := tree.Bind(vfs[0], "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	if err := tree.RemoveVF(pcitree.X710PF, 1); err != nil {
		t.Fatal(err)
	}
	inv, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	got := lookup(t, inv, vfs[0])
	if got.Driver != "vfio-pci" || len(got.Netdevs) != 0 || !got.VFIODevicePresent {
		t.Errorf("rebound VF: driver %q netdevs %v vfio node %v", got.Driver, got.Netdevs, got.VFIODevicePresent)
	}
	if got.ProductName == "" {
		t.Errorf("rescan lost the pci.ids names")
	}
	if _, ok := inv.Lookup(vfs[1]); ok {
		t.Errorf("removed VF still found on rescan")
	}
}

func TestRescanSeesAnotherFunctionAtTheSameAddress(t *testing.T) {
	tree, root := standard(t)
	s := discover.NewScanner(root)
	if _, err := s.Scan(); err != nil {
		t.Fatal(err)
	}
	// The X710 port without VFs is swapped for a ConnectX-6 between two scans.
	if err := tree.RemoveFunction(pcitree.X710NoVFs); err != nil {
		t.Fatal(err)
	}
	if err := tree.AddFunction(pcitree.Function{Address: pcitree.X710NoVFs, Parent: pcitree.RootPortA,
		Vendor: pcitree.MellanoxVendor, Device: pcitree.CX6Device, Class: "020000", Driver: "mlx5_core",
		NUMANode: 0}); err != nil {
		t.Fatal(err)
	}
	inv, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	got := lookup(t, inv, pcitree.X710NoVFs)
	if got.VendorID != "15b3" || got.DeviceID != "101b" || got.ProductName != "MT28908 Family [ConnectX-6]" ||
		got.Driver != "mlx5_core" {
		t.Errorf("swapped function: %+v", got)
	}
	// And a broken function stays reported on every scan, without hiding anything.
	if len(inv.Problems) != 2 {
		t.Errorf("problems on rescan = %v", inv.Problems)
	}
}
