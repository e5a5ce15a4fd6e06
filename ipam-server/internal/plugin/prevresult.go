package plugin

import (
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/braid-cni/braid/ipam-server/internal/plugin/front"
)

// prevAddresses reads CHECK's prevResult (of the conf's version) and returns its addresses, e.g.
// 192.0.2.10/24. A null in its lists (a broken plugin earlier in the chain) is refused with the entry named:
// the CNI library's conversions dereference every entry.
func prevAddresses(conf *front.Conf) ([]string, error) {
	if conf.RawPrevResult == nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "braid-ipam: CHECK needs prevResult", "")
	}
	for _, list := range []string{"interfaces", "ips", "routes"} {
		entries, _ := conf.RawPrevResult[list].([]any)
		for i, e := range entries {
			if e == nil {
				return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("braid-ipam: prevResult.%s[%d]: is null", list, i), "")
			}
		}
	}
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "braid-ipam: prevResult", err.Error())
	}
	prev, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "braid-ipam: prevResult", err.Error())
	}
	addrs := make([]string, 0, len(prev.IPs))
	for _, ip := range prev.IPs {
		addrs = append(addrs, ip.Address.String())
	}
	return addrs, nil
}
