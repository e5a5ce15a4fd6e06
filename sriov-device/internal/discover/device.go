// Package discover finds the PCI network functions of a host: SR-IOV physical functions (PFs), their virtual
// functions (VFs) and plain NICs, with what the device plugin needs to pick, judge and hand them out (driver,
// netdev names, link type and state, NUMA node, IOMMU group).
//
// Everything is read under a root directory: "/" on a host, a fake sysfs tree in tests. PCI enumeration goes
// through ghw (ghw.PCI with ghw.WithChroot(root)); the SR-IOV, netdev and IOMMU details ghw does not report are
// read from sysfs under the same root. The result is plain data that the pure packages (selector, pool) consume.
package discover

import (
	"fmt"
	"strings"
)

// ClassNetwork is the PCI base class of network controllers.
const ClassNetwork = "02"

// Device is one PCI function as the host shows it at the time of the scan.
type Device struct {
	// Address is the full PCI address, e.g. "0000:3b:02.0".
	Address string
	// VendorID and DeviceID are lowercase hex without "0x", e.g. "8086" and "154c".
	VendorID string
	DeviceID string
	// ClassID is the PCI base class, lowercase hex, e.g. "02" for network controllers.
	ClassID string
	// VendorName and ProductName come from pci.ids through ghw; empty when the database does not know them.
	VendorName  string
	ProductName string
	// Driver is the name of the bound kernel driver, empty when unbound.
	Driver string
	// NUMANode is the node the function is attached to, -1 when the platform does not say.
	NUMANode int
	// IOMMUGroup is the group number as a string, empty without an IOMMU.
	IOMMUGroup string
	// VFIODevicePresent says whether /dev/vfio/<IOMMUGroup> exists under the root (only looked at for vfio-pci).
	VFIODevicePresent bool

	// Netdevs are the kernel network interfaces of this function (its net/ directory), sorted.
	Netdevs []string
	// Link is the state of the first netdev; zero when there is none.
	Link Link

	// TotalVFs and NumVFs are sriov_totalvfs and sriov_numvfs; both zero for a function that is not a PF.
	TotalVFs int
	NumVFs   int
	// VFs are the addresses of the enabled VFs of a PF, indexed by VF number (virtfnN).
	VFs []string

	// PF is the address of the physical function of a VF, empty otherwise.
	PF string
	// VFIndex is N in the PF's virtfnN link that names this VF; -1 for anything that is not a VF.
	VFIndex int
	// PFNetdev is the first netdev of the PF of a VF, empty when the PF has none.
	PFNetdev string
	// PFLink is the state of PFNetdev; zero when there is none.
	PFLink Link

	// CarriesDefaultRoute says whether one of Netdevs holds the host's default route (IPv4 or IPv6): such a
	// function is the node's own uplink and is never offered to pods.
	CarriesDefaultRoute bool
}

// IsVF reports whether the function is an SR-IOV virtual function.
func (d Device) IsVF() bool { return d.PF != "" }

// IsNetwork reports whether the function is a network controller.
func (d Device) IsNetwork() bool { return d.ClassID == ClassNetwork }

// LinkType is the link type of the function: its own netdev's, or for a VF without one (e.g. bound to vfio-pci)
// its PF's. Empty when neither has a netdev.
func (d Device) LinkType() string {
	if d.Link.Type != "" {
		return d.Link.Type
	}
	return d.PFLink.Type
}

// Link is what sysfs says about one network interface.
type Link struct {
	// Name is the interface name.
	Name string
	// Type is the link type named as iproute2 does ("ether", "infiniband", ...), from net/<if>/type.
	Type string
	// OperState is net/<if>/operstate ("up", "down", "unknown", "lowerlayerdown", ...).
	OperState string
	// AdminUp says whether IFF_UP is set in net/<if>/flags.
	AdminUp bool
	// Carrier says whether the link has a carrier: true with operstate "up" (which implies it), false with
	// "down"-like states, and net/<if>/carrier otherwise.
	Carrier bool
}

// Exists reports whether the link was found.
func (l Link) Exists() bool { return l.Name != "" }

// Running reports whether the link passes traffic: operationally up, or in the "unknown" state that drivers
// without operstate support report, with a carrier.
func (l Link) Running() bool {
	return l.OperState == "up" || (l.OperState == "unknown" && l.Carrier)
}

// Inventory is the result of one scan.
type Inventory struct {
	// Devices are all PCI functions found, sorted by address.
	Devices []Device
	// Problems are functions that could not be described completely; each names the function. A problem with
	// one function never hides the others.
	Problems []Problem
	// Degraded is set when ghw failed as a whole and every function was read from sysfs alone (names from
	// pci.ids are then missing, nothing else).
	Degraded error
}

// Problem records a PCI function that discovery could not describe from ghw, and whether it was recovered
// from sysfs or left out.
type Problem struct {
	Address string
	// Skipped is true when the function is missing from Inventory.Devices.
	Skipped bool
	Err     error
}

func (p Problem) Error() string {
	outcome := "recovered from sysfs"
	if p.Skipped {
		outcome = "skipped"
	}
	return fmt.Sprintf("pci device %s (%s): %v", p.Address, outcome, p.Err)
}

func (p Problem) Unwrap() error { return p.Err }

// Lookup returns the device at a PCI address.
func (inv Inventory) Lookup(address string) (Device, bool) {
	// Devices is sorted, but a linear search is fast enough for the few calls outside hot paths.
	for _, d := range inv.Devices {
		if d.Address == address {
			return d, true
		}
	}
	return Device{}, false
}

// LinkTypeName converts the content of net/<if>/type (an ARPHRD_* number) to the name iproute2 prints for it,
// for the types a NIC can have; other numbers come back as "arphrd-<n>".
func LinkTypeName(arphrd string) string {
	switch arphrd = strings.TrimSpace(arphrd); arphrd {
	case "":
		return ""
	case "1":
		return "ether"
	case "24":
		return "ieee1394"
	case "32":
		return "infiniband"
	case "512":
		return "ppp"
	case "772":
		return "loopback"
	case "65534":
		return "none"
	default:
		return "arphrd-" + arphrd
	}
}

// KnownLinkType reports whether name is a link type that LinkTypeName returns for a known ARPHRD number.
func KnownLinkType(name string) bool {
	switch name {
	case "ether", "ieee1394", "infiniband", "ppp", "loopback", "none":
		return true
	}
	return false
}
