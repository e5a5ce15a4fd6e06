package pool_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
	"github.com/braid-cni/braid/sriov-device/internal/pool"
)

func standardInventory(t *testing.T) (*pcitree.Tree, discover.Inventory) {
	t.Helper()
	root := t.TempDir()
	tree, err := pcitree.Standard(root)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := discover.NewScanner(root).Scan()
	if err != nil {
		t.Fatal(err)
	}
	return tree, inv
}

func parse(t *testing.T, s string) config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(s), "")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

type summary struct {
	Address string
	Healthy bool
	Vhost   bool
}

func summarize(p pool.Pool) []summary {
	var out []summary
	for _, d := range p.Devices {
		out = append(out, summary{d.Address, d.Healthy, d.NeedVhostNet})
	}
	return out
}

func TestBuildOnTheStandardFixture(t *testing.T) {
	_, inv := standardInventory(t)
	cfg := parse(t, `{"resourceList": [
		{"resourceName": "x710_vfio", "selectors": {"drivers": ["vfio-pci"], "needVhostNet": true}},
		{"resourceName": "x710", "selectors": {"vendors": ["8086"], "devices": ["154c"]}},
		{"resourceName": "cx6_low", "selectors": [{"pfNames": ["ens2f0#0-1"]}, {"pciAddresses": ["0000:5e:00.5"]}]},
		{"resourceName": "intel_pf", "selectors": {"vendors": ["8086"], "devices": ["1572"]}},
		{"resourceName": "nothing", "selectors": {"vendors": ["1af4"]}}
	]}`)
	pools, conflicts := pool.Build(cfg, inv)
	vfs, cx := pcitree.X710VFs(), pcitree.CX6VFs()
	want := map[string][]summary{
		"braid.dev/x710_vfio": {{pcitree.X710VFIO, true, true}},
		// VF 3 is in x710_vfio, which comes first.
		"braid.dev/x710":    {{vfs[0], true, false}, {vfs[1], true, false}, {vfs[2], true, false}},
		"braid.dev/cx6_low": {{cx[0], true, false}, {cx[1], true, false}, {cx[3], true, false}},
		// The X710 PF has VFs and is never offered; the port without VFs and the recovered function are.
		"braid.dev/intel_pf": {{pcitree.X710NoVFs, true, false}, {pcitree.BrokenModalias, true, false}},
		"braid.dev/nothing":  nil,
	}
	if len(pools) != len(want) {
		t.Fatalf("got %d pools, want %d", len(pools), len(want))
	}
	for i, p := range pools {
		if p.Resource.Name != cfg.Resources[i].Name {
			t.Errorf("pool %d is %s, want config order (%s)", i, p.Resource.Name, cfg.Resources[i].Name)
		}
		if diff := cmp.Diff(want[p.Resource.FullName()], summarize(p)); diff != "" {
			t.Errorf("pool %s (-want +got):\n%s", p.Resource.FullName(), diff)
		}
	}
	wantConflicts := []pool.Conflict{{Address: pcitree.X710VFIO, Kept: "braid.dev/x710_vfio", Dropped: "braid.dev/x710"}}
	if diff := cmp.Diff(wantConflicts, conflicts); diff != "" {
		t.Errorf("conflicts (-want +got):\n%s", diff)
	}
}

func TestBuildHealthFollowsTheFixture(t *testing.T) {
	tree, _ := standardInventory(t)
	// The X710's port goes down; VF 2's own netdev is brought up without carrier; the vfio node of VF 3 goes.
	if err := tree.SetLink(pcitree.X710PF, pcitree.X710PFNet, true, false); err != nil {
		t.Fatal(err)
	}
	cx := pcitree.CX6VFs()
	if err := tree.SetLink(cx[2], "ens2f0v2", true, false); err != nil {
		t.Fatal(err)
	}
	inv, err := discover.NewScanner(tree.Root).Scan()
	if err != nil {
		t.Fatal(err)
	}
	cfg := parse(t, `{"resourceList": [{"resourceName": "all", "selectors": {"vendors": ["8086", "15b3"]}}]}`)
	pools, _ := pool.Build(cfg, inv)
	reasons := map[string]string{}
	for _, d := range pools[0].Devices {
		if !d.Healthy {
			reasons[d.Address] = d.Reason
		}
	}
	vfs := pcitree.X710VFs()
	want := map[string]string{
		vfs[0]: "PF link ens1f0 is down", vfs[1]: "PF link ens1f0 is down", vfs[2]: "PF link ens1f0 is down",
		vfs[3]: "PF link ens1f0 is down",
		cx[2]:  "link ens2f0v2 is up without carrier (down)",
	}
	if diff := cmp.Diff(want, reasons); diff != "" {
		t.Errorf("unhealthy devices (-want +got):\n%s", diff)
	}
}

func TestEligibleAndHealth(t *testing.T) {
	up := discover.Link{Name: "p0", Type: "ether", OperState: "up", AdminUp: true, Carrier: true}
	vf := discover.Device{Address: "0000:3b:02.0", ClassID: "02", Driver: "iavf", PF: "0000:3b:00.0", VFIndex: 0,
		PFNetdev: "p0", PFLink: up, Link: discover.Link{Name: "v0", OperState: "down"}}
	with := func(f func(*discover.Device)) discover.Device {
		d := vf
		f(&d)
		return d
	}
	tests := []struct {
		name              string
		d                 discover.Device
		eligible, healthy bool
		why               string
	}{
		{"idle VF on a running PF", vf, true, true, ""},
		{"VF in use on the host, running", with(func(d *discover.Device) {
			d.Link = discover.Link{Name: "v0", OperState: "up", AdminUp: true, Carrier: true}
		}), true, true, ""},
		{"PF link down", with(func(d *discover.Device) { d.PFLink.OperState, d.PFLink.Carrier = "down", false }),
			true, false, "PF link p0 is down"},
		{"PF link unknown with carrier counts as running", with(func(d *discover.Device) { d.PFLink.OperState = "unknown" }),
			true, true, ""},
		{"PF link unknown without carrier", with(func(d *discover.Device) {
			d.PFLink.OperState, d.PFLink.Carrier = "unknown", false
		}), true, false, "PF link p0 is unknown"},
		{"VF admin up without carrier", with(func(d *discover.Device) {
			d.Link = discover.Link{Name: "v0", OperState: "lowerlayerdown", AdminUp: true}
		}), true, false, "link v0 is up without carrier (lowerlayerdown)"},
		{"vfio-pci with its node", with(func(d *discover.Device) {
			d.Driver, d.Link, d.IOMMUGroup, d.VFIODevicePresent = "vfio-pci", discover.Link{}, "42", true
		}), true, true, ""},
		{"vfio-pci without its node", with(func(d *discover.Device) {
			d.Driver, d.Link, d.IOMMUGroup = "vfio-pci", discover.Link{}, "42"
		}), true, false, "/dev/vfio/42 is missing"},
		{"vfio-pci without IOMMU", with(func(d *discover.Device) { d.Driver, d.Link = "vfio-pci", discover.Link{} }),
			true, false, "bound to vfio-pci without an IOMMU group"},
		{"VF whose PF has no netdev: its own link decides", with(func(d *discover.Device) {
			d.PFNetdev, d.PFLink = "", discover.Link{}
		}), true, true, ""},
		{"not a network function", with(func(d *discover.Device) { d.ClassID = "01" }), false, true, ""},
		{"unbound", with(func(d *discover.Device) { d.Driver = "" }), false, true, ""},
		{"PF with VFs", with(func(d *discover.Device) { d.PF, d.TotalVFs, d.NumVFs = "", 64, 4 }), false, true, ""},
		{"PF without VFs", with(func(d *discover.Device) { d.PF, d.TotalVFs, d.VFIndex = "", 64, -1 }), true, true, ""},
		{"host uplink", with(func(d *discover.Device) { d.CarriesDefaultRoute = true }), false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eligible, _ := pool.Eligible(tt.d)
			healthy, why := pool.Health(tt.d)
			if eligible != tt.eligible || healthy != tt.healthy || why != tt.why {
				t.Errorf("eligible %v healthy %v (%q), want %v %v (%q)", eligible, healthy, why, tt.eligible,
					tt.healthy, tt.why)
			}
		})
	}
}

func TestConflictMessage(t *testing.T) {
	c := pool.Conflict{Address: "0000:3b:02.0", Kept: "braid.dev/a", Dropped: "braid.dev/b"}
	if !strings.Contains(c.String(), "stays in braid.dev/a only") {
		t.Errorf("Conflict.String() = %q", c.String())
	}
}
