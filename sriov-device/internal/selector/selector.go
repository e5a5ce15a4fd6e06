// Package selector decides which discovered PCI functions belong to a resource, with the selectors of the SR-IOV
// network device plugin's resourceList (vendors, devices, drivers, pfNames with VF ranges, rootDevices,
// pciAddresses, linkTypes). Every selector is a small pure filter over discover.Device; a Set is the AND of its
// non-empty selectors, and a resource selects a function when any of its Sets does.
package selector

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/braid-cni/braid/sriov-device/internal/discover"
)

// Filter says whether a function passes one selector.
type Filter func(discover.Device) bool

// Set is one selector object of a resource: a function must pass every non-empty selector.
type Set struct {
	Vendors      []string
	Devices      []string
	Drivers      []string
	PFNames      []PF
	RootDevices  []PF
	PCIAddresses []string
	LinkTypes    []string
	// NeedVhostNet selects nothing: it asks that the functions this Set selects come with /dev/vhost-net and
	// /dev/net/tun.
	NeedVhostNet bool
}

// Empty reports whether the Set has no selector at all (it would select every network function).
func (s Set) Empty() bool {
	return len(s.Filters()) == 0
}

// Filters returns one Filter per non-empty selector.
func (s Set) Filters() []Filter {
	var fs []Filter
	if len(s.Vendors) > 0 {
		fs = append(fs, Vendors(s.Vendors...))
	}
	if len(s.Devices) > 0 {
		fs = append(fs, Devices(s.Devices...))
	}
	if len(s.Drivers) > 0 {
		fs = append(fs, Drivers(s.Drivers...))
	}
	if len(s.PFNames) > 0 {
		fs = append(fs, PFNames(s.PFNames...))
	}
	if len(s.RootDevices) > 0 {
		fs = append(fs, RootDevices(s.RootDevices...))
	}
	if len(s.PCIAddresses) > 0 {
		fs = append(fs, PCIAddresses(s.PCIAddresses...))
	}
	if len(s.LinkTypes) > 0 {
		fs = append(fs, LinkTypes(s.LinkTypes...))
	}
	return fs
}

// Match reports whether d passes every selector of the Set. An empty Set matches nothing: selecting every
// function of a host is never what a config means.
func (s Set) Match(d discover.Device) bool {
	fs := s.Filters()
	if len(fs) == 0 {
		return false
	}
	for _, f := range fs {
		if !f(d) {
			return false
		}
	}
	return true
}

// First returns the index of the first Set that matches d, or -1.
func First(sets []Set, d discover.Device) int {
	for i, s := range sets {
		if s.Match(d) {
			return i
		}
	}
	return -1
}

// Vendors selects functions whose vendor ID is one of ids (4 hex digits, any case).
func Vendors(ids ...string) Filter {
	want := lowered(ids)
	return func(d discover.Device) bool { return slices.Contains(want, d.VendorID) }
}

// Devices selects functions whose device ID is one of ids (4 hex digits, any case).
func Devices(ids ...string) Filter {
	want := lowered(ids)
	return func(d discover.Device) bool { return slices.Contains(want, d.DeviceID) }
}

// Drivers selects functions bound to one of drivers.
func Drivers(drivers ...string) Filter {
	return func(d discover.Device) bool { return slices.Contains(drivers, d.Driver) }
}

// PCIAddresses selects functions by PCI address.
func PCIAddresses(addrs ...string) Filter {
	want := lowered(addrs)
	return func(d discover.Device) bool { return slices.Contains(want, d.Address) }
}

// LinkTypes selects functions by link type ("ether", "infiniband"): their own netdev's, or for a VF without a
// netdev its PF's.
func LinkTypes(types ...string) Filter {
	return func(d discover.Device) bool { return slices.Contains(types, d.LinkType()) }
}

// PFNames selects VFs by the netdev name of their PF, optionally limited to VF indexes ("ens1f0#0-3").
// Functions that are not VFs never match.
func PFNames(sels ...PF) Filter {
	return func(d discover.Device) bool {
		if !d.IsVF() || d.PFNetdev == "" {
			return false
		}
		for _, s := range sels {
			if s.matchPF(d.PFNetdev) && s.hasVF(d.VFIndex) {
				return true
			}
		}
		return false
	}
}

// RootDevices selects VFs by the PCI address of their PF, optionally limited to VF indexes
// ("0000:3b:00.0#0-3"). Functions that are not VFs never match.
func RootDevices(sels ...PF) Filter {
	return func(d discover.Device) bool {
		if !d.IsVF() {
			return false
		}
		for _, s := range sels {
			if s.matchPF(d.PF) && s.hasVF(d.VFIndex) {
				return true
			}
		}
		return false
	}
}

// PF selects the VFs of one physical function: "<pf>" for all of them, "<pf>#<list>" for some, where <list>
// is a comma-separated list of VF indexes and inclusive ranges ("ens1f0#0-3", "ens1f0#0,2,5-7").
type PF struct {
	// PF is the PF part as written: a netdev name (possibly a regular expression) or a PCI address.
	PF string
	// VFs are the selected index ranges; nil selects every VF.
	VFs []Range

	re *regexp.Regexp
}

// Range is an inclusive range of VF indexes.
type Range struct{ First, Last int }

// ParsePFName parses an entry of pfNames. A name with regular-expression characters is a regular expression
// that must match the whole PF name (the upstream plugin matched it anywhere, which let "ens1" select ens1f0's
// VFs too).
func ParsePFName(s string) (PF, error) {
	p, err := parsePF(s)
	if err != nil {
		return PF{}, err
	}
	if strings.ContainsAny(p.PF, `.*+?()[]{}|^$\`) {
		// Compiled alone and matched against the whole name (matchPF), never spliced between anchors: "ens1)|(x"
		// in "^(?:...)$" would match every name that starts with ens1, and "\Q" would swallow the anchors.
		re, err := regexp.Compile(p.PF)
		if err != nil {
			return PF{}, fmt.Errorf("%q is not a valid name or regular expression: %w", p.PF, err)
		}
		re.Longest() // the longest leftmost match is the whole name whenever the expression matches all of it
		p.re = re
	} else if len(p.PF) > 15 {
		return PF{}, fmt.Errorf("%q is longer than an interface name can be (15)", p.PF)
	}
	return p, nil
}

// ParseRootDevice parses an entry of rootDevices: a full PCI address ("0000:3b:00.0") and an optional VF list.
func ParseRootDevice(s string) (PF, error) {
	p, err := parsePF(s)
	if err != nil {
		return PF{}, err
	}
	if !ValidPCIAddress(strings.ToLower(p.PF)) {
		return PF{}, fmt.Errorf("%q is not a PCI address like 0000:3b:00.0", p.PF)
	}
	p.PF = strings.ToLower(p.PF)
	return p, nil
}

func parsePF(s string) (PF, error) {
	name, list, hasList := strings.Cut(s, "#")
	if name == "" {
		return PF{}, fmt.Errorf("%q: the PF part before # is empty", s)
	}
	p := PF{PF: name}
	if !hasList {
		return p, nil
	}
	if list == "" {
		return PF{}, fmt.Errorf("%q: the VF list after # is empty", s)
	}
	for _, entry := range strings.Split(list, ",") {
		r, err := parseRange(entry)
		if err != nil {
			return PF{}, fmt.Errorf("%q: %w", s, err)
		}
		p.VFs = append(p.VFs, r)
	}
	return p, nil
}

func parseRange(entry string) (Range, error) {
	first, last, isRange := strings.Cut(entry, "-")
	if !isRange {
		n, err := vfIndex(entry)
		return Range{n, n}, err
	}
	a, err := vfIndex(first)
	if err != nil {
		return Range{}, err
	}
	b, err := vfIndex(last)
	if err != nil {
		return Range{}, err
	}
	if a > b {
		return Range{}, fmt.Errorf("range %q: start %d is after end %d", entry, a, b)
	}
	return Range{a, b}, nil
}

// vfIndex parses one VF index; the PCI SR-IOV capability allows at most 65535 VFs.
func vfIndex(s string) (int, error) {
	if s == "" || strings.TrimSpace(s) != s {
		return 0, fmt.Errorf("VF index %q is not a number", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("VF index %q is not a number from 0 to 65535", s)
	}
	return int(n), nil
}

func (p PF) matchPF(pf string) bool {
	if p.re != nil {
		loc := p.re.FindStringIndex(pf)
		return loc != nil && loc[0] == 0 && loc[1] == len(pf)
	}
	return p.PF == pf
}

func (p PF) hasVF(index int) bool {
	if p.VFs == nil {
		return true
	}
	for _, r := range p.VFs {
		if index >= r.First && index <= r.Last {
			return true
		}
	}
	return false
}

// ValidPCIAddress reports whether s is a full, lowercase PCI address: domain:bus:device.function, e.g.
// "0000:3b:02.7".
func ValidPCIAddress(s string) bool {
	if len(s) != len("0000:00:00.0") || s[4] != ':' || s[7] != ':' || s[10] != '.' {
		return false
	}
	for i, c := range s {
		if i == 4 || i == 7 || i == 10 {
			continue
		}
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	// The device number is 5 bits (00-1f) and the function 3 bits (0-7).
	dev, _ := strconv.ParseUint(s[8:10], 16, 8)
	return dev <= 0x1f && s[11] <= '7'
}

func lowered(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.ToLower(s)
	}
	return out
}
