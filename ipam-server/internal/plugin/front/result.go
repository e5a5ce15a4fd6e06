package front

import (
	"context"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// Otherwise finds the assignment when braid's node daemon cannot answer, within ctx.
type Otherwise func(ctx context.Context, conf *Conf, pod PodArgs, ifName string) (assignment.Interface, error)

// Add is braid-ipam's ADD: it returns the addresses braid-ipam-server assigned to (pod, interface), waiting
// for them a bounded time, from braid's node daemon when askDaemon and it runs (its watch cache has the pod),
// else as otherwise finds them. A pod being deleted without them fails at once: the server never serves it.
func Add(args *skel.CmdArgs, askDaemon bool, otherwise Otherwise) error {
	conf, pod, err := Parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.IPAM.Wait)
	defer cancel()
	var iface assignment.Interface
	answered := false
	if askDaemon {
		if iface, answered, err = AskDaemon(ctx, conf.IPAM.DaemonSocket, pod, args.IfName); err != nil {
			return err
		}
	}
	if !answered {
		if iface, err = otherwise(ctx, conf, pod, args.IfName); err != nil {
			return err
		}
	}
	res, err := ToResult(iface, conf.CNIVersion)
	if err != nil {
		return err
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// ToResult turns an assignment into a CNI result of cniVersion.
func ToResult(iface assignment.Interface, cniVersion string) (types.Result, error) {
	res := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	gateways := map[bool]net.IP{}
	for _, a := range iface.Addresses {
		ip, ipnet, err := net.ParseCIDR(a.CIDR)
		if err != nil {
			return nil, types.NewError(types.ErrInternal, "braid-ipam: bad address in the assignment", a.CIDR)
		}
		ipnet.IP = ip
		cfg := &types100.IPConfig{Address: *ipnet}
		if a.Gateway != "" {
			cfg.Gateway = net.ParseIP(a.Gateway)
			gateways[ip.To4() != nil] = cfg.Gateway
		}
		res.IPs = append(res.IPs, cfg)
	}
	for _, r := range iface.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, types.NewError(types.ErrInternal, "braid-ipam: bad route in the assignment", r.Dst)
		}
		route := &types.Route{Dst: *dst}
		if r.GW != "" {
			route.GW = net.ParseIP(r.GW)
		} else {
			route.GW = gateways[dst.IP.To4() != nil]
		}
		res.Routes = append(res.Routes, route)
	}
	if iface.DNS != nil {
		res.DNS = types.DNS{Nameservers: iface.DNS.Nameservers, Domain: iface.DNS.Domain, Search: iface.DNS.Search, Options: iface.DNS.Options}
	}
	return res.GetAsVersion(cniVersion)
}
