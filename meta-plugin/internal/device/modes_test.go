package device

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCopyModes: with umask 0 (so only what the code sets counts), the copy braid makes for a delegate is
// 0600 in a 0700 directory.
func TestCopyModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	f := Files{Dir: t.TempDir()}
	dp := f.dpPath("example.com/sriov_a", "0000:18:02.1")
	if err := os.MkdirAll(filepath.Dir(dp), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dp, []byte(`{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:18:02.1"}}`), 0o444); err != nil {
		t.Fatal(err)
	}
	cniPath := f.CNIPath("net-a", "c1", "net1")
	if ok, err := f.Copy("example.com/sriov_a", "0000:18:02.1", cniPath); !ok || err != nil {
		t.Fatalf("Copy = %v, %v", ok, err)
	}
	for path, want := range map[string]os.FileMode{cniPath: 0o600, filepath.Dir(cniPath): 0o700} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
}
