// Package pool groups discovered functions into the resources of a config and judges their health. It is pure:
// a config and an inventory in, pools out; and it picks preferred allocations (one PF, one NUMA node).
package pool

import (
	"fmt"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/selector"
)

// Device is a function offered by a resource.
type Device struct {
	discover.Device
	// Healthy is what the kubelet is told; Reason says why not.
	Healthy bool
	Reason  string
	// NeedVhostNet is set when the selector that picked the function asked for vhost-net.
	NeedVhostNet bool
}

// Pool is one resource and the functions it offers, sorted by address.
type Pool struct {
	Resource config.Resource
	Devices  []Device
}

// Conflict records a function that two resources select: it stays in the first one only, since the kubelet
// would otherwise count and hand it out twice.
type Conflict struct {
	Address string
	Kept    string
	Dropped string
}

func (c Conflict) String() string {
	return fmt.Sprintf("pci device %s is selected by %s and %s; it stays in %s only", c.Address, c.Kept, c.Dropped,
		c.Kept)
}

// Build returns one pool per resource of cfg, in config order.
func Build(cfg config.Config, inv discover.Inventory) ([]Pool, []Conflict) {
	pools := make([]Pool, len(cfg.Resources))
	owner := map[string]string{}
	var conflicts []Conflict
	for i, r := range cfg.Resources {
		pools[i].Resource = r
		for _, d := range inv.Devices {
			if ok, _ := Eligible(d); !ok {
				continue
			}
			set := selector.First(r.Selectors, d)
			if set < 0 {
				continue
			}
			if kept, taken := owner[d.Address]; taken {
				conflicts = append(conflicts, Conflict{Address: d.Address, Kept: kept, Dropped: r.FullName()})
				continue
			}
			owner[d.Address] = r.FullName()
			healthy, reason := Health(d)
			pools[i].Devices = append(pools[i].Devices, Device{Device: d, Healthy: healthy, Reason: reason,
				NeedVhostNet: r.Selectors[set].NeedVhostNet})
		}
	}
	return pools, conflicts
}

// Eligible says whether a function may be offered to pods at all, whatever the selectors say: a network
// function bound to a driver, that is not a PF with VFs enabled (its VFs are offered instead) and does not
// carry the host's default route.
func Eligible(d discover.Device) (bool, string) {
	switch {
	case !d.IsNetwork():
		return false, "not a network controller"
	case d.Driver == "":
		return false, "not bound to a driver"
	case d.NumVFs > 0:
		return false, "a PF with VFs enabled"
	case d.CarriesDefaultRoute:
		return false, "carries the host's default route"
	}
	return true, ""
}

// Health judges a function from what the scan saw; it is present, since it was found. A function is unhealthy
// when:
//   - it is bound to vfio-pci and /dev/vfio/<group> is missing (a container could not open it);
//   - it is a VF whose PF link is not running (the physical port is down: no VF can pass traffic);
//   - its own netdev is administratively up but not running (no carrier).
//
// A VF netdev that is administratively down is idle, which is how VFs wait on a host until a pod takes one,
// so it does not make the VF unhealthy.
func Health(d discover.Device) (bool, string) {
	if d.Driver == "vfio-pci" && !d.VFIODevicePresent {
		if d.IOMMUGroup == "" {
			return false, "bound to vfio-pci without an IOMMU group"
		}
		return false, fmt.Sprintf("/dev/vfio/%s is missing", d.IOMMUGroup)
	}
	if d.IsVF() && d.PFLink.Exists() && !d.PFLink.Running() {
		return false, fmt.Sprintf("PF link %s is %s", d.PFLink.Name, d.PFLink.OperState)
	}
	if d.Link.Exists() && d.Link.AdminUp && !d.Link.Running() {
		return false, fmt.Sprintf("link %s is up without carrier (%s)", d.Link.Name, d.Link.OperState)
	}
	return true, ""
}
