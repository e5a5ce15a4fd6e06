package hostevent

import (
	"strings"
	"testing"
)

func TestUeventWakes(t *testing.T) {
	msg := func(fields ...string) []byte { return []byte(strings.Join(fields, "\x00") + "\x00") }
	tests := []struct {
		name string
		msg  []byte
		want bool
	}{
		{"VF created", msg("add@/devices/pci0000:00/0000:00:02.0/0000:3b:02.0", "ACTION=add",
			"DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:3b:02.0", "SUBSYSTEM=pci", "PCI_SLOT_NAME=0000:3b:02.0"), true},
		{"VF destroyed", msg("remove@/devices/pci0000:00/0000:00:02.0/0000:3b:02.0", "ACTION=remove",
			"SUBSYSTEM=pci"), true},
		{"driver bound", msg("bind@/devices/pci0000:00/0000:00:02.0/0000:3b:02.0", "ACTION=bind", "SUBSYSTEM=pci",
			"DRIVER=vfio-pci"), true},
		{"netdev renamed", msg("move@/devices/virtual/net/eth1", "ACTION=move", "SUBSYSTEM=net", "INTERFACE=ens1f0v0"), true},
		{"a disk", msg("change@/devices/virtual/block/loop0", "ACTION=change", "SUBSYSTEM=block"), false},
		{"a subsystem that only starts like pci", msg("add@/x", "SUBSYSTEM=pci_bus"), false},
		{"libudev re-broadcast", append([]byte("libudev\x00\xfe\xed\xca\xfe"), msg("SUBSYSTEM=pci")...), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		if got := ueventWakes(tt.msg); got != tt.want {
			t.Errorf("%s: ueventWakes = %v, want %v", tt.name, got, tt.want)
		}
	}
}
