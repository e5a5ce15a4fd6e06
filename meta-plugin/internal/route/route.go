// Package route moves a pod's default route to the attachment that the selection annotation's "default-route"
// names (NPWG spec 4.1.2.1.9): the pure part edits CNI results so that what braid reports matches the pod,
// and SetDefault (Linux) changes the routes inside the pod's network namespace.
package route

import (
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// Families reports which address families the gateways cover.
func Families(gws []netip.Addr) (v4, v6 bool) {
	for _, g := range gws {
		if g.Is4() || g.Is4In6() {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// Gateways returns the gateways the result gives the pod's interface, for a "default-route" request with an
// empty list: the attachment then takes the default route through its own IPAM's gateways. Those are the
// gateways of the result's default routes (a static IPAM names its gateway only there) and, for a family
// without one, the gateways of the interface's addresses.
func Gateways(r *types100.Result) []netip.Addr {
	var gws []netip.Addr
	for _, rt := range r.Routes {
		if rt == nil || rt.GW == nil || !netstatus.IsDefault(rt.Dst) {
			continue
		}
		if a, ok := netip.AddrFromSlice(rt.GW); ok && !slices.Contains(gws, a.Unmap()) {
			gws = append(gws, a.Unmap())
		}
	}
	v4, v6 := Families(gws)
	sandbox := -1
	for i, iface := range r.Interfaces {
		if iface != nil && iface.Sandbox != "" {
			sandbox = i
			break
		}
	}
	for _, ipc := range r.IPs {
		if ipc == nil || ipc.Gateway == nil {
			continue
		}
		if sandbox >= 0 && ipc.Interface != nil && *ipc.Interface != sandbox {
			continue
		}
		if a, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			if a = a.Unmap(); a.Is4() && !v4 || a.Is6() && !v6 {
				gws = append(gws, a)
			}
		}
	}
	return gws
}

// DropDefault removes the default routes of the given families from the result, as braid removes them from
// the pod when another attachment takes the default route.
func DropDefault(r *types100.Result, v4, v6 bool) {
	kept := r.Routes[:0]
	for _, rt := range r.Routes {
		if rt != nil && netstatus.IsDefault(rt.Dst) {
			is4 := rt.Dst.IP == nil && rt.GW.To4() != nil || rt.Dst.IP.To4() != nil
			if (is4 && v4) || (!is4 && v6) {
				continue
			}
		}
		kept = append(kept, rt)
	}
	r.Routes = kept
}

// AddDefault records default routes through the gateways in the result.
func AddDefault(r *types100.Result, gws []netip.Addr) {
	for _, g := range gws {
		dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if !g.Unmap().Is4() {
			dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		r.Routes = append(r.Routes, &types.Route{Dst: dst, GW: net.IP(g.Unmap().AsSlice())})
	}
}
