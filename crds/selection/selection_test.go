package selection

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

func TestParseValid(t *testing.T) {
	cases := []struct {
		name  string
		value string
		want  []Element
	}{
		{"empty", "", nil},
		{"blank", "  \n ", nil},
		{"empty JSON list", "[]", []Element{}},
		{"one name", "net-a", []Element{{Name: "net-a", Namespace: "pods"}}},
		{"comma list with spaces", " net-a , other/net-b ,net-c@data0",
			[]Element{{Name: "net-a", Namespace: "pods"}, {Name: "net-b", Namespace: "other"}, {Name: "net-c", Namespace: "pods", Interface: "data0"}}},
		{"namespace and interface", "ns1/net-a@net7", []Element{{Name: "net-a", Namespace: "ns1", Interface: "net7"}}},
		{"Multus' empty namespace and interface", "/net-a, net-b@ ,/net-c@",
			[]Element{{Name: "net-a", Namespace: "pods"}, {Name: "net-b", Namespace: "pods"}, {Name: "net-c", Namespace: "pods"}}},
		{"JSON empty optional values are absent, as Multus reads them", `[{"name":"a","interface":"","mac":"","ips":[ ]}]`,
			[]Element{{Name: "a", Namespace: "pods"}}},
		{"same network twice", "net-a,net-a", []Element{{Name: "net-a", Namespace: "pods"}, {Name: "net-a", Namespace: "pods"}}},
		{"63-char name", strings.Repeat("a", 63), []Element{{Name: strings.Repeat("a", 63), Namespace: "pods"}}},
		{"JSON minimal", `[{"name":"net-a"}]`, []Element{{Name: "net-a", Namespace: "pods"}}},
		{"JSON every field", `[{"name":"net-b","namespace":"other","interface":"data1",
			"ips":["198.51.100.7/24","2001:db8::7/64","192.0.2.9"],"mac":"02:23:45:67:89:01",
			"infiniband-guid":"24:8a:07:03:00:8d:ae:2f","cni-args":{"spoofchk":"on","vlan":7},
			"bandwidth":{"ingressRate":2048,"ingressBurst":300,"egressRate":8000,"egressBurst":200},
			"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"TCP"},{"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"192.0.2.1"}],
			"default-route":["198.51.100.1","2001:db8::1"],"deviceID":"0000:18:02.5","org.example.extra":{"x":1}}]`,
			[]Element{{
				Name: "net-b", Namespace: "other", Interface: "data1",
				IPs: []string{"198.51.100.7/24", "2001:db8::7/64", "192.0.2.9"}, MAC: "02:23:45:67:89:01",
				InfinibandGUID: "24:8a:07:03:00:8d:ae:2f", CNIArgs: map[string]any{"spoofchk": "on", "vlan": json.Number("7")},
				Bandwidth:    &Bandwidth{IngressRate: 2048, IngressBurst: 300, EgressRate: 8000, EgressBurst: 200},
				PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 53, ContainerPort: 53, Protocol: "udp", HostIP: "192.0.2.1"}},
				DefaultRoute: addrs("198.51.100.1", "2001:db8::1"), HasDefaultRoute: true, DeviceID: "0000:18:02.5",
			}}},
		{"JSON empty default-route list is allowed", `[{"name":"a","default-route":[]}]`,
			[]Element{{Name: "a", Namespace: "pods", DefaultRoute: []netip.Addr{}, HasDefaultRoute: true}}},
		{"JSON port protocol defaults to tcp", `[{"name":"a","portMappings":[{"hostPort":1,"containerPort":65535}]}]`,
			[]Element{{Name: "a", Namespace: "pods", PortMappings: []PortMapping{{HostPort: 1, ContainerPort: 65535, Protocol: "tcp"}}}}},
		{"JSON Multus interfaceRequest alias", `[{"name":"a","interfaceRequest":"north"}]`,
			[]Element{{Name: "a", Namespace: "pods", Interface: "north"}}},
		{"JSON null optional keys are absent", `[{"name":"a","ips":null,"cni-args":null,"interface":null}]`,
			[]Element{{Name: "a", Namespace: "pods"}}},
		{"JSON ipam-claim-reference", `[{"name":"a","ipam-claim-reference":"vm-a.tenantred"}]`,
			[]Element{{Name: "a", Namespace: "pods", IPAMClaimReference: "vm-a.tenantred"}}},
		{"JSON infiniband 20-byte address", `[{"name":"a","infiniband-guid":"80:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22"}]`,
			[]Element{{Name: "a", Namespace: "pods", InfinibandGUID: "80:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.value, "pods")
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.value, err)
			}
			if diff := cmp.Diff(tc.want, got, cmpAddr, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("Parse(%q) mismatch (-want +got):\n%s", tc.value, diff)
			}
		})
	}
}

func TestParseInvalidNamesTheField(t *testing.T) {
	cases := []struct {
		name, value, field, reason string
	}{
		{"upper case name", "Net-A", "networks[0].name", "DNS-1123"},
		{"name ends with dash", "net-", "networks[0].name", "DNS-1123"},
		{"64-char name", strings.Repeat("a", 64), "networks[0].name", "longer than 63"},
		{"bad namespace", "Bad_NS/net-a", "networks[0].namespace", "DNS-1123"},
		{"empty element", "net-a,,net-b", "networks[1]", "empty element"},
		{"trailing comma", "net-a,", "networks[1]", "empty element"},
		{"two slashes", "a/b/c", "networks[0]", "more than one '/'"},
		{"two ats", "a@b@c", "networks[0]", "more than one '@'"},
		{"interface too long", "net-a@abcdefghijklmnop", "networks[0].interface", "longer than 15"},
		{"interface lo", "net-a@lo", "networks[0].interface", "loopback"},
		{"JSON interface lo", `[{"name":"a","interface":"lo"}]`, "networks[0].interface", "loopback"},
		{"interface with colon", `[{"name":"a","interface":"eth0:1"}]`, "networks[0].interface", "':'"},
		{"interface name template", "net-a@net%d", "networks[0].interface", "'%'"},
		{"duplicate interface", "a@x1,b@x1", "networks[1].interface", "already requested by networks[0]"},
		{"JSON object not list", `{"name":"a"}`, "networks", "must be a list"},
		{"broken JSON", `[{"name":"a"`, "networks", "not a valid JSON list"},
		{"JSON element not an object", `["net-a"]`, "networks[0]", "must be an object"},
		{"JSON missing name", `[{"namespace":"x"}]`, "networks[0].name", "is required"},
		{"JSON name wrong type", `[{"name":7}]`, "networks[0].name", "type string"},
		{"JSON name with slash", `[{"name":"ns/a"}]`, "networks[0].name", "DNS-1123"},
		{"ips bad address", `[{"name":"a","ips":["198.51.100.300/24"]}]`, "networks[0].ips[0]", "not an IPv4 or IPv6"},
		{"ips bad prefix", `[{"name":"a","ips":["192.0.2.1/24","2001:db8::1/129"]}]`, "networks[0].ips[1]", "not an IPv4 or IPv6"},
		{"ips not a list", `[{"name":"a","ips":"192.0.2.1"}]`, "networks[0].ips", "type []string"},
		{"mac bad", `[{"name":"a","mac":"02:23:45:67:89"}]`, "networks[0].mac", "6-byte"},
		{"mac is an infiniband guid", `[{"name":"a","mac":"24:8a:07:03:00:8d:ae:2f"}]`, "networks[0].mac", "6-byte"},
		{"mac multicast", `[{"name":"a","mac":"01:00:5e:00:00:01"}]`, "networks[0].mac", "unicast"},
		{"mac all zero", `[{"name":"a","mac":"00:00:00:00:00:00"}]`, "networks[0].mac", "unicast"},
		{"default-route unspecified", `[{"name":"a","default-route":["0.0.0.0"]}]`, "networks[0].default-route[0]", "not a gateway"},
		{"default-route multicast", `[{"name":"a","default-route":["ff02::1"]}]`, "networks[0].default-route[0]", "not a gateway"},
		{"infiniband bad", `[{"name":"a","infiniband-guid":"02:23:45:67:89:01"}]`, "networks[0].infiniband-guid", "8-byte"},
		{"two default routes", `[{"name":"a","default-route":["192.0.2.1"]},{"name":"b","default-route":[]}]`, "networks[1].default-route", "at most one"},
		{"default-route not an IP", `[{"name":"a","default-route":["192.0.2.0/24"]}]`, "networks[0].default-route[0]", "not a gateway"},
		{"bandwidth empty", `[{"name":"a","bandwidth":{}}]`, "networks[0].bandwidth", "at least one"},
		{"bandwidth zero rate", `[{"name":"a","bandwidth":{"ingressRate":0}}]`, "networks[0].bandwidth.ingressRate", "positive"},
		{"bandwidth burst without rate", `[{"name":"a","bandwidth":{"egressBurst":10}}]`, "networks[0].bandwidth.egressBurst", "needs egressRate"},
		{"bandwidth fraction", `[{"name":"a","bandwidth":{"ingressRate":1.5}}]`, "networks[0].bandwidth.ingressRate", "int64"},
		{"bandwidth unknown key", `[{"name":"a","bandwidth":{"rate":1}}]`, "networks[0].bandwidth.rate", "unknown key"},
		{"portMappings empty", `[{"name":"a","portMappings":[]}]`, "networks[0].portMappings", "at least one"},
		{"hostPort out of range", `[{"name":"a","portMappings":[{"hostPort":0,"containerPort":80}]}]`, "networks[0].portMappings[0].hostPort", "between 1 and 65535"},
		{"containerPort out of range", `[{"name":"a","portMappings":[{"hostPort":80,"containerPort":70000}]}]`, "networks[0].portMappings[0].containerPort", "between 1 and 65535"},
		{"bad protocol", `[{"name":"a","portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}]`, "networks[0].portMappings[0].protocol", "TCP, UDP, SCTP"},
		{"portMapping key in wrong case", `[{"name":"a","portMappings":[{"hostPort":80,"containerPort":80,"hostport":1}]}]`, "networks[0].portMappings[0].hostport", "unknown key"},
		{"cni-args not a map", `[{"name":"a","cni-args":["x"]}]`, "networks[0].cni-args", "type map"},
		{"unknown reserved key", `[{"name":"a","ifname":"x"}]`, "networks[0].ifname", "unknown key"},
		{"ips and claim together", `[{"name":"a","ips":["192.0.2.1"],"ipam-claim-reference":"c"}]`, "networks[0].ipam-claim-reference", "cannot be combined"},
		{"interfaceRequest conflicts", `[{"name":"a","interface":"x","interfaceRequest":"y"}]`, "networks[0].interfaceRequest", "differs"},
		{"empty deviceID", `[{"name":"a","deviceID":" "}]`, "networks[0].deviceID", "must not be empty"},
		{"null element", `[null]`, "networks[0]", "not null"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.value, "pods")
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error naming %s", tc.value, got, tc.field)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v (%T) is not a *FieldError wrapping ErrInvalid", tc.value, err, err)
			}
			if fe.Field != tc.field {
				t.Errorf("Parse(%q) error names field %q, want %q (error: %v)", tc.value, fe.Field, tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Parse(%q) error %q does not say %q", tc.value, err, tc.reason)
			}
		})
	}
}

func TestParseDefaultNetwork(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  Element
		field string
	}{
		{value: "cbr0", want: Element{Name: "cbr0", Namespace: "multus-ns"}},
		{value: "kube-system/calico", want: Element{Name: "calico", Namespace: "kube-system"}},
		{value: `[{"name":"calico","namespace":"kube-system"}]`, want: Element{Name: "calico", Namespace: "kube-system"}},
		{value: "a,b", field: "default-network"},
		{value: "a@eth1", field: "default-network"},
		{value: "", field: "default-network"},
		{value: "Bad", field: "default-network[0].name"},
	} {
		got, err := ParseDefaultNetwork(tc.value, "multus-ns")
		if tc.field == "" {
			if err != nil || !cmp.Equal(got, tc.want, cmpAddr, cmpopts.EquateEmpty()) {
				t.Errorf("ParseDefaultNetwork(%q) = %+v, %v; want %+v", tc.value, got, err, tc.want)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("ParseDefaultNetwork(%q) error = %v, want one naming %s", tc.value, err, tc.field)
		}
	}
}

func TestAssignInterfaces(t *testing.T) {
	master := []string{"eth0"}
	for _, tc := range []struct {
		name  string
		taken []string
		first int
		elems []Element
		want  []string
		field string
	}{
		{name: "generated", taken: master, first: 1, elems: []Element{{Name: "a"}, {Name: "b"}, {Name: "c"}}, want: []string{"net1", "net2", "net3"}},
		{name: "custom keeps position", taken: master, first: 1, elems: []Element{{Name: "a"}, {Name: "b", Interface: "data0"}, {Name: "c"}}, want: []string{"net1", "data0", "net3"}},
		{name: "requested netN skipped", taken: master, first: 1, elems: []Element{{Name: "a", Interface: "net2"}, {Name: "b"}, {Name: "c"}}, want: []string{"net2", "net3", "net4"}},
		{name: "after two default networks", taken: []string{"eth0", "net1", "net2"}, first: 3, elems: []Element{{Name: "a"}, {Name: "b"}}, want: []string{"net3", "net4"}},
		{name: "master taken", taken: master, first: 1, elems: []Element{{Name: "a", Interface: "eth0"}}, field: "networks[0].interface"},
		{name: "default network's name taken", taken: []string{"eth0", "net1"}, first: 2, elems: []Element{{Name: "a"}, {Name: "b", Interface: "net1"}}, field: "networks[1].interface"},
		{name: "duplicate", taken: master, first: 1, elems: []Element{{Name: "a", Interface: "x"}, {Name: "b", Interface: "x"}}, field: "networks[1].interface"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AssignInterfaces(tc.taken, tc.first, tc.elems)
			if tc.field != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Fatalf("AssignInterfaces error = %v, want one naming %s", err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAssignAllNumbersPodNetworksAfterDefaults(t *testing.T) {
	defaults := []Element{{Name: "d1"}, {Name: "d2"}}
	defNames, names, err := AssignAll("eth0", defaults, []Element{{Name: "a"}, {Name: "b", Interface: "data0"}, {Name: "c"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"net1", "net2"}, defNames); diff != "" {
		t.Errorf("defaults' names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"net3", "data0", "net5"}, names); diff != "" {
		t.Errorf("pod's names (-want +got):\n%s", diff)
	}
	if _, _, err := AssignAll("eth0", defaults, []Element{{Name: "a", Interface: "net2"}}); err == nil {
		t.Error("a pod may not ask for the interface of a default network")
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := `[{"name":"a","default-route":[]},{"name":"b","namespace":"x","ips":["192.0.2.1/24"],"mac":"02:00:00:00:00:01",
		"cni-args":{"k":"v","n":1.5},"portMappings":[{"hostPort":1,"containerPort":2}],"bandwidth":{"egressRate":5}}]`
	elems, err := Parse(in, "pods")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Encode(elems)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(s, "other")
	if err != nil {
		t.Fatalf("Parse(Encode()) = %v for %s", err, s)
	}
	if diff := cmp.Diff(elems, again, cmpAddr, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("round trip (-first +second):\n%s", diff)
	}
}

func TestAPodAsksForAtMostMaxNetworks(t *testing.T) {
	list := func(n int) string { return strings.TrimSuffix(strings.Repeat("net-a,", n), ",") }
	if elems, err := Parse(list(MaxNetworks), "team"); err != nil || len(elems) != MaxNetworks {
		t.Fatalf("%d networks: %d elements, %v; want all of them", MaxNetworks, len(elems), err)
	}
	for _, value := range []string{list(MaxNetworks + 1), "[" + strings.TrimSuffix(strings.Repeat(`{"name":"net-a"},`, MaxNetworks+1), ",") + "]"} {
		_, err := Parse(value, "team")
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "networks" || !strings.Contains(fe.Reason, "asks for 129 networks; a pod may ask for at most 128") {
			t.Errorf("%d networks: %v, want a networks error naming both numbers", MaxNetworks+1, err)
		}
	}
}
