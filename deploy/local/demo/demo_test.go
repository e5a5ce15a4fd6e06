package demo

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseEbtablesCounters(t *testing.T) {
	listing := `Bridge table: filter

Bridge chain: FORWARD, entries: 5, policy: ACCEPT
-p IPv4 --ip-src 192.0.2.0/24 -j CONTINUE , pcnt = 6 -- bcnt = 504
-p ARP --arp-ip-src 192.0.2.0/24 -j CONTINUE , pcnt = 2 -- bcnt = 56
-p IPv6 --ip6-src 2001:db8:1::/64 -j CONTINUE , pcnt = 11 -- bcnt = 1000
-p IPv4 --ip-src 203.0.113.0/24 -j CONTINUE , pcnt = 0 -- bcnt = 0
`
	got, err := ParseEbtablesCounters([]byte(listing))
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]uint64{
		netip.MustParsePrefix("192.0.2.0/24"):    8,
		netip.MustParsePrefix("2001:db8:1::/64"): 11,
		netip.MustParsePrefix("203.0.113.0/24"):  0,
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}

	for _, bad := range []string{
		"-p IPv4 --ip-src 192.0.2.0/33 -j CONTINUE , pcnt = 1 -- bcnt = 1",
		"-p IPv4 --ip-src 192.0.2.0/24 -j CONTINUE",
		"-p IPv4 --ip-src 192.0.2.0/24 -j CONTINUE , pcnt = x -- bcnt = 1",
	} {
		if _, err := ParseEbtablesCounters([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseIPAddr(t *testing.T) {
	out := `[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
{"ifindex":3,"ifname":"net2","addr_info":[{"family":"inet","local":"198.51.100.10","prefixlen":24,"scope":"global"},
 {"family":"inet6","local":"2001:db8:1::10","prefixlen":64,"scope":"global"},
 {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]`
	got, err := ParseIPAddr([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]netip.Prefix{"net2": {netip.MustParsePrefix("198.51.100.10/24"), netip.MustParsePrefix("2001:db8:1::10/64")}}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if _, err := ParseIPAddr([]byte("not json")); err == nil {
		t.Error("no error for output that is not JSON")
	}
}

func TestPingsGoToThePeerOfEachAddressSubnet(t *testing.T) {
	pods := []Pod{{Namespace: "ns", Name: "p", SandboxPID: 42, Attachments: []Attachment{
		{Network: "cluster", Interface: "eth0", Default: true, Addrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:ff::2/64")}},
		{Network: "ns/control", Interface: "net1", Addrs: []netip.Prefix{
			netip.MustParsePrefix("198.51.100.10/24"), netip.MustParsePrefix("2001:db8:1::10/64")}},
		{Network: "ns/data", Interface: "net2"},
		{Network: "ns/odd", Interface: "net3", Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.77/28")}},
		{Network: "ns/stray", Interface: "net4", Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.1/8")}},
	}}}
	got := Pings(pods, Networks)
	type row struct {
		Iface, Net, Target string
		Err                bool
	}
	var rows []row
	for _, p := range got {
		target := ""
		if p.Target.IsValid() {
			target = p.Target.String()
		}
		rows = append(rows, row{p.Interface, p.Network, target, p.Err != nil})
	}
	want := []row{
		{"net1", "control", "198.51.100.254", false},
		{"net1", "control", "2001:db8:1::fe", false},
		{"net2", "ns/data", "", true},            // no address inside the pod
		{"net3", "data", "203.0.113.254", false}, // on the data subnet, whatever its prefix length
		{"net4", "ns/stray", "", true},           // on none of the demo's networks
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("pings (-want +got):\n%s", diff)
	}

	var ran []string
	run := func(_ context.Context, name string, args ...string) ([]byte, error) {
		ran = append(ran, name+" "+strings.Join(args, " "))
		if strings.HasSuffix(args[len(args)-1], "::fe") {
			return nil, errors.New("unreachable")
		}
		return nil, nil
	}
	done := Do(context.Background(), run, pods, got)
	if err := PingErrors(done); err == nil || !strings.Contains(err.Error(), "net1 -> 2001:db8:1::fe") {
		t.Errorf("PingErrors = %v, want the IPv6 ping's failure among them", err)
	}
	if len(ran) != 3 || ran[0] != "nsenter -t 42 -n ping -c 2 -i 0.2 -w 5 -I net1 198.51.100.254" {
		t.Errorf("ran %q", ran)
	}
}

func TestCheckSeparation(t *testing.T) {
	apart := Counts{"mgmt": {"mgmt": 5}, "control": {"control": 7}, "data": {"data": 1}}
	if err := CheckSeparation(apart, Networks); err != nil {
		t.Errorf("networks apart: %v", err)
	}
	leak := Counts{"mgmt": {"mgmt": 5}, "control": {"control": 7}, "data": {"data": 1, "mgmt": 2}}
	if err := CheckSeparation(leak, Networks); err == nil || !strings.Contains(err.Error(), "2 packets of the mgmt network crossed the data switch") {
		t.Errorf("mgmt on the data switch: %v", err)
	}
	silent := Counts{"mgmt": {"mgmt": 5}, "control": {"control": 7}, "data": {}}
	if err := CheckSeparation(silent, Networks); err == nil {
		t.Error("a switch that saw none of its own traffic proves nothing, yet passed")
	}
}

func TestCheckAddresses(t *testing.T) {
	a := Attachment{Network: "ns/mgmt", Interface: "net1", Status: []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		Addrs: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24")}}
	if err := CheckAddresses([]Pod{{Name: "p", Attachments: []Attachment{a}}}); err != nil {
		t.Errorf("matching addresses: %v", err)
	}
	a.Addrs = nil
	if err := CheckAddresses([]Pod{{Name: "p", Attachments: []Attachment{a}}}); err == nil {
		t.Error("an interface without its address inside the pod passed")
	}
}

func TestWriteCounts(t *testing.T) {
	var b bytes.Buffer
	if err := WriteCounts(&b, Counts{"mgmt": {"mgmt": 12}, "control": {"control": 3}, "data": {"data": 4}}, Networks); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SWITCH") || !strings.Contains(lines[0], "mgmt (192.0.2.0/24)") ||
		strings.Join(strings.Fields(lines[3]), " ") != "braid-sw-data 0 0 4" {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestUnderlayUpRefusesSomeoneElsesNIC(t *testing.T) {
	run := func(_ context.Context, name string, args ...string) ([]byte, error) {
		switch {
		case name == "ip" && args[0] == "netns" && args[1] == "list":
			return nil, nil // no switch yet
		case name == "ip" && args[0] == "link" && args[1] == "show" && args[3] == "mgmt0":
			return []byte("4: mgmt0: <BROADCAST>"), nil // the host has a real mgmt0
		}
		t.Errorf("Up ran %s %v after finding a foreign mgmt0", name, args)
		return nil, nil
	}
	err := Underlay{Nets: Networks[:1], Run: run}.Up(context.Background())
	if err == nil || !strings.Contains(err.Error(), "already has an interface mgmt0") {
		t.Errorf("Up = %v", err)
	}
}
