// Command braid-sriov-fixture writes a fake PCI sysfs tree (sriov-device/internal/pcitree) for machines without
// SR-IOV hardware: the standard fixture (an Intel X710 with iavf VFs and one VF on vfio-pci, a port without
// VFs, a Mellanox ConnectX-6 with VFs, a broken modalias), or a scaled one. It is a test and demo tool, not
// part of braid's images.
//
// With --host-netdev, chosen VFs get a real host interface (a veth end, say) as their netdev, so that
// braid-sriov-dp and CNI plugins such as host-device work on them. Links are absolute by default, so that
// <root>/sys/bus/pci/devices can be bind-mounted over /sys/bus/pci/devices on its own:
//
//	ip link add vf0 type veth peer name vf0-peer
//	braid-sriov-fixture --root /var/lib/braid-fake-pci --host-netdev 0000:3b:02.0=vf0
//	braid-sriov-dp --root /var/lib/braid-fake-pci --config ...
//	# or, in the node's private mount namespace, with --root /:
//	mount --bind /var/lib/braid-fake-pci/sys/bus/pci/devices /sys/bus/pci/devices
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
)

// hostNetdevs collects repeated --host-netdev ADDR=IFNAME flags.
type hostNetdevs map[string]string

func (h hostNetdevs) String() string { return fmt.Sprint(map[string]string(h)) }

func (h hostNetdevs) Set(v string) error {
	addr, ifname, ok := strings.Cut(v, "=")
	if !ok || addr == "" || ifname == "" {
		return fmt.Errorf("%q is not ADDR=IFNAME", v)
	}
	h[addr] = ifname
	return nil
}

func main() {
	var (
		root     string
		absolute bool
		scale    string
		netdevs  = hostNetdevs{}
	)
	flag.StringVar(&root, "root", "", "directory to write the tree under (required)")
	flag.BoolVar(&absolute, "absolute-links", true, "absolute links, so that <root>/sys/bus/pci/devices can be bind-mounted alone")
	flag.StringVar(&scale, "scale", "", "PFS:VFS writes PFS X710 ports with VFS VFs each instead of the standard fixture")
	flag.Var(netdevs, "host-netdev", "ADDR=IFNAME: the function's netdev is the host's interface IFNAME (repeatable)")
	flag.Parse()
	if err := run(root, absolute, scale, netdevs); err != nil {
		fmt.Fprintf(os.Stderr, "braid-sriov-fixture: %v\n", err)
		os.Exit(1)
	}
}

func run(root string, absolute bool, scale string, netdevs hostNetdevs) error {
	if root == "" {
		return fmt.Errorf("--root: required")
	}
	t, err := pcitree.New(root)
	if err != nil {
		return err
	}
	t.AbsoluteLinks = absolute
	if scale != "" {
		var pfs, vfs int
		if _, err := fmt.Sscanf(scale, "%d:%d", &pfs, &vfs); err != nil {
			return fmt.Errorf("--scale %q: want PFS:VFS: %w", scale, err)
		}
		if _, err := pcitree.ScaleOn(t, pfs, vfs); err != nil {
			return err
		}
	} else if err := pcitree.AddStandard(t); err != nil {
		return err
	}
	for addr, ifname := range netdevs {
		if err := t.ReplaceNetdevs(addr, ifname); err != nil {
			return fmt.Errorf("--host-netdev %s=%s: %w", addr, ifname, err)
		}
	}
	addrs, err := t.Addresses()
	if err != nil {
		return err
	}
	fmt.Printf("wrote %d PCI functions under %s\n", len(addrs), t.Root)
	return nil
}
