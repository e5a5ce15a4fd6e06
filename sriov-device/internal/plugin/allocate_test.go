package plugin

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/config"
	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/pool"
)

func TestEnvName(t *testing.T) {
	for _, tt := range []struct{ prefix, name, want string }{
		{"braid.dev", "x710", "PCIDEVICE_BRAID_DEV_X710"},
		{"intel.com", "intel_sriov_netdevice", "PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE"},
		{"my-org.example", "Mlx_VF", "PCIDEVICE_MY_ORG_EXAMPLE_MLX_VF"},
	} {
		if got := EnvName(tt.prefix, tt.name); got != tt.want {
			t.Errorf("EnvName(%q, %q) = %q, want %q", tt.prefix, tt.name, got, tt.want)
		}
	}
}

func TestContainerResponse(t *testing.T) {
	r := config.Resource{Name: "mixed", Prefix: "braid.dev"}
	netdev := pool.Device{Device: discover.Device{Address: "0000:3b:02.0", Driver: "iavf", IOMMUGroup: "13"}}
	vfio1 := pool.Device{Device: discover.Device{Address: "0000:3b:02.3", Driver: "vfio-pci", IOMMUGroup: "16"}}
	vfio2 := pool.Device{Device: discover.Device{Address: "0000:3b:02.4", Driver: "vfio-pci", IOMMUGroup: "17"},
		NeedVhostNet: true}

	got, err := containerResponse(r, []pool.Device{netdev, vfio1, vfio2})
	if err != nil {
		t.Fatal(err)
	}
	rw := func(p string) string { return p + ":" + p + ":rw" }
	wantSpecs := []string{rw("/dev/vfio/vfio"), rw("/dev/vfio/16"), rw("/dev/vfio/17"), rw("/dev/vhost-net"),
		rw("/dev/net/tun")}
	if diff := cmp.Diff(wantSpecs, specs(got.Devices)); diff != "" {
		t.Errorf("device specs (-want +got):\n%s", diff)
	}
	if got.Envs["PCIDEVICE_BRAID_DEV_MIXED"] != "0000:3b:02.0,0000:3b:02.3,0000:3b:02.4" {
		t.Errorf("PCIDEVICE_BRAID_DEV_MIXED = %q", got.Envs["PCIDEVICE_BRAID_DEV_MIXED"])
	}
	var info map[string]map[string]map[string]string
	if err := json.Unmarshal([]byte(got.Envs["PCIDEVICE_BRAID_DEV_MIXED_INFO"]), &info); err != nil {
		t.Fatalf("_INFO is not JSON: %v", err)
	}
	wantInfo := map[string]map[string]map[string]string{
		"0000:3b:02.0": {"generic": {"deviceID": "0000:3b:02.0"}},
		"0000:3b:02.3": {"generic": {"deviceID": "0000:3b:02.3"},
			"vfio": {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/16"}},
		"0000:3b:02.4": {"generic": {"deviceID": "0000:3b:02.4"},
			"vfio":  {"mount": "/dev/vfio/vfio", "dev-mount": "/dev/vfio/17"},
			"vhost": {"net-mount": "/dev/vhost-net", "tun-mount": "/dev/net/tun"}},
	}
	if diff := cmp.Diff(wantInfo, info); diff != "" {
		t.Errorf("_INFO (-want +got):\n%s", diff)
	}
	if len(got.Envs) != 2 {
		t.Errorf("envs = %v, want exactly the two variables", got.Envs)
	}
}

func TestAPIDevices(t *testing.T) {
	devs := []pool.Device{
		{Device: discover.Device{Address: "a", NUMANode: 1}, Healthy: true},
		{Device: discover.Device{Address: "b", NUMANode: -1}, Healthy: false},
	}
	got := apiDevices(config.Resource{}, devs)
	if len(got) != 2 || got[0].GetID() != "a" || got[0].GetHealth() != pluginapi.Healthy ||
		len(got[0].GetTopology().GetNodes()) != 1 || got[0].GetTopology().GetNodes()[0].GetID() != 1 ||
		got[1].GetID() != "b" || got[1].GetHealth() != pluginapi.Unhealthy || got[1].GetTopology() != nil {
		t.Errorf("apiDevices = %v", got)
	}
	noTopo := apiDevices(config.Resource{ExcludeTopology: true}, devs)
	if noTopo[0].Topology != nil {
		t.Errorf("excludeTopology still reports %v", noTopo[0].Topology)
	}
}

// specs renders device specs as "host:container:permissions" for comparison.
func specs(list []*pluginapi.DeviceSpec) []string {
	var out []string
	for _, s := range list {
		out = append(out, s.GetHostPath()+":"+s.GetContainerPath()+":"+s.GetPermissions())
	}
	return out
}
