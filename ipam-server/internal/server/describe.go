package server

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// describe renders the addresses of an interface with their pools' gateway, routes and DNS, IPv4 first and
// then by address: the order the interface got them in (a pool loaded later, a retry) does not show.
// An address whose pool this process has no model of (the pool was invalid when the server started, after a
// replica that knew it valid) keeps the description prev, the interface's assignment as it stands, gave it,
// with prev's routes and DNS: the pod holds it, and its next sandbox must get it as before. prev is read only
// then (it parses the pod's annotation).
func describe(fips []braidv1.FloatingIP, pools []candidate, prev func() assignment.Interface) assignment.Interface {
	var out assignment.Interface
	models := map[string]pool.Model{}
	for _, c := range pools {
		models[c.name] = c.model
	}
	fips = slices.Clone(fips)
	slices.SortFunc(fips, func(a, b braidv1.FloatingIP) int {
		x, _ := netip.ParseAddr(a.Spec.IP)
		y, _ := netip.ParseAddr(b.Spec.IP)
		return x.Compare(y) // shorter addresses first: IPv4 before IPv6
	})
	var before *assignment.Interface // prev(), once needed
	kept := false
	for _, f := range fips {
		addr, err := netip.ParseAddr(f.Spec.IP)
		if err != nil {
			continue
		}
		m, ok := models[f.Spec.Pool]
		if !ok {
			if before == nil {
				p := prev()
				before = &p
			}
			if a, found := describedBefore(*before, f, addr); found {
				out.Addresses, kept = append(out.Addresses, a), true
			}
			continue
		}
		a := assignment.Address{Pool: f.Spec.Pool, FloatingIP: f.Name, CIDR: netip.PrefixFrom(addr, m.Prefix.Bits()).String()}
		if m.Gateway.IsValid() {
			a.Gateway = m.Gateway.String()
		}
		out.Addresses = append(out.Addresses, a)
		for _, rt := range m.Routes {
			route := assignment.Route{Dst: rt.Dst.String()}
			if rt.GW.IsValid() {
				route.GW = rt.GW.String()
			}
			out.Routes = append(out.Routes, route)
		}
		if m.DNS != nil {
			if out.DNS == nil {
				out.DNS = &assignment.DNS{Domain: m.DNS.Domain, Search: m.DNS.Search, Options: m.DNS.Options}
			}
			out.DNS.Nameservers = append(out.DNS.Nameservers, m.DNS.Nameservers...)
		}
	}
	if kept {
		for _, rt := range before.Routes {
			if !slices.Contains(out.Routes, rt) {
				out.Routes = append(out.Routes, rt)
			}
		}
		if out.DNS == nil {
			out.DNS = before.DNS
		}
	}
	return out
}

// describedBefore finds the FloatingIP's address in the interface's previous description.
func describedBefore(prev assignment.Interface, f braidv1.FloatingIP, addr netip.Addr) (assignment.Address, bool) {
	for _, a := range prev.Addresses {
		if p, err := netip.ParsePrefix(a.CIDR); err == nil && a.FloatingIP == f.Name && a.Pool == f.Spec.Pool && p.Addr() == addr {
			return a, true
		}
	}
	return assignment.Address{}, false
}

// previous is the pod's assignment of the interface as it stands, when it was written for this pod.
func previous(pod *corev1.Pod, iface string) assignment.Interface {
	a, err := assignment.Parse(pod.Annotations[assignment.Annotation])
	if err != nil || a.PodUID != string(pod.UID) {
		return assignment.Interface{}
	}
	return a.Interfaces[iface]
}
