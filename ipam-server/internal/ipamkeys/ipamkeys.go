// Package ipamkeys checks the keys of a braid-ipam section, for braid-ipam-server (a NAD's config) and the
// braid-ipam plugin (its stdin) alike. It imports nothing but the standard library: braid-ipam starts for every
// CNI call, and every package it links is start-up time.
package ipamkeys

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// IPAMKeys are the keys of braid-ipam's section. The server reads type and pools; the node-side plugin reads
// them all.
var IPAMKeys = []string{"type", "pools", "kubeconfig", "daemonSocket", "timeout"}

// poolFields names, for keys that other IPAM plugins (host-local, static, whereabouts) take in their section,
// where braid's pools say the same thing. An operator moving a NAD to braid-ipam who keeps such a key would
// otherwise get addresses, routes or DNS other than the ones written there, without a word.
var poolFields = map[string]string{
	"subnet": "spec.cidr", "range": "spec.cidr", "ranges": "spec.cidr and spec.ranges",
	"rangeStart": "spec.ranges", "rangeEnd": "spec.ranges", "range_start": "spec.ranges", "range_end": "spec.ranges",
	"exclude": "spec.excludes", "gateway": "spec.gateway", "routes": "spec.routes",
	"dns": "spec.dns", "resolvConf": "spec.dns",
}

// UnknownIPAMKey checks the keys of a braid-ipam section (a JSON object) and returns, for the first one in
// sorted order that braid-ipam does not take, that key and what to do instead; "" when every key is known or
// the section is not an object (its decoding reports that). Keys match in any case, as encoding/json (and so
// every Go CNI plugin) reads them.
func UnknownIPAMKey(raw json.RawMessage) (key, fix string) {
	var section map[string]json.RawMessage
	if json.Unmarshal(raw, &section) != nil {
		return "", ""
	}
	var unknown []string
	for k := range section {
		if !slices.ContainsFunc(IPAMKeys, func(known string) bool { return strings.EqualFold(k, known) }) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return "", ""
	}
	slices.Sort(unknown)
	key = unknown[0]
	switch {
	case poolFields[key] != "":
		return key, fmt.Sprintf("braid-ipam takes addresses, gateway, routes and DNS from the IPPools in pools: set %s on the pool and remove %s here", poolFields[key], key)
	case key == "addresses" || key == "ips":
		return key, `a pod asks for a static address with "ips" in its network selection annotation; remove ` + key + " here"
	default:
		return key, fmt.Sprintf("is not a braid-ipam key (it takes %s): remove it or correct its spelling", strings.Join(IPAMKeys, ", "))
	}
}

// KeyPath is how a field path names key after its object: ".routes", or `["odd key"]` for a key that does not
// read unquoted (anything but letters, digits, '_' and '-').
func KeyPath(key string) string {
	plain := key != "" && strings.IndexFunc(key, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '_' && r != '-'
	}) < 0
	if plain {
		return "." + key
	}
	return fmt.Sprintf("[%q]", key)
}
