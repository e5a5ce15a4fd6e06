package route

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// v6Metric is the kernel's default metric for IPv6 routes; braid's IPv6 default routes start there.
const v6Metric = 1024

// SetDefault makes ifName the pod's default route: inside the network namespace at netnsPath it deletes every
// default route (main table) of the gateways' families, whichever interface holds it, and adds one default
// route per gateway through ifName, earlier gateways with a lower metric.
func SetDefault(netnsPath, ifName string, gws []netip.Addr) error {
	if len(gws) == 0 {
		return errors.New("default route: no gateway")
	}
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlinksafe.LinkByName(ifName)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifName, err)
		}
		v4, v6 := Families(gws)
		for fam, want := range map[int]bool{netlink.FAMILY_V4: v4, netlink.FAMILY_V6: v6} {
			if !want {
				continue
			}
			routes, err := netlinksafe.RouteList(nil, fam)
			if err != nil {
				return fmt.Errorf("list routes: %w", err)
			}
			for i := range routes {
				r := routes[i]
				if !isDefault(r) {
					continue
				}
				if err := netlink.RouteDel(&r); err != nil {
					return fmt.Errorf("delete default route %s: %w", r, err)
				}
			}
		}
		n4, n6 := 0, 0
		for _, g := range gws {
			g = g.Unmap()
			r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: g.AsSlice(), Scope: netlink.SCOPE_UNIVERSE}
			if g.Is4() {
				r.Family, r.Priority = netlink.FAMILY_V4, n4
				n4++
			} else {
				r.Family, r.Priority = netlink.FAMILY_V6, v6Metric+n6
				n6++
			}
			if err := netlink.RouteAdd(r); err != nil {
				return fmt.Errorf("add default route via %s dev %s: %w", g, ifName, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("default route in %s: %w", netnsPath, err)
	}
	return nil
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0 && r.Dst.IP.IsUnspecified()
}
