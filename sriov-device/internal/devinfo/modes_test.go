package devinfo_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/braid-cni/braid/sriov-device/internal/devinfo"
)

// TestModes: with umask 0 (so only what the code sets counts), a device-info directory the plugin creates is
// root's alone and every file read-only (see devinfo.DirMode and FileMode for why).
func TestModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)

	dir := filepath.Join(t.TempDir(), "devinfo", "dp")
	s := devinfo.NewStore(dir)
	info := devinfo.Info{Type: devinfo.TypePCI, Version: devinfo.SpecVersion, PCI: &devinfo.PCI{PCIAddress: "0000:3b:02.0"}}
	if err := s.Write("braid.dev/x710", "0000:3b:02.0", info); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Dir(dir): 0o700, s.Path("braid.dev/x710", "0000:3b:02.0"): 0o444} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
}
