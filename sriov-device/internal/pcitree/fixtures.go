package pcitree

import (
	"fmt"
)

// Addresses and names of the standard fixture (see Standard).
const (
	// RootPortA and RootPortB are PCIe root ports on NUMA nodes 0 and 1.
	RootPortA = "0000:00:02.0"
	RootPortB = "0000:00:03.0"

	// X710PF is port 0 of an Intel X710 (i40e, netdev ens1f0, link up) with 4 VFs; VFs 0-2 run iavf with netdevs
	// ens1f0v0..2, VF 3 (X710VFIO) is bound to vfio-pci.
	X710PF    = "0000:3b:00.0"
	X710PFNet = "ens1f0"
	X710VFIO  = "0000:3b:02.3"
	// X710NoVFs is port 1 of the same X710: SR-IOV capable, no VFs enabled (netdev ens1f1).
	X710NoVFs    = "0000:3b:00.1"
	X710NoVFsNet = "ens1f1"

	// CX6PF is a Mellanox ConnectX-6 PF (mlx5_core, netdev ens2f0) on NUMA node 1 with 4 VFs (mlx5_core,
	// netdevs ens2f0v0..3).
	CX6PF    = "0000:5e:00.0"
	CX6PFNet = "ens2f0"

	// BrokenModalias is an X710 without SR-IOV (netdev ens3f0) whose modalias is truncated: ghw cannot describe
	// it, its vendor/device/class files can.
	BrokenModalias    = "0000:af:00.0"
	BrokenModaliasNet = "ens3f0"
	// Unreadable is a function with a garbage modalias and no vendor file: nothing can describe it.
	Unreadable = "0000:00:1f.6"

	IntelVendor    = "8086"
	X710Device     = "1572"
	X710VFDevice   = "154c"
	MellanoxVendor = "15b3"
	CX6Device      = "101b"
	CX6VFDevice    = "101c"
)

// X710VFs returns the VF addresses of X710PF in the standard fixture, by VF index.
func X710VFs() []string {
	return []string{"0000:3b:02.0", "0000:3b:02.1", "0000:3b:02.2", "0000:3b:02.3"}
}

// CX6VFs returns the VF addresses of CX6PF in the standard fixture, by VF index.
func CX6VFs() []string {
	return []string{"0000:5e:00.2", "0000:5e:00.3", "0000:5e:00.4", "0000:5e:00.5"}
}

// Standard writes the standard fixture under root: an Intel X710 PF with iavf VFs and one VF on vfio-pci, a PF
// without VFs, a Mellanox ConnectX-6 PF with mlx5 VFs, a function with a broken modalias and one that cannot be
// read at all, on two NUMA nodes.
func Standard(root string) (*Tree, error) {
	t, err := New(root)
	if err != nil {
		return nil, err
	}
	if err := AddStandard(t); err != nil {
		return nil, err
	}
	return t, nil
}

// AddStandard adds the functions of the standard fixture to a tree.
func AddStandard(t *Tree) error {
	if err := t.AddNUMANodes(2); err != nil {
		return err
	}
	steps := []func() error{
		func() error {
			return t.AddFunction(Function{Address: RootPortA, Vendor: IntelVendor, Device: "2030", Class: "060400",
				Driver: "pcieport", NUMANode: 0, IOMMU: true})
		},
		func() error {
			return t.AddFunction(Function{Address: RootPortB, Vendor: IntelVendor, Device: "2030", Class: "060400",
				Driver: "pcieport", NUMANode: 1, IOMMU: true})
		},
		func() error {
			return t.AddPF(PF{
				Function: Function{Address: X710PF, Parent: RootPortA, Vendor: IntelVendor, Device: X710Device,
					Class: "020000", Driver: "i40e", NUMANode: 0, IOMMU: true, TotalVFs: 64,
					Netdevs: []Netdev{{Name: X710PFNet, Up: true}}},
				VFDevice: X710VFDevice, VFDriver: "iavf", VFs: X710VFs(), VFNetdevPrefix: X710PFNet + "v",
				VFIO: map[int]bool{3: true},
			})
		},
		func() error {
			return t.AddFunction(Function{Address: X710NoVFs, Parent: RootPortA, Vendor: IntelVendor,
				Device: X710Device, Class: "020000", Driver: "i40e", NUMANode: 0, IOMMU: true, TotalVFs: 64,
				Netdevs: []Netdev{{Name: X710NoVFsNet, Up: true}}})
		},
		func() error {
			return t.AddPF(PF{
				Function: Function{Address: CX6PF, Parent: RootPortB, Vendor: MellanoxVendor, Device: CX6Device,
					Class: "020000", Driver: "mlx5_core", NUMANode: 1, IOMMU: true, TotalVFs: 8,
					Netdevs: []Netdev{{Name: CX6PFNet, Up: true}}},
				VFDevice: CX6VFDevice, VFDriver: "mlx5_core", VFs: CX6VFs(), VFNetdevPrefix: CX6PFNet + "v",
			})
		},
		func() error {
			return t.AddFunction(Function{Address: BrokenModalias, Vendor: IntelVendor, Device: X710Device,
				Class: "020000", Driver: "i40e", NUMANode: 1, IOMMU: true, Modalias: "pci:v00008086d0000",
				Netdevs: []Netdev{{Name: BrokenModaliasNet, Up: true}}})
		},
		func() error {
			if err := t.AddFunction(Function{Address: Unreadable, Vendor: IntelVendor, Device: "15b8",
				Class: "020000", NUMANode: 0, Modalias: "garbage"}); err != nil {
				return err
			}
			return t.RemoveFile(Unreadable, "vendor")
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// PF describes a physical function and the VFs to create for it.
type PF struct {
	Function
	// VFDevice and VFDriver are the device ID and driver of the VFs.
	VFDevice, VFDriver string
	// VFs are the addresses of the VFs to create, by VF index.
	VFs []string
	// VFNetdevPrefix names the VF netdevs (<prefix><index>); VFs bound to vfio-pci have none.
	VFNetdevPrefix string
	// VFIO lists the VF indexes bound to vfio-pci instead of VFDriver.
	VFIO map[int]bool
}

// AddPF creates a PF and its VFs, each VF with its own IOMMU group and, unless on vfio-pci, an idle netdev
// (administratively down, as VFs are on a host until a pod uses them).
func (t *Tree) AddPF(pf PF) error {
	if err := t.AddFunction(pf.Function); err != nil {
		return err
	}
	for i, addr := range pf.VFs {
		vf := Function{Address: addr, Vendor: pf.Vendor, Device: pf.VFDevice, Class: pf.Class,
			Driver: pf.VFDriver, NUMANode: pf.NUMANode, IOMMU: true}
		if pf.VFIO[i] {
			vf.Driver = "vfio-pci"
		} else if pf.VFNetdevPrefix != "" {
			vf.Netdevs = []Netdev{{Name: fmt.Sprintf("%s%d", pf.VFNetdevPrefix, i)}}
		}
		if err := t.AddVF(pf.Address, i, vf); err != nil {
			return err
		}
	}
	return nil
}

// Scale writes a tree of X710-like PFs, two ports per card and one card per bus, with vfsPerPF iavf VFs each
// (at most 64, as on an X710), for benchmarks. Cards alternate between NUMA nodes 0 and 1. It returns the VF
// addresses.
func Scale(root string, pfs, vfsPerPF int) (*Tree, []string, error) {
	t, err := New(root)
	if err != nil {
		return nil, nil, err
	}
	vfs, err := ScaleOn(t, pfs, vfsPerPF)
	if err != nil {
		return nil, nil, err
	}
	return t, vfs, nil
}

// ScaleOn adds Scale's functions to a tree.
func ScaleOn(t *Tree, pfs, vfsPerPF int) ([]string, error) {
	if vfsPerPF < 0 || vfsPerPF > 64 || pfs < 0 || pfs > 2*0xe0 {
		return nil, fmt.Errorf("pcitree: %d PFs with %d VFs each: want at most 448 PFs and 64 VFs per PF", pfs,
			vfsPerPF)
	}
	if err := t.AddNUMANodes(2); err != nil {
		return nil, err
	}
	var all []string
	for p := range pfs {
		bus, port := 0x10+p/2, p%2
		vfs := make([]string, vfsPerPF)
		for i := range vfs {
			dev := 2 + port*8 + i/8
			vfs[i] = fmt.Sprintf("0000:%02x:%02x.%d", bus, dev, i%8)
		}
		name := fmt.Sprintf("ens%df%d", p/2+1, port)
		err := t.AddPF(PF{
			Function: Function{Address: fmt.Sprintf("0000:%02x:00.%d", bus, port), Vendor: IntelVendor,
				Device: X710Device, Class: "020000", Driver: "i40e", NUMANode: (p / 2) % 2, IOMMU: true,
				TotalVFs: 64, Netdevs: []Netdev{{Name: name, Up: true}}},
			VFDevice: X710VFDevice, VFDriver: "iavf", VFs: vfs, VFNetdevPrefix: name + "v",
		})
		if err != nil {
			return nil, err
		}
		all = append(all, vfs...)
	}
	return all, nil
}
