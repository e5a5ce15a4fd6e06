package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/braid-cni/braid/sriov-device/internal/selector"
)

func pf(t *testing.T, s string) selector.PF {
	t.Helper()
	p, err := selector.ParsePFName(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func root(t *testing.T, s string) selector.PF {
	t.Helper()
	p, err := selector.ParseRootDevice(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// An upstream SR-IOV network device plugin config, as its users have it today (legacy selector objects).
const upstreamConfig = `{
  "resourceList": [
    {
      "resourceName": "intel_sriov_netdevice",
      "selectors": {
        "vendors": ["8086"],
        "devices": ["154c", "10ed", "1889"],
        "drivers": ["i40evf", "ixgbevf", "iavf"],
        "isRdma": false
      }
    },
    {
      "resourceName": "intel_sriov_dpdk",
      "resourcePrefix": "intel.com",
      "selectors": {
        "vendors": ["8086"],
        "devices": ["154c"],
        "drivers": ["vfio-pci"],
        "pfNames": ["enp0s0f0", "enp2s2f1#0-3"],
        "needVhostNet": true
      }
    },
    {
      "resourceName": "mlnx_sriov_rdma",
      "resourcePrefix": "mellanox.com",
      "deviceType": "netDevice",
      "excludeTopology": true,
      "selectors": {
        "vendors": ["15B3"],
        "devices": ["101c"],
        "linkTypes": ["ether"],
        "rootDevices": ["0000:5e:00.0#0,2-3"],
        "pciAddresses": ["0000:5E:00.2"]
      }
    }
  ]
}`

func TestParseUpstreamLegacyConfig(t *testing.T) {
	got, err := Parse([]byte(upstreamConfig), "")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Resources: []Resource{
		{Name: "intel_sriov_netdevice", Prefix: "braid.dev", DeviceType: "netDevice", Selectors: []selector.Set{{
			Vendors: []string{"8086"}, Devices: []string{"154c", "10ed", "1889"},
			Drivers: []string{"i40evf", "ixgbevf", "iavf"},
		}}},
		{Name: "intel_sriov_dpdk", Prefix: "intel.com", DeviceType: "netDevice", Selectors: []selector.Set{{
			Vendors: []string{"8086"}, Devices: []string{"154c"}, Drivers: []string{"vfio-pci"},
			PFNames: []selector.PF{pf(t, "enp0s0f0"), pf(t, "enp2s2f1#0-3")}, NeedVhostNet: true,
		}}},
		{Name: "mlnx_sriov_rdma", Prefix: "mellanox.com", DeviceType: "netDevice", ExcludeTopology: true,
			Selectors: []selector.Set{{
				Vendors: []string{"15b3"}, Devices: []string{"101c"}, LinkTypes: []string{"ether"},
				RootDevices: []selector.PF{root(t, "0000:5e:00.0#0,2-3")}, PCIAddresses: []string{"0000:5e:00.2"},
			}}},
	}}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(selector.PF{})); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	if got.Resources[1].FullName() != "intel.com/intel_sriov_dpdk" {
		t.Errorf("FullName = %q", got.Resources[1].FullName())
	}
}

func TestParseSelectorListForm(t *testing.T) {
	got, err := Parse([]byte(`{"resourceList": [{
		"resourceName": "x710",
		"selectors": [
			{"pfNames": ["ens1f0#0-1"]},
			{"rootDevices": ["0000:3b:00.0#3"], "drivers": ["vfio-pci"], "needVhostNet": true}
		]}]}`), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Resources: []Resource{{Name: "x710", Prefix: "example.org", DeviceType: "netDevice",
		Selectors: []selector.Set{
			{PFNames: []selector.PF{pf(t, "ens1f0#0-1")}},
			{RootDevices: []selector.PF{root(t, "0000:3b:00.0#3")}, Drivers: []string{"vfio-pci"}, NeedVhostNet: true},
		}}}}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreUnexported(selector.PF{})); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
}

func TestParseEmptyResourceListServesNothing(t *testing.T) {
	got, err := Parse([]byte(`{"resourceList": []}`), "")
	if err != nil || len(got.Resources) != 0 {
		t.Fatalf("Parse = %+v, %v; want no resources, no error", got, err)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	// res wraps one resource object into a config; two puts it second, after a valid one.
	res := func(r string) string { return `{"resourceList": [` + r + `]}` }
	two := func(r string) string {
		return `{"resourceList": [{"resourceName": "ok", "selectors": {"vendors": ["8086"]}}, ` + r + `]}`
	}
	sel := func(s string) string { return res(`{"resourceName": "x", "selectors": ` + s + `}`) }
	tests := []struct {
		name, config string
		want         []string // each error line, in order
	}{
		{"not JSON", `{"resourceList": [`, []string{"config: not a JSON object"}},
		{"not an object", `[]`, []string{"config: not a JSON object"}},
		{"no resourceList", `{}`, []string{"resourceList: required"}},
		{"typo at the top", `{"resourcelist": []}`, []string{`resourcelist: unknown field`}},
		{"resourceList not a list", `{"resourceList": {}}`, []string{"resourceList: expected a list, got JSON object"}},
		{"resource not an object", res(`"x"`), []string{"resourceList[0]: not a JSON object"}},
		{"null resource", res(`null`), []string{"resourceList[0]: not a JSON object: null"}},
		{"unknown resource field", res(`{"resourceName": "x", "selector": {}, "selectors": {"vendors": ["8086"]}}`),
			[]string{"resourceList[0].selector: unknown field"}},
		{"no resourceName", res(`{"selectors": {"vendors": ["8086"]}}`),
			[]string{"resourceList[0].resourceName: required"}},
		{"resourceName with a dash", two(`{"resourceName": "x710-vf", "selectors": {"vendors": ["8086"]}}`),
			[]string{`resourceList[1].resourceName: "x710-vf" must consist of letters, digits and _`}},
		{"resourceName not a string", res(`{"resourceName": 7, "selectors": {"vendors": ["8086"]}}`),
			[]string{"resourceList[0].resourceName: expected a string, got JSON number"}},
		{"bad prefix", res(`{"resourceName": "x", "resourcePrefix": "Braid_Dev", "selectors": {"vendors": ["8086"]}}`),
			[]string{`resourceList[0].resourcePrefix: "Braid_Dev" is not a DNS subdomain`}},
		{"reserved prefix", res(`{"resourceName": "x", "resourcePrefix": "kubernetes.io", "selectors": {"vendors": ["8086"]}}`),
			[]string{`resourceList[0].resourcePrefix: "kubernetes.io": the kubernetes.io domain is reserved`}},
		{"name too long", res(`{"resourceName": "` + strings.Repeat("a", 64) + `", "selectors": {"vendors": ["8086"]}}`),
			[]string{`resourceList[0].resourceName: "braid.dev/aaaa`}},
		{"accelerator", res(`{"resourceName": "x", "deviceType": "accelerator", "selectors": {"vendors": ["8086"]}}`),
			[]string{`resourceList[0].deviceType: "accelerator": not supported by braid-sriov-dp (only "netDevice")`}},
		{"unknown deviceType", res(`{"resourceName": "x", "deviceType": "gpu", "selectors": {"vendors": ["8086"]}}`),
			[]string{`resourceList[0].deviceType: "gpu" is not a device type`}},
		{"additionalInfo", res(`{"resourceName": "x", "additionalInfo": {"a": {"b": "c"}}, "selectors": {"vendors": ["8086"]}}`),
			[]string{"resourceList[0].additionalInfo: not supported by braid-sriov-dp"}},
		{"duplicate", two(`{"resourceName": "ok", "selectors": {"vendors": ["15b3"]}}`),
			[]string{`resourceList[1].resourceName: "braid.dev/ok" is already resourceList[0]`}},
		{"same name, other prefix is fine, third duplicate is not",
			`{"resourceList": [{"resourceName": "a", "selectors": {"vendors": ["8086"]}},
			{"resourceName": "a", "resourcePrefix": "example.org", "selectors": {"vendors": ["8086"]}},
			{"resourceName": "a", "resourcePrefix": "example.org", "selectors": {"vendors": ["8086"]}}]}`,
			[]string{`resourceList[2].resourceName: "example.org/a" is already resourceList[1]`}},
		{"no selectors", res(`{"resourceName": "x"}`), []string{"resourceList[0].selectors: required"}},
		{"null selectors", sel(`null`), []string{"resourceList[0].selectors: required"}},
		{"empty selector list", sel(`[]`), []string{"resourceList[0].selectors: empty list"}},
		{"selectors a string", sel(`"8086"`), []string{"resourceList[0].selectors: must be an object or a list"}},
		{"empty selector object", sel(`{}`), []string{"resourceList[0].selectors: selects nothing"}},
		{"only needVhostNet", sel(`{"needVhostNet": true}`), []string{"resourceList[0].selectors: selects nothing"}},
		{"empty object in the list", sel(`[{"vendors": ["8086"]}, {}]`),
			[]string{"resourceList[0].selectors[1]: selects nothing"}},
		{"selector list item not an object", sel(`[{"vendors": ["8086"]}, 3]`),
			[]string{"resourceList[0].selectors[1]: not a JSON object"}},
		{"unknown selector", sel(`{"vendor": ["8086"]}`), []string{"resourceList[0].selectors.vendor: unknown field"}},
		{"vendors", sel(`{"vendors": ["8086", "80861"]}`),
			[]string{`resourceList[0].selectors.vendors[1]: "80861" is not a 4-digit hex PCI ID`}},
		{"vendors a string", sel(`{"vendors": "8086"}`),
			[]string{"resourceList[0].selectors.vendors: expected a list of strings, got JSON string"}},
		{"devices", sel(`{"devices": ["zzzz"]}`),
			[]string{`resourceList[0].selectors.devices[0]: "zzzz" is not a 4-digit hex PCI ID`}},
		{"drivers", sel(`{"drivers": ["iavf", ""]}`),
			[]string{`resourceList[0].selectors.drivers[1]: "" is not a driver name`}},
		{"pfNames range, second resource", two(`{"resourceName": "x", "selectors": {"pfNames": ["ens1f0#3-1"]}}`),
			[]string{`resourceList[1].selectors.pfNames[0]: "ens1f0#3-1": range "3-1": start 3 is after end 1`}},
		{"pfNames in the list form", sel(`[{"vendors": ["8086"]}, {"pfNames": ["ens1f0", "ens1f1#x"]}]`),
			[]string{`resourceList[0].selectors[1].pfNames[1]: "ens1f1#x": VF index "x" is not a number`}},
		{"rootDevices", sel(`{"rootDevices": ["3b:00.0"]}`),
			[]string{`resourceList[0].selectors.rootDevices[0]: "3b:00.0" is not a PCI address`}},
		{"pciAddresses", sel(`{"pciAddresses": ["0000:3b:02"]}`),
			[]string{`resourceList[0].selectors.pciAddresses[0]: "0000:3b:02" is not a PCI address`}},
		{"linkTypes", sel(`{"linkTypes": ["eth"]}`),
			[]string{`resourceList[0].selectors.linkTypes[0]: "eth" is not a link type`}},
		{"needVhostNet not a bool", sel(`{"vendors": ["8086"], "needVhostNet": "yes"}`),
			[]string{"resourceList[0].selectors.needVhostNet: expected true or false, got JSON string"}},
		{"isRdma asked", sel(`{"vendors": ["15b3"], "isRdma": true}`),
			[]string{"resourceList[0].selectors.isRdma: not supported by braid-sriov-dp"}},
		{"ddpProfiles asked", sel(`{"vendors": ["8086"], "ddpProfiles": ["GTPv1-C/U IPv4/IPv6 payload"]}`),
			[]string{"resourceList[0].selectors.ddpProfiles: not supported by braid-sriov-dp"}},
		{"vdpaType asked", sel(`{"vendors": ["15b3"], "vdpaType": "virtio"}`),
			[]string{"resourceList[0].selectors.vdpaType: not supported by braid-sriov-dp"}},
		{"every error at once", res(`{"resourceName": "a-b", "deviceType": "gpu",
			"selectors": {"vendors": ["x"], "pfNames": ["#1"]}}`), []string{
			`resourceList[0].resourceName: "a-b" must consist of letters, digits and _`,
			`resourceList[0].deviceType: "gpu" is not a device type`,
			`resourceList[0].selectors.pfNames[0]: "#1": the PF part before # is empty`,
			`resourceList[0].selectors.vendors[0]: "x" is not a 4-digit hex PCI ID`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.config), "")
			if err == nil {
				t.Fatalf("Parse accepted %s", tt.config)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("error %d = %q, want it to start with %q", i, lines[i], w)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %v is not a *FieldError", err)
			}
		})
	}
}

func TestUnsupportedIsClassifiable(t *testing.T) {
	_, err := Parse([]byte(`{"resourceList": [{"resourceName": "x", "selectors": {"vendors": ["15b3"], "isRdma": true}}]}`), "")
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("errors.Is(%v, ErrUnsupported) = false", err)
	}
}

func TestBadDefaultPrefix(t *testing.T) {
	_, err := Parse([]byte(`{"resourceList": []}`), "Not A Prefix")
	if err == nil || !strings.HasPrefix(err.Error(), "--resource-prefix: ") {
		t.Errorf("Parse with a bad default prefix = %v", err)
	}
}
