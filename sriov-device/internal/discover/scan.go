package discover

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/jaypipes/ghw"
	ghwpci "github.com/jaypipes/ghw/pkg/pci"
)

// Scanner enumerates the PCI functions under a root directory. It is safe for concurrent use.
//
// ghw describes what each function is (IDs, class, names from pci.ids); that never changes while a function
// stays at its address with the same modalias, so the Scanner remembers it and asks ghw again only about
// functions that appear or change. Everything that does change (driver, netdevs, link state, VFs) is read at
// every scan.
type Scanner struct {
	root string

	mu sync.Mutex
	// pci is ghw's PCI view, with its PCI ID database (1.3 MB of pci.ids on a host) parsed once.
	pci *ghw.PCIInfo
	// known is what ghw, or the sysfs fallback, said about each present function.
	known map[string]identity
}

// identity is what a function is.
type identity struct {
	// modalias is the modalias content the identity was read for; another content means another function.
	modalias                string
	vendor, device, class   string
	vendorName, productName string
	numa                    int
	// recovered is why ghw could not describe the function when its identity came from its sysfs files.
	recovered error
	// unreadable is set when nothing could describe the function: it is left out.
	unreadable error
}

// NewScanner returns a Scanner reading <root>/sys (and <root>/usr/share/hwdata/pci.ids through ghw,
// <root>/dev/vfio, <root>/proc/net for the default route). Production passes "/".
func NewScanner(root string) *Scanner {
	return &Scanner{root: root, known: map[string]identity{}}
}

// ErrNoPCIBus is returned when <root>/sys/bus/pci/devices cannot be listed at all.
var ErrNoPCIBus = errors.New("no pci bus in sysfs")

// Scan enumerates every PCI function once.
//
// A function ghw cannot describe — a malformed or unreadable modalias makes some ghw versions skip that
// function and others drop the whole list — is read from its own vendor, device and class files instead and
// reported as a Problem, so that one broken function never hides the others. A failure of ghw as a whole (no
// pci.ids, say) degrades every function to sysfs reads and is reported in Inventory.Degraded. Only an
// unreadable PCI bus is an error.
func (s *Scanner) Scan() (Inventory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sys := sysfs{root: s.root}
	addrs, err := sys.pciAddresses()
	if err != nil {
		return Inventory{}, fmt.Errorf("%w: %w", ErrNoPCIBus, err)
	}

	var inv Inventory
	modaliases := sys.modaliases(addrs)
	var stale []string
	for _, addr := range addrs {
		if id, ok := s.known[addr]; !ok || id.modalias != modaliases[addr] {
			stale = append(stale, addr)
		}
	}
	// ghw describes the stale functions while the volatile state of every function is read: they are
	// independent, and on a cold start ghw's pass is the longer one.
	type described struct {
		ids      map[string]identity
		degraded error
	}
	describing := make(chan described, 1)
	if len(stale) > 0 {
		go func() {
			ids, degraded := s.describe(sys, stale, modaliases)
			describing <- described{ids, degraded}
		}()
	} else {
		describing <- described{}
	}
	devs := make([]Device, len(addrs))
	gone := make([]error, len(addrs))
	for i, addr := range addrs {
		devs[i] = Device{Address: addr, NUMANode: -1, VFIndex: -1}
		gone[i] = sys.details(&devs[i])
	}
	fresh := <-describing
	inv.Degraded = fresh.degraded

	present := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		present[a] = true
	}
	for a := range s.known {
		if !present[a] {
			delete(s.known, a)
		}
	}

	inv.Devices = make([]Device, 0, len(addrs))
	for i, addr := range addrs {
		id, ok := fresh.ids[addr]
		if !ok {
			id = s.known[addr]
		}
		if id.unreadable != nil {
			inv.Problems = append(inv.Problems, Problem{Address: addr, Skipped: true, Err: id.unreadable})
			continue
		}
		if gone[i] != nil {
			inv.Problems = append(inv.Problems, Problem{Address: addr, Skipped: true, Err: gone[i]})
			continue
		}
		if id.recovered != nil {
			inv.Problems = append(inv.Problems, Problem{Address: addr, Err: id.recovered})
		}
		dev := devs[i]
		dev.VendorID, dev.DeviceID, dev.ClassID = id.vendor, id.device, id.class
		dev.VendorName, dev.ProductName, dev.NUMANode = id.vendorName, id.productName, id.numa
		inv.Devices = append(inv.Devices, dev)
	}

	link(inv.Devices)
	routes := sys.defaultRouteNetdevs()
	for i := range inv.Devices {
		for _, nd := range inv.Devices[i].Netdevs {
			if routes[nd] {
				inv.Devices[i].CarriesDefaultRoute = true
			}
		}
	}
	return inv, nil
}

// describe asks ghw what the stale functions are, reading the identity of those it cannot describe from
// their own files. The first call enumerates the whole bus (ghw.PCI); later ones describe the stale
// functions one by one with the database already loaded. It returns the identities and, when ghw failed as a
// whole, why.
func (s *Scanner) describe(sys sysfs, stale []string, modaliases map[string]string) (map[string]identity, error) {
	byAddr := map[string]*ghwpci.Device{}
	var degraded error
	if s.pci == nil {
		info, err := ghw.PCI(ghw.WithChroot(s.root), ghw.WithNullAlerter())
		if err != nil {
			degraded = fmt.Errorf("ghw pci enumeration under %s failed, every function read from sysfs: %w", s.root, err)
		} else {
			for _, d := range info.Devices {
				if d != nil {
					byAddr[strings.ToLower(d.Address)] = d
				}
			}
			// GetDevice answers from Devices when it holds the address; empty it so that it reads afresh.
			info.Devices = nil
			s.pci = info
		}
	} else {
		for _, addr := range stale {
			if d := s.pci.GetDevice(addr); d != nil {
				byAddr[addr] = d
			}
		}
	}

	out := make(map[string]identity, len(stale))
	for _, addr := range stale {
		id := identity{modalias: modaliases[addr], numa: -1}
		if g, ok := byAddr[addr]; ok && g.Vendor != nil && g.Product != nil && g.Class != nil {
			id.vendor = strings.ToLower(g.Vendor.ID)
			id.device = strings.ToLower(g.Product.ID)
			id.class = strings.ToLower(g.Class.ID)
			id.vendorName = knownName(g.Vendor.Name)
			id.productName = knownName(g.Product.Name)
			if g.Node != nil {
				id.numa = g.Node.ID
			}
		} else {
			vendor, device, class, err := sys.identity(addr)
			if err != nil {
				id.unreadable = err
				out[addr] = id
				continue
			}
			id.vendor, id.device, id.class = vendor, device, class
			if degraded == nil {
				id.recovered = modaliasProblem(modaliases[addr])
			}
		}
		if id.numa < 0 {
			id.numa = sys.numaNode(addr)
		}
		out[addr] = id
	}
	if degraded == nil {
		for a, id := range out {
			s.known[a] = id
		}
	}
	return out, degraded
}

// modaliasProblem explains why ghw could not describe a function.
func modaliasProblem(modalias string) error {
	if modalias == "" {
		return errors.New("ghw could not describe it: modalias is missing or unreadable")
	}
	return fmt.Errorf("ghw could not describe it: modalias %q is malformed", modalias)
}

// link fills in the VF side of every PF-VF pair: VF index, PF netdev and PF link state. devs is sorted by
// address.
func link(devs []Device) {
	index := make(map[string]int, len(devs))
	for i := range devs {
		index[devs[i].Address] = i
	}
	for i := range devs {
		pf := &devs[i]
		for n, vfAddr := range pf.VFs {
			j, ok := index[vfAddr]
			if !ok || vfAddr == "" {
				continue
			}
			vf := &devs[j]
			if vf.PF != pf.Address {
				// A virtfn link that the VF's physfn does not confirm is stale; trust the VF.
				continue
			}
			vf.VFIndex = n
			if pf.Link.Exists() {
				vf.PFNetdev = pf.Link.Name
				vf.PFLink = pf.Link
			}
		}
	}
}

// knownName drops ghw's placeholder for names pci.ids does not have.
func knownName(name string) string {
	if name == "unknown" {
		return ""
	}
	return name
}

// join is filepath.Join for paths under the root.
func join(root string, elem ...string) string {
	return filepath.Join(append([]string{root}, elem...)...)
}
