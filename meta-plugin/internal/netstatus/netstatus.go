// Package netstatus builds the NPWG Network Attachment Status Annotation (k8s.v1.cni.cncf.io/network-status,
// NPWG spec v1.3 section 5) from CNI results. It is a pure core.
//
// Per attachment, the entry describes the first interface of the result that lies in the sandbox, and lists
// only the addresses that the result assigns to that interface (spec 5.3.3), so that host-side addresses of
// plugins such as bridge never leak into the status. Addresses are written without prefix length, as Multus
// and the NAD client write them, because that is what existing consumers parse.
package netstatus

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

// Annotation is the pod annotation braid writes.
const Annotation = "k8s.v1.cni.cncf.io/network-status"

// DNS is the "dns" map of an entry.
type DNS struct {
	Nameservers []string `json:"nameservers,omitempty"`
	Domain      string   `json:"domain,omitempty"`
	Search      []string `json:"search,omitempty"`
	Options     []string `json:"options,omitempty"`
}

// Status is one entry of the annotation, with the spec's key names.
type Status struct {
	Name      string   `json:"name"`
	Interface string   `json:"interface,omitempty"`
	IPs       []string `json:"ips,omitempty"`
	MAC       string   `json:"mac,omitempty"`
	MTU       int      `json:"mtu,omitempty"`
	// Default marks the cluster-wide default network; the spec makes the key required, so it is always written.
	Default      bool              `json:"default"`
	DNS          *DNS              `json:"dns,omitempty"`
	DeviceInfo   *nadv1.DeviceInfo `json:"device-info,omitempty"`
	DefaultRoute []string          `json:"default-route,omitempty"`
	// Gateway lists the gateways of the attachment's default routes, requested or not, under the key Multus
	// writes (the NAD client's NetworkStatus.Gateway), for consumers that read that.
	Gateway []string `json:"gateway,omitempty"`
}

// Input describes one attachment's outcome.
type Input struct {
	// Name is "namespace/name" of the NAD, or the cluster network's name.
	Name string
	// IfName is the CNI_IFNAME used; it fills "interface" when the result names no sandbox interface.
	IfName string
	// Result is the delegate's ADD result in any CNI version; nil gives a minimal entry.
	Result types.Result
	// Default marks the cluster-wide default network.
	Default bool
	// HoldsDefaultRoute is set on the attachment that carries the pod's default route; its gateways are
	// reported under "default-route".
	HoldsDefaultRoute bool
	// DeviceInfo is the device-info file's content, when there is one.
	DeviceInfo *nadv1.DeviceInfo
}

// Build makes the status entry of one attachment.
func Build(in Input) (Status, error) {
	st := Status{Name: in.Name, Interface: in.IfName, Default: in.Default, DeviceInfo: in.DeviceInfo}
	if in.Result == nil {
		return st, nil
	}
	r, err := types100.NewResultFromResult(in.Result)
	if err != nil {
		return Status{}, fmt.Errorf("network-status for %s: convert result: %w", in.Name, err)
	}
	sandbox := -1
	for i, iface := range r.Interfaces {
		if iface != nil && iface.Sandbox != "" {
			sandbox = i
			st.MAC, st.MTU = iface.Mac, iface.Mtu
			if iface.Name != "" { // a nameless one is still the interface the runtime asked for
				st.Interface = iface.Name
			}
			break
		}
	}
	for _, ipc := range r.IPs {
		if ipc == nil || ipc.Address.IP == nil { // an entry without an address has nothing to report
			continue
		}
		ours := ipc.Interface != nil && *ipc.Interface == sandbox && sandbox >= 0
		unbound := sandbox < 0 && (ipc.Interface == nil || *ipc.Interface < 0)
		if ours || unbound {
			st.IPs = append(st.IPs, ipc.Address.IP.String())
		}
	}
	if len(st.IPs) == 0 && sandbox >= 0 {
		// Some IPAM-only chains return addresses without an interface index; take those rather than nothing.
		for _, ipc := range r.IPs {
			if ipc != nil && ipc.Address.IP != nil && (ipc.Interface == nil || *ipc.Interface < 0) {
				st.IPs = append(st.IPs, ipc.Address.IP.String())
			}
		}
	}
	if d := r.DNS; len(d.Nameservers)+len(d.Search)+len(d.Options) > 0 || d.Domain != "" {
		st.DNS = &DNS{Nameservers: d.Nameservers, Domain: d.Domain, Search: d.Search, Options: d.Options}
	}
	for _, rt := range r.Routes {
		if rt != nil && IsDefault(rt.Dst) && rt.GW != nil {
			st.Gateway = append(st.Gateway, rt.GW.String())
		}
	}
	if in.HoldsDefaultRoute {
		st.DefaultRoute = slices.Clone(st.Gateway)
	}
	return st, nil
}

// IsDefault reports whether dst is 0.0.0.0/0 or ::/0.
func IsDefault(dst net.IPNet) bool {
	ones, _ := dst.Mask.Size()
	return (dst.IP == nil || dst.IP.IsUnspecified()) && ones == 0
}

// Encode renders the annotation value.
func Encode(sts []Status) (string, error) {
	b, err := json.Marshal(sts)
	if err != nil {
		return "", fmt.Errorf("encode network-status: %w", err)
	}
	return string(b), nil
}

// Decode parses an annotation value. Errors name the key of an entry whose value has the wrong type.
func Decode(s string) ([]Status, error) {
	var sts []Status
	if err := json.Unmarshal([]byte(s), &sts); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fmt.Errorf("decode network-status: %s: must be of type %s, not %s", te.Field, te.Type, te.Value)
		}
		return nil, fmt.Errorf("decode network-status: not a JSON list of entries: %w", err)
	}
	return sts, nil
}

// Write is one network-status write waiting to be made: the annotation's value for the sandbox ContainerID
// of the pod Namespace/Name with UID.
type Write struct {
	ContainerID string       `json:"containerID"`
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	UID         k8stypes.UID `json:"uid"`
	Value       string       `json:"value"`
}
