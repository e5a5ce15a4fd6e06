package plugin

import (
	"encoding/json"
	"fmt"
	"strings"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/devinfo"
	"github.com/braid-cni/braid/sriov-device/internal/pool"
)

// Device nodes handed to containers.
const (
	vfioContainer = "/dev/vfio/vfio"
	vhostNet      = "/dev/vhost-net"
	tun           = "/dev/net/tun"
)

// EnvName is the variable that lists the PCI addresses a container got from a resource:
// PCIDEVICE_<PREFIX>_<NAME>, uppercased, with the prefix's dots (and anything else a variable name cannot hold)
// turned into underscores — "braid.dev/x710" gives PCIDEVICE_BRAID_DEV_X710, as the upstream plugin names it.
func EnvName(prefix, name string) string {
	key := strings.ToUpper("PCIDEVICE_" + prefix + "_" + name)
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, key)
}

// containerResponse is what one container gets for devs, in the order the kubelet asked for them:
//   - PCIDEVICE_<PREFIX>_<NAME>: the PCI addresses, comma-separated;
//   - PCIDEVICE_<PREFIX>_<NAME>_INFO: per address, what each info provider knows, as the upstream plugin
//     writes it ({"0000:3b:02.0":{"generic":{"deviceID":"0000:3b:02.0"},"vfio":{...}}});
//   - /dev/vfio/vfio and /dev/vfio/<group> for functions bound to vfio-pci, /dev/vhost-net and /dev/net/tun when
//     the selector asked for vhost-net.
func containerResponse(r config.Resource, devs []pool.Device) (*pluginapi.ContainerAllocateResponse, error) {
	ids := make([]string, len(devs))
	info := make(map[string]map[string]map[string]string, len(devs))
	var specs []*pluginapi.DeviceSpec
	seen := map[string]bool{}
	addSpec := func(path string) {
		if !seen[path] {
			seen[path] = true
			specs = append(specs, &pluginapi.DeviceSpec{HostPath: path, ContainerPath: path, Permissions: "rw"})
		}
	}
	for i, d := range devs {
		ids[i] = d.Address
		providers := map[string]map[string]string{"generic": {"deviceID": d.Address}}
		if d.Driver == "vfio-pci" && d.IOMMUGroup != "" {
			group := "/dev/vfio/" + d.IOMMUGroup
			addSpec(vfioContainer)
			addSpec(group)
			providers["vfio"] = map[string]string{"mount": vfioContainer, "dev-mount": group}
		}
		if d.NeedVhostNet {
			addSpec(vhostNet)
			addSpec(tun)
			providers["vhost"] = map[string]string{"net-mount": vhostNet, "tun-mount": tun}
		}
		info[d.Address] = providers
	}
	infoJSON, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("resource %s: device info: %w", r.FullName(), err)
	}
	key := EnvName(r.Prefix, r.Name)
	return &pluginapi.ContainerAllocateResponse{
		Envs:    map[string]string{key: strings.Join(ids, ","), key + "_INFO": string(infoJSON)},
		Devices: specs,
	}, nil
}

// deviceInfo is the device-info document (spec 1.1.0) of an allocated function.
func deviceInfo(d pool.Device) devinfo.Info {
	pci := &devinfo.PCI{PCIAddress: d.Address, PFPCIAddress: d.PF}
	if d.NeedVhostNet {
		pci.VhostNet = vhostNet
	}
	return devinfo.Info{Type: devinfo.TypePCI, Version: devinfo.SpecVersion, PCI: pci}
}

// apiDevices is the device list the kubelet gets for a pool.
func apiDevices(r config.Resource, devs []pool.Device) []*pluginapi.Device {
	out := make([]*pluginapi.Device, len(devs))
	for i, d := range devs {
		health := pluginapi.Healthy
		if !d.Healthy {
			health = pluginapi.Unhealthy
		}
		ad := &pluginapi.Device{ID: d.Address, Health: health}
		if d.NUMANode >= 0 && !r.ExcludeTopology {
			ad.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(d.NUMANode)}}}
		}
		out[i] = ad
	}
	return out
}
