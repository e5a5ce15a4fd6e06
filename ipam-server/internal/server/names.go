package server

import (
	"net/netip"
	"strconv"
	"strings"
)

// FloatingIPName derives a FloatingIP's name from its pool and address, e.g. mgmt-192-0-2-10 or
// mgmt-v6-2001-0db8-0001-0000-0000-0000-0000-000a. The fully expanded IPv6 form keeps the name unique and a
// valid DNS-1123 subdomain; because the API server refuses a second object of the same name, an address can
// never be held twice.
func FloatingIPName(pool string, addr netip.Addr) string {
	if addr.Is4() {
		return pool + "-" + strings.ReplaceAll(addr.String(), ".", "-")
	}
	return pool + "-" + strings.ReplaceAll(addr.StringExpanded(), ":", "-")
}

// nameAddress is the address whose FloatingIP name (FloatingIPName) in pool is name, if it is one.
func nameAddress(pool, name string) (netip.Addr, bool) {
	suffix, ok := strings.CutPrefix(name, pool+"-")
	if !ok {
		return netip.Addr{}, false
	}
	sep := map[int]string{3: ".", 7: ":"}[strings.Count(suffix, "-")]
	addr, err := netip.ParseAddr(strings.ReplaceAll(suffix, "-", sep))
	if sep == "" || err != nil || FloatingIPName(pool, addr) != name {
		return netip.Addr{}, false
	}
	return addr, true
}

// statefulSetOrdinal splits a StatefulSet pod name "<set>-<ordinal>".
func statefulSetOrdinal(podName string) (set string, ordinal int, ok bool) {
	i := strings.LastIndex(podName, "-")
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(podName[i+1:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return podName[:i], n, true
}
