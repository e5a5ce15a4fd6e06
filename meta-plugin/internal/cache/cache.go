// Package cache keeps braid's record of what one ADD attached to a container, so that DEL, CHECK and GC
// can work on exactly the same attachments when the pod or its NADs are gone or have changed. libcni's own
// result cache (in the same cniDir) complements it per attachment.
package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Attachment is one delegate network as ADD ran it.
type Attachment struct {
	// Network is the name reported in network-status: "namespace/name" of the NAD, or the cluster network's.
	Network string `json:"network"`
	// IfName is the interface in the pod.
	IfName string `json:"ifName"`
	// Master marks the cluster network.
	Master bool `json:"master,omitempty"`
	// Config is the network config list exactly as given to libcni.
	Config json.RawMessage `json:"config"`
	// CapabilityArgs are the runtimeConfig values given to libcni.
	CapabilityArgs map[string]any `json:"capabilityArgs,omitempty"`
	// DeviceInfoFile is the attachment's device-info file, removed on DEL.
	DeviceInfoFile string `json:"deviceInfoFile,omitempty"`
}

// Record is everything braid attached to one container, in ADD order.
type Record struct {
	ContainerID  string       `json:"containerID"`
	NetNS        string       `json:"netns,omitempty"`
	CNIArgs      string       `json:"cniArgs,omitempty"`
	PodNamespace string       `json:"podNamespace,omitempty"`
	PodName      string       `json:"podName,omitempty"`
	PodUID       string       `json:"podUID,omitempty"`
	Attachments  []Attachment `json:"attachments"`
}

// Store keeps records as one JSON file per container under Dir. Records are root's alone: the directory is
// 0700 and every record 0600 (os.CreateTemp's mode, kept by the rename).
type Store struct {
	Dir string
}

// dirMode is the records directory's mode.
const dirMode os.FileMode = 0o700

func (s Store) path(containerID string) string {
	return filepath.Join(s.Dir, containerID+".json")
}

// Save writes the record atomically (temporary file and rename), so a reader never sees half a record.
func (s Store) Save(r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("attachment record: %w", err)
	}
	if err := os.MkdirAll(s.Dir, dirMode); err != nil {
		return fmt.Errorf("attachment record dir: %w", err)
	}
	// MkdirAll leaves an existing directory's mode (an older braid's, say) and the umask may narrow a new one's.
	if fi, err := os.Stat(s.Dir); err != nil || fi.Mode().Perm() != dirMode {
		if err := os.Chmod(s.Dir, dirMode); err != nil {
			return fmt.Errorf("attachment record dir: %w", err)
		}
	}
	tmp, err := os.CreateTemp(s.Dir, "."+r.ContainerID+".*")
	if err != nil {
		return fmt.Errorf("attachment record: %w", err)
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("attachment record: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path(r.ContainerID)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("attachment record: %w", err)
	}
	return nil
}

// Load reads the container's record; nil without error when there is none.
func (s Store) Load(containerID string) (*Record, error) {
	b, err := os.ReadFile(s.path(containerID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("attachment record of %s: %w", containerID, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("attachment record of %s: %w", containerID, err)
	}
	return &r, nil
}

// Delete removes the container's record; a missing record is fine.
func (s Store) Delete(containerID string) error {
	if err := os.Remove(s.path(containerID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("attachment record of %s: %w", containerID, err)
	}
	return nil
}

// Written returns when the container's record was last written.
func (s Store) Written(containerID string) (time.Time, error) {
	fi, err := os.Stat(s.path(containerID))
	if err != nil {
		return time.Time{}, fmt.Errorf("attachment record of %s: %w", containerID, err)
	}
	return fi.ModTime(), nil
}

// RemoveLeftovers removes the temporary files of saves that were interrupted (a crash between the write and
// the rename) and were last written before cutoff; younger ones may belong to a save in progress.
func (s Store) RemoveLeftovers(cutoff time.Time) error {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("attachment records: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
			if err := os.Remove(filepath.Join(s.Dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("attachment record leftover: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// List returns the container IDs that have a record.
func (s Store) List() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("attachment records: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if name := e.Name(); !e.IsDir() && strings.HasSuffix(name, ".json") && !strings.HasPrefix(name, ".") {
			ids = append(ids, strings.TrimSuffix(name, ".json"))
		}
	}
	return ids, nil
}
