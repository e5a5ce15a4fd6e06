// Package hostevent wakes the device plugin when the kernel reports a change that can affect the functions it
// serves: a network link changing (rtnetlink link notifications: up, down, carrier, added, removed) or a PCI or
// network device appearing or going away (kobject uevents, e.g. VFs created or destroyed through
// sriov_numvfs). It does not interpret the notifications beyond their kind: discovery rescans and decides.
//
// sysfs attributes themselves never notify, so these wake-ups work only on a host; the plugin's periodic
// resync covers everything else.
package hostevent

import (
	"bytes"
)

// ueventWakes reports whether a kobject uevent message is about a PCI or network device. A message is
// "ACTION@DEVPATH" followed by NUL-separated KEY=VALUE pairs; libudev's re-broadcasts start with "libudev" and
// are ignored (the kernel's own message is enough).
func ueventWakes(msg []byte) bool {
	if bytes.HasPrefix(msg, []byte("libudev")) {
		return false
	}
	for _, field := range bytes.Split(msg, []byte{0}) {
		if sub, ok := bytes.CutPrefix(field, []byte("SUBSYSTEM=")); ok {
			return string(sub) == "pci" || string(sub) == "net"
		}
	}
	return false
}
