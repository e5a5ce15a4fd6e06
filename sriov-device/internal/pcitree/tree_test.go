package pcitree_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The layout is the kernel's: what a sysfs reader follows resolves, whichever way links are written.
func TestLayout(t *testing.T) {
	for _, absolute := range []bool{false, true} {
		tree, err := pcitree.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		tree.AbsoluteLinks = absolute
		if err := pcitree.AddStandard(tree); err != nil {
			t.Fatal(err)
		}
		bus := filepath.Join(tree.Root, "sys/bus/pci/devices")
		vf := pcitree.X710VFs()[1]
		checks := map[string]string{
			filepath.Join(bus, vf, "physfn", "net", "ens1f0", "operstate"):                "up\n",
			filepath.Join(bus, pcitree.X710PF, "virtfn1", "net", "ens1f0v1", "operstate"): "down\n",
			filepath.Join(bus, vf, "driver", "bind"):                                      "",
			filepath.Join(bus, vf, "modalias"):                                            "pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00\n",
			filepath.Join(bus, pcitree.X710PF, "sriov_numvfs"):                            "4\n",
			filepath.Join(bus, pcitree.X710NoVFs, "sriov_numvfs"):                         "0\n",
			filepath.Join(tree.Root, "sys/class/net/ens2f0v3/address"):                    "",
		}
		for path, want := range checks {
			got := read(t, path)
			if want != "" && got != want {
				t.Errorf("absolute=%v: %s = %q, want %q", absolute, path, got, want)
			}
		}
		dest, err := os.Readlink(filepath.Join(bus, vf))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.IsAbs(dest) != absolute || !strings.HasSuffix(dest, "pci0000:00/"+pcitree.RootPortA+"/"+vf) {
			t.Errorf("absolute=%v: %s -> %s", absolute, vf, dest)
		}
		// The vfio VF has a /dev/vfio node for its group and no netdev.
		group := tree.IOMMUGroup(pcitree.X710VFIO)
		if _, err := os.Stat(filepath.Join(tree.Root, "dev/vfio", group)); err != nil || group == "" {
			t.Errorf("vfio node of group %q: %v", group, err)
		}
		if _, err := os.Stat(filepath.Join(bus, pcitree.X710VFIO, "net")); !os.IsNotExist(err) {
			t.Errorf("vfio VF has a net directory: %v", err)
		}
	}
}

func TestRemoveAndRebind(t *testing.T) {
	tree, err := pcitree.Standard(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bus := filepath.Join(tree.Root, "sys/bus/pci/devices")
	vfs := pcitree.CX6VFs()
	if err := tree.RemoveVF(pcitree.CX6PF, 2); err != nil {
		t.Fatal(err)
	}
	if read(t, filepath.Join(bus, pcitree.CX6PF, "sriov_numvfs")) != "3\n" {
		t.Error("sriov_numvfs did not follow the removal")
	}
	for _, gone := range []string{filepath.Join(bus, vfs[2]), filepath.Join(bus, pcitree.CX6PF, "virtfn2"),
		filepath.Join(tree.Root, "sys/class/net/ens2f0v2"), filepath.Join(tree.Root, "sys/bus/pci/drivers/mlx5_core", vfs[2])} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("%s still there after the VF went away", gone)
		}
	}
	if err := tree.RemoveVF(pcitree.CX6PF, 2); err == nil {
		t.Error("removing a VF twice succeeded")
	}

	// Leaving vfio-pci removes the /dev/vfio node; binding to it removes netdevs.
	group := tree.IOMMUGroup(pcitree.X710VFIO)
	if err := tree.Bind(pcitree.X710VFIO, "iavf"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(tree.Root, "dev/vfio", group)); !os.IsNotExist(err) {
		t.Errorf("/dev/vfio/%s left behind after unbinding vfio-pci", group)
	}
	if err := tree.Bind(vfs[0], "vfio-pci"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bus, vfs[0], "net")); !os.IsNotExist(err) {
		t.Error("a VF bound to vfio-pci kept its netdev")
	}
}

func TestHostNetdevs(t *testing.T) {
	tree, err := pcitree.Standard(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vf := pcitree.X710VFs()[0]
	if err := tree.ReplaceNetdevs(vf, "lo"); err != nil {
		t.Fatal(err)
	}
	// Through the tree, the host's own interface.
	if got := read(t, filepath.Join(tree.Root, "sys/bus/pci/devices", vf, "net/lo/type")); got != "772\n" {
		t.Errorf("type of the host's lo through the tree = %q", got)
	}
	if err := tree.SetLink(vf, "lo", true, true); err == nil {
		t.Error("SetLink changed a host interface's files")
	}
	if _, err := os.Lstat(filepath.Join(tree.Root, "sys/class/net/ens1f0v0")); !os.IsNotExist(err) {
		t.Error("the replaced fake netdev is still in sys/class/net")
	}
}
