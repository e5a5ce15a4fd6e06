package delegate

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/braid-cni/braid/crds/selection"
)

func plugins(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var raw struct {
		Name    string           `json:"name"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	return raw.Plugins
}

func TestFromNADConfig(t *testing.T) {
	cases := []struct {
		name, config, wantName string
		wantTypes              []string
		wantVersion            string // when set
		wantErr                string
	}{
		{name: "conf gets the NAD name", config: `{"cniVersion":"1.0.0","type":"macvlan","master":"eth1"}`, wantName: "net-a", wantTypes: []string{"macvlan"}},
		{name: "conf keeps its own name", config: `{"cniVersion":"1.0.0","name":"mv","type":"macvlan"}`, wantName: "mv", wantTypes: []string{"macvlan"}},
		{name: "conflist", config: `{"cniVersion":"1.1.0","plugins":[{"type":"macvlan"},{"type":"tuning"}]}`, wantName: "net-a", wantTypes: []string{"macvlan", "tuning"}},
		{name: "not JSON", config: `{"type":`, wantErr: "spec.config: not a JSON object"},
		// As the CNI libraries read it, and Multus passes it on.
		{name: "no version is 0.1.0", config: `{"type":"macvlan"}`, wantName: "net-a", wantTypes: []string{"macvlan"}, wantVersion: "0.1.0"},
		{name: "empty version is 0.1.0", config: `{"cniVersion":"","plugins":[{"type":"macvlan"}]}`, wantName: "net-a", wantTypes: []string{"macvlan"}, wantVersion: "0.1.0"},
		{name: "list of versions", config: `{"cniVersions":["0.4.0","1.0.0"],"plugins":[{"type":"macvlan"}]}`, wantName: "net-a", wantTypes: []string{"macvlan"}, wantVersion: "1.0.0"},
		{name: "version not a string", config: `{"cniVersion":1.0,"type":"macvlan"}`, wantErr: `"cniVersion" must be a string such as "1.0.0", not a number`},
		{name: "no type", config: `{"cniVersion":"1.0.0","master":"eth1"}`, wantErr: `neither "type" nor "plugins"`},
		{name: "empty plugins", config: `{"cniVersion":"1.0.0","plugins":[]}`, wantErr: "no plugins"},
		{name: "plugin without type", config: `{"cniVersion":"1.0.0","plugins":[{"master":"x"}]}`, wantErr: "missing 'type'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			list, err := FromNADConfig("net-a", tc.config)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrConfig saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var types []string
			for _, p := range list.Plugins {
				types = append(types, p.Network.Type)
			}
			if list.Name != tc.wantName || !cmp.Equal(types, tc.wantTypes) {
				t.Fatalf("got name %q types %v", list.Name, types)
			}
			if tc.wantVersion != "" && list.CNIVersion != tc.wantVersion {
				t.Fatalf("got cniVersion %q, want %q", list.CNIVersion, tc.wantVersion)
			}
		})
	}
}

func TestCustomizeMergesArgsAndDevice(t *testing.T) {
	list, err := FromNADConfig("sriov", `{"cniVersion":"1.0.0","plugins":[{"type":"sriov","args":{"cni":{"spoofchk":"off","vlan":5}}},{"type":"tuning"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Customize(list, map[string]any{"spoofchk": "on", "trust": "on"}, "0000:18:02.5")
	if err != nil {
		t.Fatal(err)
	}
	ps := plugins(t, out.Bytes)
	want0 := map[string]any{"spoofchk": "on", "trust": "on", "vlan": float64(5)}
	if diff := cmp.Diff(want0, ps[0]["args"].(map[string]any)["cni"]); diff != "" {
		t.Errorf("plugin 0 args.cni (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"spoofchk": "on", "trust": "on"}, ps[1]["args"].(map[string]any)["cni"]); diff != "" {
		t.Errorf("plugin 1 args.cni (-want +got):\n%s", diff)
	}
	if ps[0]["deviceID"] != "0000:18:02.5" || ps[1]["deviceID"] != nil {
		t.Errorf("deviceID on %v / %v, want the first plugin only", ps[0]["deviceID"], ps[1]["deviceID"])
	}
	// host-device reads the device from "pciBusID" (Multus sets both keys), not from "deviceID".
	if ps[0]["pciBusID"] != "0000:18:02.5" || ps[1]["pciBusID"] != nil {
		t.Errorf("pciBusID on %v / %v, want the first plugin only", ps[0]["pciBusID"], ps[1]["pciBusID"])
	}
	if string(list.Plugins[0].Bytes) == string(out.Plugins[0].Bytes) {
		t.Error("the customised plugin config equals the original")
	}
	if !strings.Contains(string(list.Plugins[0].Bytes), `"off"`) {
		t.Error("Customize modified its input")
	}
	same, err := Customize(list, nil, "")
	if err != nil || same != list {
		t.Errorf("Customize without options = %v, %v; want the input back", same, err)
	}
}

func TestCapabilities(t *testing.T) {
	list, err := FromNADConfig("net-b", `{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","capabilities":{"mac":true}},
		{"type":"static","capabilities":{"ips":true,"bandwidth":false}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	ok := selection.Element{Name: "net-b", IPs: []string{"198.51.100.20/24"}, MAC: "02:00:00:00:00:20"}
	if err := CheckCapabilities("ns/net-b", list, ok); err != nil {
		t.Fatalf("declared capabilities refused: %v", err)
	}
	for _, tc := range []struct {
		elem      selection.Element
		key, capa string
	}{
		{selection.Element{Bandwidth: &selection.Bandwidth{IngressRate: 1}}, "bandwidth", CapBandwidth},
		{selection.Element{PortMappings: []selection.PortMapping{{HostPort: 1, ContainerPort: 1, Protocol: "tcp"}}}, "portMappings", CapPortMappings},
		{selection.Element{InfinibandGUID: "24:8a:07:03:00:8d:ae:2f"}, "infiniband-guid", CapInfinibandGUID},
	} {
		err := CheckCapabilities("ns/net-b", list, tc.elem)
		var ce *CapabilityError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCapability) || ce.Key != tc.key || ce.Capability != tc.capa {
			t.Errorf("CheckCapabilities(%+v) = %v, want a CapabilityError for %s", tc.elem, err, tc.key)
			continue
		}
		if !strings.Contains(err.Error(), "ns/net-b") || !strings.Contains(err.Error(), tc.capa) {
			t.Errorf("error %q does not name the network and capability", err)
		}
	}
	args := CapabilityArgs(ok, "0000:01:00.1", "/run/devinfo/cni/x")
	want := map[string]any{CapIPs: []string{"198.51.100.20/24"}, CapMAC: "02:00:00:00:00:20", CapDeviceID: "0000:01:00.1", CapDeviceInfoFile: "/run/devinfo/cni/x"}
	if diff := cmp.Diff(want, args); diff != "" {
		t.Errorf("CapabilityArgs (-want +got):\n%s", diff)
	}
	is := func(want string) func(string) bool { return func(t string) bool { return t == want } }
	if i, typ := FindType(list, is("braid")); i != -1 || typ != "" {
		t.Errorf("FindType(braid) = %d %q, want -1", i, typ)
	}
	if i, typ := FindType(list, is("static")); i != 1 || typ != "static" {
		t.Errorf("FindType(static) = %d %q, want 1 static", i, typ)
	}
}
