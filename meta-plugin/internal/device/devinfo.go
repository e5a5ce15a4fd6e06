package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

// Files reads and writes device-info files under Dir (/var/run/k8s.cni.cncf.io/devinfo in production).
type Files struct {
	Dir string
}

// dpPath is where a device plugin leaves the information of one device (spec section 4.1).
func (f Files) dpPath(resource, deviceID string) string {
	return filepath.Join(f.Dir, "dp", fmt.Sprintf("%s-%s-device.json",
		strings.ReplaceAll(resource, "/", "-"), strings.ReplaceAll(deviceID, "/", "-")))
}

// CNIPath is the file braid hands to the delegates of one attachment (spec section 4.2): unique per network,
// container and interface.
func (f Files) CNIPath(network, containerID, ifName string) string {
	name := strings.ReplaceAll(fmt.Sprintf("%s-%s-%s-device.json", network, containerID, ifName), "/", "-")
	return filepath.Join(f.Dir, "cni", name)
}

// Copy copies the device plugin's file of the device to cniPath. It reports false when the device plugin
// wrote none, which is allowed: the delegate may then write the file itself.
func (f Files) Copy(resource, deviceID, cniPath string) (bool, error) {
	b, err := os.ReadFile(f.dpPath(resource, deviceID))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("device-info of %s %s: %w", resource, deviceID, err)
	}
	var probe nadv1.DeviceInfo
	if err := json.Unmarshal(b, &probe); err != nil {
		return false, fmt.Errorf("device-info of %s %s: %w", resource, deviceID, err)
	}
	// Root's alone, like braid's other per-pod state: the delegates that read it run as root.
	if err := os.MkdirAll(filepath.Dir(cniPath), 0o700); err != nil {
		return false, fmt.Errorf("device-info dir: %w", err)
	}
	tmp := cniPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return false, fmt.Errorf("device-info for the delegate: %w", err)
	}
	if err := os.Rename(tmp, cniPath); err != nil {
		return false, fmt.Errorf("device-info for the delegate: %w", err)
	}
	return true, nil
}

// Load reads the attachment's device-info file after the delegates ran; nil when there is none.
func (f Files) Load(cniPath string) (*nadv1.DeviceInfo, error) {
	b, err := os.ReadFile(cniPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("device-info %s: %w", cniPath, err)
	}
	var di nadv1.DeviceInfo
	if err := json.Unmarshal(b, &di); err != nil {
		return nil, fmt.Errorf("device-info %s: %w", cniPath, err)
	}
	return &di, nil
}

// Remove deletes the attachment's device-info file; a missing file is fine (DEL is idempotent).
func (f Files) Remove(cniPath string) error {
	if err := os.Remove(cniPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("device-info %s: %w", cniPath, err)
	}
	return nil
}
