package discover_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
)

// TestBindMountedTreeReadAtRootSlash is the end-to-end setup of a machine without SR-IOV hardware: a tree with
// absolute links is bind-mounted over /sys/bus/pci/devices in a private mount namespace, one VF's netdev is a
// real veth, and discovery reads it with root "/" — the production configuration. It runs the checks in a
// child process (TestBindMountHelper) that is wholly inside new mount and network namespaces, since a mount
// namespace belongs to a thread and discovery uses several.
func TestBindMountedTreeReadAtRootSlash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount and network namespaces")
	}
	for _, tool := range []string{"unshare", "mount", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	base := t.TempDir()
	tree, err := pcitree.New(filepath.Join(base, "tree"))
	if err != nil {
		t.Fatal(err)
	}
	tree.AbsoluteLinks = true
	if err := pcitree.AddStandard(tree); err != nil {
		t.Fatal(err)
	}
	if err := tree.ReplaceNetdevs(pcitree.X710VFs()[0], "vf0"); err != nil {
		t.Fatal(err)
	}
	// pcidb looks in $HOME/.cache/pci.ids first: ghw finds the database there with root "/".
	home := filepath.Join(base, "home")
	if err := os.MkdirAll(filepath.Join(home, ".cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".cache", "pci.ids"), pcitree.PCIIDs(), 0o644); err != nil {
		t.Fatal(err)
	}

	script := `set -e
mount -t sysfs sysfs /sys
mount --bind "$TREE/sys/bus/pci/devices" /sys/bus/pci/devices
ip link add vf0 type veth peer name vf0p
exec "$TEST_BINARY" -test.run '^TestBindMountHelper$' -test.v -test.count=1`
	cmd := exec.Command("unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "BRAID_BINDMOUNT_HELPER=1", "TREE="+tree.Root, "HOME="+home,
		"TEST_BINARY="+os.Args[0])
	out, err := cmd.CombinedOutput()
	t.Logf("helper:\n%s", out)
	if err != nil {
		t.Fatalf("helper failed: %v", err)
	}
}

// TestBindMountHelper runs inside TestBindMountedTreeReadAtRootSlash's namespaces.
func TestBindMountHelper(t *testing.T) {
	if os.Getenv("BRAID_BINDMOUNT_HELPER") == "" {
		t.Skip("runs only as the helper of TestBindMountedTreeReadAtRootSlash")
	}
	s := discover.NewScanner("/")
	inv, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if inv.Degraded != nil {
		t.Errorf("ghw failed at root /: %v", inv.Degraded)
	}
	tree := &pcitree.Tree{Root: os.Getenv("TREE")}
	want, err := tree.Addresses()
	if err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(a string) bool { return a == pcitree.Unreadable })
	if got := addresses(inv); !slices.Equal(got, want) {
		t.Errorf("functions at /sys/bus/pci/devices = %v, want the tree's %v", got, want)
	}
	vf0 := pcitree.X710VFs()[0]
	d := lookup(t, inv, vf0)
	if !slices.Equal(d.Netdevs, []string{"vf0"}) || d.Link.Type != "ether" || d.Link.OperState != "down" ||
		d.PF != pcitree.X710PF || d.ProductName != "Ethernet Virtual Function 700 Series" {
		t.Errorf("VF with a veth netdev: %+v", d)
	}

	for _, args := range [][]string{{"link", "set", "vf0p", "up"}, {"link", "set", "vf0", "up"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	inv, err = s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if d := lookup(t, inv, vf0); !d.Link.Running() || !d.Link.AdminUp {
		t.Errorf("veth up, but discovery sees %+v", d.Link)
	}
	// What a CNI plugin such as host-device reads to find the VF's netdev.
	entries, err := os.ReadDir(filepath.Join("/sys/bus/pci/devices", vf0, "net"))
	if err != nil || len(entries) != 1 || entries[0].Name() != "vf0" {
		t.Errorf("/sys/bus/pci/devices/%s/net = %v, %v", vf0, entries, err)
	}
}
