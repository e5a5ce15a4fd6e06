package netstatus

import (
	"encoding/json"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/google/go-cmp/cmp"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
)

// bridgeResult is what the bridge plugin returns: the bridge, the host veth and the pod's eth0, with the
// pod's addresses bound to interface 2 and the bridge's gateway address bound to the bridge.
const bridgeResult = `{"cniVersion":"%s","interfaces":[{"name":"cni0","mac":"0a:58:00:00:00:01"},
 {"name":"veth1234","mac":"0a:58:00:00:00:02"},{"name":"eth0","mac":"0a:58:c0:00:02:05","mtu":1500,"sandbox":"/var/run/netns/p"}],
 "ips":[{"address":"203.0.113.5/24","gateway":"203.0.113.1","interface":2},{"address":"2001:db8:1::5/64","gateway":"2001:db8:1::1","interface":2},
 {"address":"203.0.113.1/24","interface":0}],
 "routes":[{"dst":"0.0.0.0/0","gw":"203.0.113.1"},{"dst":"::/0","gw":"2001:db8:1::1"},{"dst":"198.51.100.0/24","gw":"203.0.113.254"}],
 "dns":{"nameservers":["203.0.113.53"],"search":["example.com"]}}`

func result(t *testing.T, version, tmpl string) types.Result {
	t.Helper()
	r, err := create.Create(version, []byte(sprintf(tmpl, version)))
	if err != nil {
		t.Fatalf("create %s result: %v", version, err)
	}
	return r
}

func sprintf(tmpl, v string) string {
	out := []byte{}
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] == '%' && i+1 < len(tmpl) && tmpl[i+1] == 's' {
			out = append(out, v...)
			i++
			continue
		}
		out = append(out, tmpl[i])
	}
	return string(out)
}

func TestBuild(t *testing.T) {
	dev := &nadv1.DeviceInfo{Type: "pci", Version: "1.1.0", Pci: &nadv1.PciDevice{PciAddress: "0000:18:02.5"}}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(v, func(t *testing.T) {
			cases := []struct {
				name string
				in   Input
				want Status
			}{
				{"master with default route", Input{Name: "cbr0", IfName: "eth0", Result: result(t, v, bridgeResult), Default: true, HoldsDefaultRoute: true},
					Status{Name: "cbr0", Interface: "eth0", IPs: []string{"203.0.113.5", "2001:db8:1::5"}, MAC: "0a:58:c0:00:02:05", MTU: 1500,
						Default: true, DNS: &DNS{Nameservers: []string{"203.0.113.53"}, Search: []string{"example.com"}},
						DefaultRoute: []string{"203.0.113.1", "2001:db8:1::1"}, Gateway: []string{"203.0.113.1", "2001:db8:1::1"}}},
				// "gateway" is Multus' key: the default routes' gateways of every attachment, requested or not.
				{"master without a default-route request", Input{Name: "cbr0", IfName: "eth0", Result: result(t, v, bridgeResult), Default: true},
					Status{Name: "cbr0", Interface: "eth0", IPs: []string{"203.0.113.5", "2001:db8:1::5"}, MAC: "0a:58:c0:00:02:05", MTU: 1500,
						Default: true, DNS: &DNS{Nameservers: []string{"203.0.113.53"}, Search: []string{"example.com"}},
						Gateway: []string{"203.0.113.1", "2001:db8:1::1"}}},
				{"extra network with its own default route", Input{Name: "ns/net-b", IfName: "net2", Result: result(t, v,
					`{"cniVersion":"%s","interfaces":[{"name":"net2","sandbox":"/p"}],"ips":[{"address":"198.51.100.7/24","interface":0}],
					"routes":[{"dst":"0.0.0.0/0","gw":"198.51.100.1"},{"dst":"0.0.0.0/0"}]}`)},
					Status{Name: "ns/net-b", Interface: "net2", IPs: []string{"198.51.100.7"}, Gateway: []string{"198.51.100.1"}}},
				{"macvlan with device info", Input{Name: "ns/net-a", IfName: "net1", DeviceInfo: dev, Result: result(t, v,
					`{"cniVersion":"%s","interfaces":[{"name":"net1","mac":"02:00:00:00:00:20","sandbox":"/p"}],"ips":[{"address":"198.51.100.20/24","interface":0}]}`)},
					Status{Name: "ns/net-a", Interface: "net1", IPs: []string{"198.51.100.20"}, MAC: "02:00:00:00:00:20", DeviceInfo: dev}},
				{"IPAM-only result without interfaces", Input{Name: "ns/thick", IfName: "net2", Result: result(t, v,
					`{"cniVersion":"%s","ips":[{"address":"192.0.2.9/24"},{"address":"2001:db8::9/64"}]}`)},
					Status{Name: "ns/thick", Interface: "net2", IPs: []string{"192.0.2.9", "2001:db8::9"}}},
				{"no result", Input{Name: "ns/x", IfName: "net3"}, Status{Name: "ns/x", Interface: "net3"}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					got, err := Build(tc.in)
					if err != nil {
						t.Fatal(err)
					}
					if v == "0.4.0" {
						tc.want.MTU = 0 // 0.4.0 results carry no MTU
					}
					if diff := cmp.Diff(tc.want, got); diff != "" {
						t.Fatalf("(-want +got):\n%s", diff)
					}
				})
			}
		})
	}
}

func TestEncodeKeepsSpecKeys(t *testing.T) {
	s, err := Encode([]Status{{Name: "cbr0", Interface: "eth0", Default: true, DefaultRoute: []string{"192.0.2.1"}}, {Name: "ns/a", Interface: "net1"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"name":"cbr0","interface":"eth0","default":true,"default-route":["192.0.2.1"]},{"name":"ns/a","interface":"net1","default":false}]`
	if s != want {
		t.Fatalf("Encode = %s\nwant     %s", s, want)
	}
	back, err := Decode(s)
	if err != nil || len(back) != 2 || !back[0].Default || back[1].Default {
		t.Fatalf("Decode = %+v, %v", back, err)
	}
	// Consumers that use the NAD client's type must be able to read what braid writes.
	var theirs []nadv1.NetworkStatus
	if err := jsonUnmarshal(s, &theirs); err != nil || theirs[0].Interface != "eth0" || !theirs[0].Default {
		t.Fatalf("NAD client type reads %+v, %v", theirs, err)
	}
	// Multus writes the attachment's default gateways as "gateway", which the NAD client's type reads.
	s, err = Encode([]Status{{Name: "cbr0", Interface: "eth0", Default: true, Gateway: []string{"192.0.2.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := jsonUnmarshal(s, &theirs); err != nil || !cmp.Equal(theirs[0].Gateway, []string{"192.0.2.1"}) {
		t.Fatalf("NAD client type reads %+v from %s, %v; want gateway [192.0.2.1]", theirs, s, err)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
