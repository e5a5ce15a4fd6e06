package devinfo_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/sriov-device/internal/devinfo"
)

func TestWriteFollowsTheNPWGNamingAndFormat(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "devinfo", "dp") // created on first write
	s := devinfo.NewStore(dir)
	info := devinfo.Info{Type: devinfo.TypePCI, Version: devinfo.SpecVersion,
		PCI: &devinfo.PCI{PCIAddress: "0000:3b:02.0", PFPCIAddress: "0000:3b:00.0", VhostNet: "/dev/vhost-net"}}
	if err := s.Write("braid.dev/x710", "0000:3b:02.0", info); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "braid.dev-x710-0000:3b:02.0-device.json")
	if s.Path("braid.dev/x710", "0000:3b:02.0") != path {
		t.Errorf("Path = %s, want %s", s.Path("braid.dev/x710", "0000:3b:02.0"), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The document as the spec spells it, read without our types.
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "pci", "version": "1.1.0", "pci": map[string]any{
		"pci-address": "0000:3b:02.0", "pf-pci-address": "0000:3b:00.0", "vhost-net": "/dev/vhost-net"}}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("document (-want +got):\n%s", diff)
	}

	// A second allocation of the same device replaces the file (read-only files included).
	info.PCI.VhostNet = ""
	if err := s.Write("braid.dev/x710", "0000:3b:02.0", info); err != nil {
		t.Fatal(err)
	}
	got, err := s.Read("braid.dev/x710", "0000:3b:02.0")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(info, got); diff != "" {
		t.Errorf("Read after rewrite (-want +got):\n%s", diff)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d files, want 1 (no temporary left behind)", len(entries))
	}
}
