// Package pcitree writes PCI sysfs trees the way the Linux kernel lays them out, for tests, benchmarks and the
// local end-to-end setup of a machine without SR-IOV hardware.
//
// A tree lives under a root directory and holds what discovery reads on a real host, at the same paths:
//
//	<root>/sys/devices/pci0000:00/<bridge>/<function>/     the function's directory (vendor, device, class,
//	                                                      modalias, numa_node, sriov_*, net/<if>/...)
//	<root>/sys/bus/pci/devices/<function>               -> ../../../devices/pci0000:00/.../<function>
//	<root>/sys/bus/pci/drivers/<driver>/                  one directory per driver; <function>/driver links here
//	<root>/sys/kernel/iommu_groups/<n>/devices/<function> and <function>/iommu_group -> .../iommu_groups/<n>
//	<root>/sys/class/net/<if>                           -> ../../devices/.../<function>/net/<if>
//	<root>/dev/vfio/vfio, <root>/dev/vfio/<group>         for functions bound to vfio-pci
//	<root>/usr/share/hwdata/pci.ids                       the PCI ID database ghw reads through its chroot
//
// All links are relative, so a tree can be moved, copied or bind-mounted. A tree is fake hardware, nothing more:
// the code that reads it is the code that reads /sys on a host.
package pcitree

import (
	_ "embed" // pci.ids is embedded so that every tree carries the database ghw needs
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// pciIDs is a trimmed pci.ids (the vendors and devices the fixtures use, and every class).
//
//go:embed testdata/pci.ids
var pciIDs []byte

// PCIIDs returns the PCI ID database every tree carries.
func PCIIDs() []byte { return append([]byte(nil), pciIDs...) }

// ARPHRD link types for Netdev.Type.
const (
	LinkEther      = 1
	LinkInfiniband = 32
)

// Tree is a PCI sysfs tree under Root.
type Tree struct {
	// Root is absolute.
	Root string
	// AbsoluteLinks makes the links absolute paths under Root instead of relative ones, so that
	// <root>/sys/bus/pci/devices can be bind-mounted over a host's /sys/bus/pci/devices on its own and still
	// resolve into the tree. Set it before adding functions.
	AbsoluteLinks bool
	// nextGroup is the next free IOMMU group number.
	nextGroup int
}

// New creates an empty tree under root (which may already exist): the sysfs skeleton, /dev/vfio/vfio and
// pci.ids.
func New(root string) (*Tree, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("pcitree: %w", err)
	}
	t := &Tree{Root: root, nextGroup: 10}
	for _, dir := range []string{
		"sys/devices/pci0000:00", "sys/bus/pci/devices", "sys/bus/pci/drivers", "sys/kernel/iommu_groups",
		"sys/class/net", "sys/devices/system/node", "dev/vfio", "usr/share/hwdata",
	} {
		if err := os.MkdirAll(t.path(dir), 0o755); err != nil {
			return nil, fmt.Errorf("pcitree: %w", err)
		}
	}
	if err := os.WriteFile(t.path("usr/share/hwdata/pci.ids"), pciIDs, 0o644); err != nil {
		return nil, fmt.Errorf("pcitree: %w", err)
	}
	if err := os.WriteFile(t.path("dev/vfio/vfio"), nil, 0o644); err != nil {
		return nil, fmt.Errorf("pcitree: %w", err)
	}
	return t, nil
}

// Function describes one PCI function to create.
type Function struct {
	// Address is the full PCI address, e.g. "0000:3b:00.0".
	Address string
	// Parent is the address of the upstream bridge, empty for a function on the root bus.
	Parent string
	// Vendor, Device are 4 hex digits; Class is 6 ("020000" for Ethernet).
	Vendor, Device, Class string
	// Driver is the bound driver, empty for none.
	Driver string
	// NUMANode is written to numa_node (-1 as the kernel does on non-NUMA machines).
	NUMANode int
	// IOMMU gives the function its own IOMMU group.
	IOMMU bool
	// Netdevs are its network interfaces.
	Netdevs []Netdev
	// TotalVFs makes the function a PF (sriov_totalvfs); its VFs are added with AddVF.
	TotalVFs int
	// Modalias overrides the modalias file; "" derives it from the IDs as the kernel does.
	Modalias string
}

// Netdev is one network interface of a function.
type Netdev struct {
	Name string
	// Host makes the entry a link to the host's own interface of that name (/sys/class/net/<Name>), e.g. a
	// veth end standing in for a VF: its state is then the real one, and a CNI plugin that looks the VF's
	// netdev up in sysfs finds a real interface. The other fields are ignored.
	Host bool
	// Type is the ARPHRD number (LinkEther, LinkInfiniband); 0 means LinkEther.
	Type int
	// Up sets IFF_UP, operstate "up" and carrier 1; otherwise the link is down with no carrier.
	Up bool
	// MAC is written to address; "" derives one from the name.
	MAC string
}

// AddFunction creates a function with its links, driver, IOMMU group and netdevs.
func (t *Tree) AddFunction(f Function) error {
	if f.Address == "" || f.Vendor == "" || f.Device == "" || f.Class == "" {
		return fmt.Errorf("pcitree: function %q: address, vendor, device and class are required", f.Address)
	}
	dir, err := t.functionDir(f.Address, f.Parent)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	modalias := f.Modalias
	if modalias == "" {
		// pci:v<vendor>d<device>sv<subvendor>sd<subdevice>bc<class>sc<subclass>i<progif>, as the kernel writes it.
		modalias = fmt.Sprintf("pci:v0000%sd0000%ssv0000%ssd00000000bc%ssc%si%s",
			strings.ToUpper(f.Vendor), strings.ToUpper(f.Device), strings.ToUpper(f.Vendor),
			strings.ToUpper(f.Class[0:2]), strings.ToUpper(f.Class[2:4]), strings.ToUpper(f.Class[4:6]))
	}
	files := map[string]string{
		"vendor":           "0x" + f.Vendor,
		"device":           "0x" + f.Device,
		"subsystem_vendor": "0x" + f.Vendor,
		"subsystem_device": "0x0000",
		"class":            "0x" + f.Class,
		"revision":         "0x02",
		"modalias":         modalias,
		"numa_node":        strconv.Itoa(f.NUMANode),
		"enable":           "1",
	}
	if f.TotalVFs > 0 {
		files["sriov_totalvfs"] = strconv.Itoa(f.TotalVFs)
		files["sriov_numvfs"] = "0"
		files["sriov_drivers_autoprobe"] = "1"
	}
	for name, content := range files {
		if err := writeFile(filepath.Join(dir, name), content); err != nil {
			return err
		}
	}
	if err := t.relink(t.path("sys/bus/pci/devices", f.Address), dir); err != nil {
		return err
	}
	if err := t.Bind(f.Address, f.Driver); err != nil {
		return err
	}
	if f.IOMMU {
		if err := t.addIOMMUGroup(f.Address, dir); err != nil {
			return err
		}
	}
	for _, nd := range f.Netdevs {
		if err := t.AddNetdev(f.Address, nd); err != nil {
			return err
		}
	}
	return nil
}

// AddVF creates VF number index of the PF at pfAddr (physfn, virtfn<index>) and raises sriov_numvfs.
// The VF's Parent is the PF's parent, as on real hardware.
func (t *Tree) AddVF(pfAddr string, index int, vf Function) error {
	pfDir, err := t.DeviceDir(pfAddr)
	if err != nil {
		return err
	}
	// VFs sit next to their PF, under the PF's upstream bridge (or on the root bus with it).
	vf.Parent = filepath.Base(filepath.Dir(pfDir))
	if !looksLikeAddress(vf.Parent) {
		vf.Parent = ""
	}
	if err := t.AddFunction(vf); err != nil {
		return err
	}
	vfDir, err := t.DeviceDir(vf.Address)
	if err != nil {
		return err
	}
	if err := t.relink(filepath.Join(vfDir, "physfn"), pfDir); err != nil {
		return err
	}
	if err := t.relink(filepath.Join(pfDir, "virtfn"+strconv.Itoa(index)), vfDir); err != nil {
		return err
	}
	return t.syncNumVFs(pfAddr)
}

// RemoveVF removes VF number index of a PF as the kernel does when the VF goes away: its directory, its bus
// and driver links, its IOMMU group and netdevs, and the PF's virtfn link; sriov_numvfs follows.
func (t *Tree) RemoveVF(pfAddr string, index int) error {
	pfDir, err := t.DeviceDir(pfAddr)
	if err != nil {
		return err
	}
	link := filepath.Join(pfDir, "virtfn"+strconv.Itoa(index))
	dest, err := os.Readlink(link)
	if err != nil {
		return fmt.Errorf("pcitree: %s has no VF %d: %w", pfAddr, index, err)
	}
	vfAddr := filepath.Base(dest)
	if err := t.RemoveFunction(vfAddr); err != nil {
		return err
	}
	if err := os.Remove(link); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	return t.syncNumVFs(pfAddr)
}

// RemoveFunction removes a function and everything that points at it.
func (t *Tree) RemoveFunction(addr string) error {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return err
	}
	netdevs, _ := os.ReadDir(filepath.Join(dir, "net"))
	for _, nd := range netdevs {
		_ = os.Remove(t.path("sys/class/net", nd.Name()))
	}
	if group, err := os.Readlink(filepath.Join(dir, "iommu_group")); err == nil {
		_ = os.RemoveAll(t.path("sys/kernel/iommu_groups", filepath.Base(group)))
		_ = os.Remove(t.path("dev/vfio", filepath.Base(group)))
	}
	if err := t.Bind(addr, ""); err != nil {
		return err
	}
	if err := os.Remove(t.path("sys/bus/pci/devices", addr)); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	return nil
}

// Bind binds a function to driver ("" unbinds). Binding to vfio-pci removes the netdevs (the kernel unregisters
// them with the network driver) and creates /dev/vfio/<group>; leaving vfio-pci removes that node.
func (t *Tree) Bind(addr, driver string) error {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return err
	}
	if old, err := os.Readlink(filepath.Join(dir, "driver")); err == nil {
		_ = os.Remove(filepath.Join(t.path("sys/bus/pci/drivers", filepath.Base(old)), addr))
		if err := os.Remove(filepath.Join(dir, "driver")); err != nil {
			return fmt.Errorf("pcitree: %w", err)
		}
		if filepath.Base(old) == "vfio-pci" {
			if group, err := os.Readlink(filepath.Join(dir, "iommu_group")); err == nil {
				_ = os.Remove(t.path("dev/vfio", filepath.Base(group)))
			}
		}
	}
	if driver == "" {
		return nil
	}
	drvDir := t.path("sys/bus/pci/drivers", driver)
	if err := os.MkdirAll(drvDir, 0o755); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	for _, f := range []string{"bind", "unbind", "new_id", "remove_id"} {
		if err := writeFile(filepath.Join(drvDir, f), ""); err != nil {
			return err
		}
	}
	if err := t.relink(filepath.Join(drvDir, addr), dir); err != nil {
		return err
	}
	if err := t.relink(filepath.Join(dir, "driver"), drvDir); err != nil {
		return err
	}
	if driver == "vfio-pci" {
		netdevs, _ := os.ReadDir(filepath.Join(dir, "net"))
		for _, nd := range netdevs {
			_ = os.Remove(t.path("sys/class/net", nd.Name()))
		}
		_ = os.RemoveAll(filepath.Join(dir, "net"))
		if group, err := os.Readlink(filepath.Join(dir, "iommu_group")); err == nil {
			if err := writeFile(t.path("dev/vfio", filepath.Base(group)), ""); err != nil {
				return err
			}
		}
	}
	return nil
}

// AddNetdev gives a function a network interface.
func (t *Tree) AddNetdev(addr string, nd Netdev) error {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return err
	}
	ndDir := filepath.Join(dir, "net", nd.Name)
	if nd.Host {
		if err := os.MkdirAll(filepath.Dir(ndDir), 0o755); err != nil {
			return fmt.Errorf("pcitree: %w", err)
		}
		_ = os.RemoveAll(ndDir)
		if err := os.Symlink(filepath.Join("/sys/class/net", nd.Name), ndDir); err != nil {
			return fmt.Errorf("pcitree: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(ndDir, 0o755); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	typ := nd.Type
	if typ == 0 {
		typ = LinkEther
	}
	mac := nd.MAC
	if mac == "" {
		mac = macFor(nd.Name)
	}
	files := map[string]string{
		"type":      strconv.Itoa(typ),
		"address":   mac,
		"mtu":       "1500",
		"ifindex":   "0",
		"addr_len":  "6",
		"tx_queues": "1",
	}
	for name, content := range files {
		if err := writeFile(filepath.Join(ndDir, name), content); err != nil {
			return err
		}
	}
	if err := t.relink(t.path("sys/class/net", nd.Name), ndDir); err != nil {
		return err
	}
	return t.SetLink(addr, nd.Name, nd.Up, nd.Up)
}

// ReplaceNetdevs replaces the netdevs of a function by links to the host's interfaces of these names (see
// Netdev.Host).
func (t *Tree) ReplaceNetdevs(addr string, hostIfnames ...string) error {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return err
	}
	old, _ := os.ReadDir(filepath.Join(dir, "net"))
	for _, nd := range old {
		_ = os.Remove(t.path("sys/class/net", nd.Name()))
	}
	if err := os.RemoveAll(filepath.Join(dir, "net")); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	for _, name := range hostIfnames {
		if err := t.AddNetdev(addr, Netdev{Name: name, Host: true}); err != nil {
			return err
		}
	}
	return nil
}

// SetLink sets the administrative state (IFF_UP in flags) and the carrier of a netdev; operstate follows as the
// kernel derives it: "up" with both, "down" otherwise.
func (t *Tree) SetLink(addr, ifname string, adminUp, carrier bool) error {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return err
	}
	ndDir := filepath.Join(dir, "net", ifname)
	if fi, err := os.Lstat(ndDir); err != nil {
		return fmt.Errorf("pcitree: %s has no netdev %s: %w", addr, ifname, err)
	} else if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("pcitree: %s's netdev %s is a host interface: set its state with ip link", addr, ifname)
	}
	flags, oper, carr := "0x1002", "down", "0"
	if adminUp {
		flags = "0x1003"
		if carrier {
			oper, carr = "up", "1"
		}
	}
	for name, content := range map[string]string{"flags": flags, "operstate": oper, "carrier": carr} {
		if err := writeFile(filepath.Join(ndDir, name), content); err != nil {
			return err
		}
	}
	return nil
}

// SetFile overwrites one file of a function, e.g. to corrupt modalias.
func (t *Tree) SetFile(addr, name, content string) error {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, name), content)
}

// RemoveFile deletes one file of a function.
func (t *Tree) RemoveFile(addr, name string) error {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	return nil
}

// DeviceDir resolves <root>/sys/bus/pci/devices/<addr> to the function's real directory.
func (t *Tree) DeviceDir(addr string) (string, error) {
	link := t.path("sys/bus/pci/devices", addr)
	dest, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("pcitree: no function %s: %w", addr, err)
	}
	if filepath.IsAbs(dest) {
		return dest, nil
	}
	return filepath.Join(filepath.Dir(link), dest), nil
}

// IOMMUGroup returns the IOMMU group of a function, "" without one.
func (t *Tree) IOMMUGroup(addr string) string {
	dir, err := t.DeviceDir(addr)
	if err != nil {
		return ""
	}
	dest, err := os.Readlink(filepath.Join(dir, "iommu_group"))
	if err != nil {
		return ""
	}
	return filepath.Base(dest)
}

// AddNUMANodes creates <root>/sys/devices/system/node/node<i> for i < n.
func (t *Tree) AddNUMANodes(n int) error {
	for i := range n {
		if err := os.MkdirAll(t.path("sys/devices/system/node", "node"+strconv.Itoa(i)), 0o755); err != nil {
			return fmt.Errorf("pcitree: %w", err)
		}
	}
	return nil
}

// SetDefaultRoute writes <root>/proc/net/route with an IPv4 default route through ifname.
func (t *Tree) SetDefaultRoute(ifname string) error {
	if err := os.MkdirAll(t.path("proc/net"), 0o755); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	content := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		ifname + "\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
	return writeFile(t.path("proc/net/route"), content)
}

func (t *Tree) functionDir(addr, parent string) (string, error) {
	if parent == "" {
		return t.path("sys/devices/pci0000:00", addr), nil
	}
	pdir, err := t.DeviceDir(parent)
	if err != nil {
		return "", err
	}
	return filepath.Join(pdir, addr), nil
}

func (t *Tree) addIOMMUGroup(addr, dir string) error {
	group := strconv.Itoa(t.nextGroup)
	t.nextGroup++
	gdir := t.path("sys/kernel/iommu_groups", group, "devices")
	if err := os.MkdirAll(gdir, 0o755); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	if err := t.relink(filepath.Join(gdir, addr), dir); err != nil {
		return err
	}
	if err := t.relink(filepath.Join(dir, "iommu_group"), filepath.Dir(gdir)); err != nil {
		return err
	}
	if drv, err := os.Readlink(filepath.Join(dir, "driver")); err == nil && filepath.Base(drv) == "vfio-pci" {
		return writeFile(t.path("dev/vfio", group), "")
	}
	return nil
}

func (t *Tree) syncNumVFs(pfAddr string) error {
	pfDir, err := t.DeviceDir(pfAddr)
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(pfDir)
	if err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "virtfn") {
			n++
		}
	}
	return writeFile(filepath.Join(pfDir, "sriov_numvfs"), strconv.Itoa(n))
}

// relink makes link a symlink to target (relative unless AbsoluteLinks), replacing what was there.
func (t *Tree) relink(link, target string) error {
	rel := target
	if !t.AbsoluteLinks {
		var err error
		if rel, err = filepath.Rel(filepath.Dir(link), target); err != nil {
			return fmt.Errorf("pcitree: %w", err)
		}
	}
	if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pcitree: %w", err)
	}
	if err := os.Symlink(rel, link); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	return nil
}

func (t *Tree) path(elem ...string) string {
	return filepath.Join(append([]string{t.Root}, elem...)...)
}

// Addresses lists the functions of the tree, sorted.
func (t *Tree) Addresses() ([]string, error) {
	entries, err := os.ReadDir(t.path("sys/bus/pci/devices"))
	if err != nil {
		return nil, fmt.Errorf("pcitree: %w", err)
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out, nil
}

func writeFile(path, content string) error {
	// sysfs attributes end with a newline; an empty attribute (bind, unbind) has none.
	if content != "" {
		content += "\n"
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("pcitree: %w", err)
	}
	return nil
}

// macFor derives a stable locally administered MAC address from an interface name.
func macFor(name string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(name); i++ {
		h = (h ^ uint32(name[i])) * 16777619
	}
	return fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(h>>24), byte(h>>16), byte(h>>8), byte(h))
}

func looksLikeAddress(s string) bool {
	return len(s) == len("0000:00:00.0") && s[4] == ':' && s[7] == ':' && s[10] == '.'
}
