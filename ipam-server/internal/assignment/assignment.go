// Package assignment is the contract between braid-ipam-server and the node-side braid-ipam plugin: the
// server writes, on the pod, one annotation that says, per interface, which addresses it holds (with the
// gateway, routes and DNS of their pools) or why it could not allocate; the plugin only reads it.
package assignment

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
)

// Annotation is the pod annotation braid-ipam-server writes.
const Annotation = "braid.dev/ip-assignments"

// Address is one held address with what the pod needs to use it.
type Address struct {
	Pool       string `json:"pool"`
	FloatingIP string `json:"floatingIP"`
	// CIDR is the address with its pool's prefix length, e.g. 192.0.2.10/24.
	CIDR    string `json:"cidr"`
	Gateway string `json:"gateway,omitempty"`
}

// Route is a route for the interface; an empty GW means the address's gateway.
type Route struct {
	Dst string `json:"dst"`
	GW  string `json:"gw,omitempty"`
}

// Interface is what one interface of the pod gets, or why it gets nothing yet.
type Interface struct {
	Network   string    `json:"network"` // NAD namespace/name
	Addresses []Address `json:"addresses,omitempty"`
	Routes    []Route   `json:"routes,omitempty"`
	DNS       *DNS      `json:"dns,omitempty"` // from the pools
	// Error is the reason allocation failed (pool exhausted, no eligible pool, ...); the plugin returns it.
	Error string `json:"error,omitempty"`
}

// DNS is the resolver configuration of the interface's pools, spelled as the IPPool's spec.dns. (Its own type:
// braid-ipam, which reads this, starts for every CNI call and does not link the API types.)
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Domain      string   `json:"domain,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Assignments maps interface name to its assignment, for one pod UID.
type Assignments struct {
	PodUID     string               `json:"podUID"`
	Interfaces map[string]Interface `json:"interfaces"`
}

// Parse reads the annotation value. Errors name the annotation and the field, e.g.
// "annotation braid.dev/ip-assignments: interfaces[net1].addresses[0].cidr: ...".
func Parse(value string) (Assignments, error) {
	var a Assignments
	if err := json.Unmarshal([]byte(value), &a); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Assignments{}, fmt.Errorf("annotation %s: %s: must be of type %s, not %s", Annotation, te.Field, te.Type, te.Value)
		}
		return Assignments{}, fmt.Errorf("annotation %s: not a JSON object: %w", Annotation, err)
	}
	if err := a.validate(); err != nil {
		return Assignments{}, fmt.Errorf("annotation %s: %w", Annotation, err)
	}
	return a, nil
}

// validate checks the addresses with the parsers the plugin hands them to (net.ParseCIDR, net.ParseIP), so
// that what Parse accepts becomes a CNI result.
func (a Assignments) validate() error {
	ip := func(field, s string) error {
		if s != "" && net.ParseIP(s) == nil {
			return fmt.Errorf("%s: %q is not an IP address", field, s)
		}
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(a.Interfaces)) {
		iface, at := a.Interfaces[name], fmt.Sprintf("interfaces[%s]", name)
		for i, addr := range iface.Addresses {
			f := fmt.Sprintf("%s.addresses[%d]", at, i)
			if _, _, err := net.ParseCIDR(addr.CIDR); err != nil {
				return fmt.Errorf("%s.cidr: %q is not an address with prefix length, e.g. 192.0.2.10/24", f, addr.CIDR)
			}
			if err := ip(f+".gateway", addr.Gateway); err != nil {
				return err
			}
		}
		for i, r := range iface.Routes {
			f := fmt.Sprintf("%s.routes[%d]", at, i)
			if _, _, err := net.ParseCIDR(r.Dst); err != nil {
				return fmt.Errorf("%s.dst: %q is not a CIDR, e.g. 0.0.0.0/0", f, r.Dst)
			}
			if err := ip(f+".gw", r.GW); err != nil {
				return err
			}
		}
	}
	return nil
}

// Encode renders the annotation value.
func (a Assignments) Encode() string {
	b, err := json.Marshal(a)
	if err != nil { // only maps, strings and slices: cannot fail
		panic(err)
	}
	return string(b)
}
