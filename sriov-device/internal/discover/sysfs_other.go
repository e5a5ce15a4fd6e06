//go:build !linux

package discover

import "errors"

// errNotLinux is what discovery reports on systems without Linux sysfs.
var errNotLinux = errors.New("pci discovery reads linux sysfs and is not available on this system")

type sysfs struct{ root string }

func (sysfs) pciAddresses() ([]string, error)                 { return nil, errNotLinux }
func (sysfs) modaliases([]string) map[string]string           { return nil }
func (sysfs) identity(string) (string, string, string, error) { return "", "", "", errNotLinux }
func (sysfs) numaNode(string) int                             { return -1 }
func (sysfs) details(*Device) error                           { return errNotLinux }
func (sysfs) defaultRouteNetdevs() map[string]bool            { return nil }
