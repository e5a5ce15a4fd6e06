// Package podnet reads, from a pod and its NetworkAttachmentDefinitions, what braid-ipam-server must allocate:
// which attachments use braid-ipam, on which interface, from which pools, with which requested addresses.
// It is pure: callers fetch the objects.
package podnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// NetworksAnnotation is the NPWG network-selection annotation on pods.
const NetworksAnnotation = "k8s.v1.cni.cncf.io/networks"

// Selection is one element of a pod's network-selection annotation, with its interface name resolved.
type Selection struct {
	Namespace string
	Name      string
	Interface string       // as requested, or net<N> by position like the meta-plugin
	IPs       []netip.Addr // static addresses requested with "ips"
}

// Key is the NAD reference "namespace/name".
func (s Selection) Key() string { return s.Namespace + "/" + s.Name }

type jsonSelection struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace,omitempty"`
	Interface string   `json:"interface,omitempty"`
	IPs       []string `json:"ips,omitempty"`
}

// ParseSelections parses the annotation in either NPWG form: a JSON list of objects, or the short
// comma-separated `[namespace/]name[@interface]` form. Interfaces default to net1..netN by position.
func ParseSelections(annotation, podNamespace string) ([]Selection, error) {
	annotation = strings.TrimSpace(annotation)
	if annotation == "" {
		return nil, nil
	}
	var raw []jsonSelection
	if strings.HasPrefix(annotation, "[") {
		if err := json.Unmarshal([]byte(annotation), &raw); err != nil {
			return nil, fmt.Errorf("%s: invalid JSON: %w", NetworksAnnotation, err)
		}
	} else {
		for _, item := range strings.Split(annotation, ",") {
			item = strings.TrimSpace(item)
			var sel jsonSelection
			if at := strings.LastIndex(item, "@"); at >= 0 {
				item, sel.Interface = item[:at], item[at+1:]
			}
			if ns, name, ok := strings.Cut(item, "/"); ok {
				sel.Namespace, item = ns, name
			}
			sel.Name = item
			raw = append(raw, sel)
		}
	}
	out := make([]Selection, 0, len(raw))
	for i, r := range raw {
		field := fmt.Sprintf("%s[%d]", NetworksAnnotation, i)
		if r.Name == "" {
			return nil, fmt.Errorf("%s.name: must name a NetworkAttachmentDefinition", field)
		}
		s := Selection{Namespace: r.Namespace, Name: r.Name, Interface: r.Interface}
		if s.Namespace == "" {
			s.Namespace = podNamespace
		}
		if s.Interface == "" {
			s.Interface = fmt.Sprintf("net%d", i+1)
		}
		for j, ip := range r.IPs {
			addr, err := parseIP(ip)
			if err != nil {
				return nil, fmt.Errorf("%s.ips[%d]: %q is not an IP address or CIDR", field, j, ip)
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
