package discover

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sysfs reads the files of PCI functions and network interfaces under root, exactly where the kernel puts them
// on a host: <root>/sys/bus/pci/devices/<addr>/... (symlinks into <root>/sys/devices/...).
//
// A rescan of 1024 VFs reads some 20,000 attributes, so each function's directory is opened once and its files
// are read relative to it (openat, readlinkat): the kernel then resolves one short name per read instead of
// the whole path through the bus symlink, and a small attribute costs three system calls.
type sysfs struct {
	root string
}

func (s sysfs) devicesDir() string { return join(s.root, "sys", "bus", "pci", "devices") }

func (s sysfs) dev(addr string, elem ...string) string {
	return filepath.Join(append([]string{s.devicesDir(), addr}, elem...)...)
}

// pciAddresses lists <root>/sys/bus/pci/devices, sorted, lowercased.
func (s sysfs) pciAddresses() ([]string, error) {
	entries, err := os.ReadDir(s.devicesDir())
	if err != nil {
		return nil, err
	}
	addrs := make([]string, 0, len(entries))
	for _, e := range entries {
		addrs = append(addrs, strings.ToLower(e.Name()))
	}
	return addrs, nil
}

// modaliases reads the modalias of every function, relative to the bus directory; "" when unreadable.
func (s sysfs) modaliases(addrs []string) map[string]string {
	out := make(map[string]string, len(addrs))
	bus, err := openDir(s.devicesDir())
	if err != nil {
		return out
	}
	defer bus.close()
	for _, addr := range addrs {
		out[addr] = bus.read(addr + "/modalias")
	}
	return out
}

// identity reads the vendor, device and class files of a function ("0x8086", "0x154c", "0x020000") and
// returns them as discovery reports them ("8086", "154c", "02").
func (s sysfs) identity(addr string) (vendor, device, class string, err error) {
	if vendor, err = s.hexID(addr, "vendor", 4); err != nil {
		return "", "", "", err
	}
	if device, err = s.hexID(addr, "device", 4); err != nil {
		return "", "", "", err
	}
	if class, err = s.hexID(addr, "class", 6); err != nil {
		return "", "", "", err
	}
	return vendor, device, class[:2], nil
}

func (s sysfs) hexID(addr, file string, digits int) (string, error) {
	raw, err := os.ReadFile(s.dev(addr, file))
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	v := strings.ToLower(strings.TrimPrefix(strings.TrimSpace(string(raw)), "0x"))
	if len(v) != digits {
		return "", fmt.Errorf("%s: %q is not %d hex digits", file, strings.TrimSpace(string(raw)), digits)
	}
	if _, err := strconv.ParseUint(v, 16, 32); err != nil {
		return "", fmt.Errorf("%s: %q is not hex: %w", file, strings.TrimSpace(string(raw)), err)
	}
	return v, nil
}

// numaNode reads numa_node; -1 when the platform does not say.
func (s sysfs) numaNode(addr string) int {
	dir, err := openDir(s.dev(addr))
	if err != nil {
		return -1
	}
	defer dir.close()
	if n, ok := dir.int("numa_node"); ok && n >= 0 {
		return n
	}
	return -1
}

// details reads what can change while a function stays: driver, IOMMU group, SR-IOV links, netdevs and link
// state. It fails only when the function is gone.
func (s sysfs) details(d *Device) error {
	dir, err := openDir(s.dev(d.Address))
	if err != nil {
		return fmt.Errorf("device directory: %w", err)
	}
	defer dir.close()
	d.Driver = dir.linkBase("driver")
	d.IOMMUGroup = dir.linkBase("iommu_group")
	if d.Driver == "vfio-pci" && d.IOMMUGroup != "" {
		_, err := os.Stat(join(s.root, "dev", "vfio", d.IOMMUGroup))
		d.VFIODevicePresent = err == nil
	}
	if pf := dir.linkBase("physfn"); pf != "" {
		d.PF = strings.ToLower(pf)
	} else {
		// Only a physical function can have VFs.
		d.TotalVFs, _ = dir.int("sriov_totalvfs")
		if d.TotalVFs > 0 {
			d.NumVFs, _ = dir.int("sriov_numvfs")
			vfs, err := dir.virtfns()
			if err != nil {
				return err
			}
			d.VFs = vfs
		}
	}
	netdevs, err := dir.names("net")
	if err != nil {
		return fmt.Errorf("net: %w", err)
	}
	d.Netdevs = netdevs
	if len(netdevs) > 0 {
		d.Link = dir.link(netdevs[0])
	}
	return nil
}

// defaultRouteNetdevs names the interfaces that hold an IPv4 or IPv6 default route in <root>/proc/net.
// Missing files (a fake tree without them) mean no default route.
func (s sysfs) defaultRouteNetdevs() map[string]bool {
	out := map[string]bool{}
	// /proc/net/route: Iface Destination Gateway Flags RefCnt Use Metric Mask ...
	eachLine(join(s.root, "proc", "net", "route"), func(f []string) {
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			out[f[0]] = true
		}
	})
	// /proc/net/ipv6_route: dest destlen src srclen nexthop metric refcnt use flags iface
	const rtfReject = 0x0200
	eachLine(join(s.root, "proc", "net", "ipv6_route"), func(f []string) {
		if len(f) < 10 || f[1] != "00" || strings.Trim(f[0], "0") != "" || f[9] == "lo" {
			return
		}
		if flags, err := strconv.ParseUint(f[8], 16, 32); err == nil && flags&rtfReject == 0 {
			out[f[9]] = true
		}
	})
	return out
}

func eachLine(path string, fn func(fields []string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fn(strings.Fields(sc.Text()))
	}
}

// deviceDir is an open function directory; names are resolved relative to it.
type deviceDir struct {
	fd int
}

func openDir(path string) (deviceDir, error) {
	fd, err := retry(func() (int, error) {
		return unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return deviceDir{}, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return deviceDir{fd: fd}, nil
}

func (d deviceDir) close() { _ = unix.Close(d.fd) }

// read returns the trimmed content of a small attribute (IDs, states, counters; far shorter than the
// buffer), or "" when it cannot be read.
func (d deviceDir) read(name string) string {
	fd, err := retry(func() (int, error) { return unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return ""
	}
	defer func() { _ = unix.Close(fd) }()
	var buf [256]byte
	n, err := retry(func() (int, error) { return unix.Read(fd, buf[:]) })
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(buf[:n]))
}

func (d deviceDir) int(name string) (int, bool) {
	v := d.read(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, false
	}
	return n, true
}

// linkBase is the last element of a symlink's target ("" when there is no such link).
func (d deviceDir) linkBase(name string) string {
	var buf [512]byte
	n, err := retry(func() (int, error) { return unix.Readlinkat(d.fd, name, buf[:]) })
	if err != nil {
		return ""
	}
	return filepath.Base(string(buf[:n]))
}

// names lists a subdirectory, sorted; nil when it does not exist.
func (d deviceDir) names(sub string) ([]string, error) {
	fd, err := retry(func() (int, error) {
		return unix.Openat(d.fd, sub, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), sub)
	defer func() { _ = f.Close() }()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// virtfns reads the virtfnN links of a PF into a slice indexed by N.
func (d deviceDir) virtfns() ([]string, error) {
	names, err := d.names(".")
	if err != nil {
		return nil, fmt.Errorf("listing: %w", err)
	}
	byIndex := map[int]string{}
	maxIndex := -1
	for _, name := range names {
		rest, ok := strings.CutPrefix(name, "virtfn")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			continue
		}
		if vf := d.linkBase(name); vf != "" {
			byIndex[n] = strings.ToLower(vf)
			maxIndex = max(maxIndex, n)
		}
	}
	if maxIndex < 0 {
		return nil, nil
	}
	vfs := make([]string, maxIndex+1)
	for n, vf := range byIndex {
		vfs[n] = vf
	}
	return vfs, nil
}

// link reads net/<name>/{type,operstate,flags} and, when operstate does not settle it, carrier.
func (d deviceDir) link(name string) Link {
	at := func(attr string) string { return d.read("net/" + name + "/" + attr) }
	l := Link{Name: name}
	l.Type = LinkTypeName(at("type"))
	l.OperState = at("operstate")
	if flags, err := strconv.ParseUint(strings.TrimPrefix(at("flags"), "0x"), 16, 32); err == nil {
		l.AdminUp = flags&unix.IFF_UP != 0
	}
	switch l.OperState {
	case "up":
		l.Carrier = true // the kernel reports "up" only with a carrier
	case "down", "lowerlayerdown", "notpresent":
		// No carrier; reading the file of an interface that is down even fails with EINVAL.
	default:
		l.Carrier = at("carrier") == "1"
	}
	return l
}

// retry repeats a system call interrupted by a signal.
func retry[T any](call func() (T, error)) (T, error) {
	for {
		v, err := call()
		if !errors.Is(err, unix.EINTR) {
			return v, err
		}
	}
}
