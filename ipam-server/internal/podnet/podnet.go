// Package podnet reads, from a pod and its NetworkAttachmentDefinitions, what braid-ipam-server must allocate:
// which attachments use braid-ipam, on which interface, from which pools, with which requested addresses.
// It is pure: callers fetch the objects.
package podnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/braid-cni/braid/crds/selection"
)

// NetworksAnnotation is the NPWG network-selection annotation on pods.
const NetworksAnnotation = selection.NetworksAnnotation

// Selection is one element of a pod's network-selection annotation, with its interface name resolved.
type Selection struct {
	Namespace string
	Name      string
	Interface string       // as requested, or net<N> as the meta-plugin names it
	IPs       []netip.Addr // static addresses requested with "ips"
}

// Key is the NAD reference "namespace/name".
func (s Selection) Key() string { return s.Namespace + "/" + s.Name }

// ParseSelections parses the annotation with the meta-plugin's parser and names interfaces as it does
// (eth0 is the cluster network's; unnamed elements get net1..netN, skipping names others requested).
func ParseSelections(annotation, podNamespace string) ([]Selection, error) {
	elems, err := selection.Parse(annotation, podNamespace)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", NetworksAnnotation, err)
	}
	names, err := selection.AssignInterfaces([]string{"eth0"}, 1, elems)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", NetworksAnnotation, err)
	}
	out := make([]Selection, 0, len(elems))
	for i, e := range elems {
		s := Selection{Namespace: e.Namespace, Name: e.Name, Interface: names[i]}
		for j, ip := range e.IPs {
			addr, err := parseIP(ip)
			if err != nil { // the parser validated them; this only guards against a change there
				return nil, fmt.Errorf("%s: networks[%d].ips[%d]: %q is not an IP address or CIDR", NetworksAnnotation, i, j, ip)
			}
			s.IPs = append(s.IPs, addr)
		}
		out = append(out, s)
	}
	return out, nil
}

// parseIP accepts "192.0.2.10" and the NPWG form "192.0.2.10/24".
func parseIP(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}

// IPAMType is the IPAM plugin type braid-ipam-server serves.
const IPAMType = "braid-ipam"

// IPAMConf is braid-ipam's section of a network config.
type IPAMConf struct {
	Type  string   `json:"type"`
	Pools []string `json:"pools"`
	// Kubeconfig is read by the node-side plugin; the server ignores it.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// Timeout bounds how long the node-side plugin waits for the server (a Go duration, default 10s).
	Timeout string `json:"timeout,omitempty"`
}

// BraidIPAM finds the braid-ipam section in a NAD's spec.config (a single conf or a conflist). It returns
// ok=false when the network does not use braid-ipam.
func BraidIPAM(config string) (IPAMConf, bool, error) {
	var conf struct {
		IPAM    *IPAMConf `json:"ipam"`
		Plugins []struct {
			IPAM *IPAMConf `json:"ipam"`
		} `json:"plugins"`
	}
	if strings.TrimSpace(config) == "" {
		return IPAMConf{}, false, nil
	}
	if err := json.Unmarshal([]byte(config), &conf); err != nil {
		return IPAMConf{}, false, fmt.Errorf("spec.config: invalid JSON: %w", err)
	}
	candidates := []*IPAMConf{conf.IPAM}
	for _, p := range conf.Plugins {
		candidates = append(candidates, p.IPAM)
	}
	for _, c := range candidates {
		if c == nil || c.Type != IPAMType {
			continue
		}
		if len(c.Pools) == 0 {
			return IPAMConf{}, true, fmt.Errorf("spec.config: ipam.pools: braid-ipam needs at least one IPPool name")
		}
		return *c, true, nil
	}
	return IPAMConf{}, false, nil
}
