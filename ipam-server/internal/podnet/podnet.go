// Package podnet reads, from a pod and its NetworkAttachmentDefinitions, what braid-ipam-server must allocate:
// which attachments use braid-ipam, on which interface, from which pools, with which requested addresses.
// It is pure: callers fetch the objects.
package podnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/ipam-server/internal/ipamkeys"
)

// NetworksAnnotation is the NPWG network-selection annotation on pods.
const NetworksAnnotation = selection.NetworksAnnotation

// Selection is one element of a pod's network-selection annotation, with its interface name resolved.
type Selection struct {
	Namespace string
	Name      string
	Interface string       // as requested, or net<N> as the meta-plugin names it
	IPs       []netip.Addr // static addresses requested with "ips"
	// Lengths are the prefix lengths asked with addresses of IPs in the NPWG form "192.0.2.10/24"; an
	// address asked without one has none here.
	Lengths map[netip.Addr]int
}

// Key is the NAD reference "namespace/name".
func (s Selection) Key() string { return s.Namespace + "/" + s.Name }

// Defaults are the networks braid attaches to every pod outside SystemNamespaces before the pod's own (the
// meta-plugin conf's defaultNetworks and systemNamespaces): braid-ipam-server must know them to serve them and
// to name the pod's interfaces as the nodes will.
type Defaults struct {
	Networks         []string // "namespace/name", in braid's order
	SystemNamespaces []string
}

// Validate checks that every default network is a "namespace/name" reference.
func (d Defaults) Validate() error {
	for i, n := range d.Networks {
		ns, name, ok := strings.Cut(n, "/")
		if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return fmt.Errorf("default-networks[%d]: %q is not namespace/name: write each as braid's conf resolves it", i, n)
		}
	}
	for i, ns := range d.SystemNamespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("system-namespaces[%d]: %q is not a namespace name: %s", i, ns, strings.Join(errs, "; "))
		}
	}
	return nil
}

// Apply reports whether pods in podNamespace get default networks: there are some, and it is no system namespace.
func (d Defaults) Apply(podNamespace string) bool {
	return len(d.Networks) > 0 && !slices.Contains(d.SystemNamespaces, podNamespace)
}

// For returns the default networks of a pod in podNamespace: none in a system namespace.
func (d Defaults) For(podNamespace string) []selection.Element {
	if !d.Apply(podNamespace) {
		return nil
	}
	out := make([]selection.Element, 0, len(d.Networks))
	for _, n := range d.Networks {
		ns, name, _ := strings.Cut(n, "/")
		out = append(out, selection.Element{Namespace: ns, Name: name})
	}
	return out
}

// ParseSelections parses the annotation with the meta-plugin's parser and names interfaces as it does: eth0
// is the cluster network's, the defaults take net1..netK, and the pod's unnamed elements continue from
// net<K+1>, skipping names others requested. The defaults come first in the result.
func ParseSelections(annotation, podNamespace string, defaults []selection.Element) ([]Selection, error) {
	elems, err := selection.Parse(annotation, podNamespace)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", NetworksAnnotation, err)
	}
	defNames, names, err := selection.AssignAll("eth0", defaults, elems)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", NetworksAnnotation, err)
	}
	out := make([]Selection, 0, len(defaults)+len(elems))
	for i, d := range defaults {
		out = append(out, Selection{Namespace: d.Namespace, Name: d.Name, Interface: defNames[i]})
	}
	for i, e := range elems {
		s := Selection{Namespace: e.Namespace, Name: e.Name, Interface: names[i]}
		for j, ip := range e.IPs {
			addr, bits, err := parseIP(ip)
			if err != nil { // the parser validated them; this only guards against a change there
				return nil, fmt.Errorf("%s: networks[%d].ips[%d]: %q is not an IP address or CIDR", NetworksAnnotation, i, j, ip)
			}
			s.IPs = append(s.IPs, addr)
			if bits >= 0 {
				if s.Lengths == nil {
					s.Lengths = map[netip.Addr]int{}
				}
				s.Lengths[addr] = bits
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// parseIP accepts "192.0.2.10" and the NPWG form "192.0.2.10/24"; bits is -1 when no length is given.
func parseIP(s string) (addr netip.Addr, bits int, err error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), p.Bits(), nil
	}
	addr, err = netip.ParseAddr(s)
	return addr, -1, err
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
// ok=false when the network does not use braid-ipam; only a braid-ipam section is validated, so a config that
// is odd elsewhere is left for the node to refuse.
func BraidIPAM(config string) (IPAMConf, bool, error) {
	if strings.TrimSpace(config) == "" {
		return IPAMConf{}, false, nil
	}
	var conf struct {
		IPAM    json.RawMessage `json:"ipam"`
		Plugins json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(config), &conf); err != nil {
		return IPAMConf{}, false, fmt.Errorf("spec.config: not a JSON object: %w", err)
	}
	fields, sections := []string{"ipam"}, []json.RawMessage{conf.IPAM}
	var plugins []json.RawMessage
	_ = json.Unmarshal(conf.Plugins, &plugins) // not a list: no plugins to search
	for i, p := range plugins {
		var pc struct {
			IPAM json.RawMessage `json:"ipam"`
		}
		_ = json.Unmarshal(p, &pc) // not an object: no ipam section
		fields, sections = append(fields, fmt.Sprintf("plugins[%d].ipam", i)), append(sections, pc.IPAM)
	}
	for i, raw := range sections {
		var head struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &head) == nil && head.Type == IPAMType {
			c, err := parseIPAM(fields[i], raw)
			return c, true, err
		}
	}
	return IPAMConf{}, false, nil
}

// parseIPAM decodes and checks a braid-ipam section; errors name field (ipam or plugins[i].ipam) and the key.
func parseIPAM(field string, raw json.RawMessage) (IPAMConf, error) {
	var c IPAMConf
	if err := json.Unmarshal(raw, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return IPAMConf{}, fmt.Errorf("spec.config: %s.%s: must be of type %s, not %s", field, te.Field, te.Type, te.Value)
		}
		return IPAMConf{}, fmt.Errorf("spec.config: %s: %w", field, err)
	}
	if key, fix := ipamkeys.UnknownIPAMKey(raw); key != "" {
		return IPAMConf{}, fmt.Errorf("spec.config: %s%s: %s", field, ipamkeys.KeyPath(key), fix)
	}
	if len(c.Pools) == 0 {
		return IPAMConf{}, fmt.Errorf("spec.config: %s.pools: braid-ipam needs at least one IPPool name", field)
	}
	for i, name := range c.Pools {
		if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
			return IPAMConf{}, fmt.Errorf("spec.config: %s.pools[%d]: %q is not an IPPool name: %s", field, i, name, strings.Join(msgs, "; "))
		}
	}
	return c, nil
}
