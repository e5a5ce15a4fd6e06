// Package devinfo writes and reads device-information files, as the Network Plumbing Working Group's
// device-info specification (version 1.1.0) defines them, so that the CNI side (the meta-plugin and its
// delegates) learns what the device plugin handed to a pod.
//
// A device plugin writes one file per allocated device to <dir>/<resource>-<deviceID>-device.json, where
// <resource> is the full resource name with "/" replaced by "-" (the NAD client's naming, so that any
// NPWG-compliant meta-plugin finds it); the default dir is /var/run/k8s.cni.cncf.io/devinfo/dp.
package devinfo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// SpecVersion is the device-info specification version written.
const SpecVersion = "1.1.0"

// DefaultDir is where device plugins write device-info files.
const DefaultDir = "/var/run/k8s.cni.cncf.io/devinfo/dp"

// TypePCI is the device type of PCI functions.
const TypePCI = "pci"

// Modes. The spec sets none; its readers (the meta-plugin and CNI delegates) run as root, so a directory
// this plugin creates is root's alone (the NAD client creates it with no permission bits at all), and a file
// is read-only for all, as the NAD client writes it: it holds PCI addresses, which sysfs and the pod's
// network-status show anyway. An existing directory keeps its mode: other device plugins share it.
const (
	DirMode  os.FileMode = 0o700
	FileMode os.FileMode = 0o444
)

// Info is a device-info document.
type Info struct {
	Type    string `json:"type"`
	Version string `json:"version"`
	PCI     *PCI   `json:"pci,omitempty"`
}

// PCI describes a PCI function.
type PCI struct {
	PCIAddress        string `json:"pci-address"`
	VhostNet          string `json:"vhost-net,omitempty"`
	RDMADevice        string `json:"rdma-device,omitempty"`
	PFPCIAddress      string `json:"pf-pci-address,omitempty"`
	RepresentorDevice string `json:"representor-device,omitempty"`
}

// Store reads and writes device-info files in one directory.
type Store struct {
	dir string
}

// NewStore returns a Store for dir.
func NewStore(dir string) *Store { return &Store{dir: dir} }

// Path is the file of a device of a resource ("braid.dev/x710", "0000:3b:02.0").
func (s *Store) Path(resource, deviceID string) string {
	return filepath.Join(s.dir, fmt.Sprintf("%s-%s-device.json",
		strings.ReplaceAll(resource, "/", "-"), strings.ReplaceAll(deviceID, "/", "-")))
}

// Write replaces the file of a device atomically (a reader sees the old or the new document, never a part).
func (s *Store) Write(resource, deviceID string, info Info) error {
	data, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("device-info for %s %s: %w", resource, deviceID, err)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if errors.Is(err, fs.ErrNotExist) {
		// First write, or the directory was cleaned (it is under /var/run): create it.
		if err := os.MkdirAll(s.dir, DirMode); err != nil {
			return fmt.Errorf("device-info dir: %w", err)
		}
		tmp, err = os.CreateTemp(s.dir, ".tmp-*")
	}
	if err != nil {
		return fmt.Errorf("device-info for %s %s: %w", resource, deviceID, err)
	}
	err = writeAndClose(tmp, data)
	if err == nil {
		err = os.Rename(tmp.Name(), s.Path(resource, deviceID))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("device-info for %s %s: %w", resource, deviceID, err)
	}
	return nil
}

// writeAndClose writes a whole file and makes it read-only, as the NAD client writes device-info files.
func writeAndClose(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(FileMode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Read returns the document of a device.
func (s *Store) Read(resource, deviceID string) (Info, error) {
	data, err := os.ReadFile(s.Path(resource, deviceID))
	if err != nil {
		return Info{}, fmt.Errorf("device-info for %s %s: %w", resource, deviceID, err)
	}
	var info Info
	if err := json.Unmarshal(data, &info); err != nil {
		return Info{}, fmt.Errorf("device-info for %s %s: %w", resource, deviceID, err)
	}
	return info, nil
}
