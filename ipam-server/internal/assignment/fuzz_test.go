package assignment

import (
	"net"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// annotationField is how a Parse error names the annotation and the field in it; "not a JSON object" is the
// whole value.
var annotationField = regexp.MustCompile(`^annotation braid\.dev/ip-assignments: (?:not a JSON object|` +
	`(?:podUID|interfaces[.\w-]*)|interfaces\[[^\]]*\]\.(?:addresses\[\d+\]\.(?:cidr|gateway)|routes\[\d+\]\.(?:dst|gw))): \S`)

// FuzzParse feeds arbitrary annotation values to the node's reader of braid-ipam-server's assignments. A
// rejection names the field; an acceptance has addresses and routes the plugin can turn into a CNI result, and
// reads back unchanged from Encode. Seed corpus: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"podUID":"u-1","interfaces":{"net1":{"network":"ns/mgmt","addresses":[{"pool":"mgmt-v4","floatingIP":"mgmt-v4-192-0-2-10",` +
			`"cidr":"192.0.2.10/24","gateway":"192.0.2.1"},{"pool":"mgmt-v6","floatingIP":"f","cidr":"2001:db8::a/64"}],` +
			`"routes":[{"dst":"0.0.0.0/0"},{"dst":"198.51.100.0/24","gw":"192.0.2.254"}],"dns":{"nameservers":["192.0.2.53"]}}}}`,
		`{"podUID":"u-2","interfaces":{"net2":{"network":"ns/ctl","error":"pool exhausted: ctl-v4"}}}`,
		``, `{}`, `null`, `[]`, `{"podUID":7}`, `{"interfaces":{"net1":{"addresses":[{"cidr":"192.0.2.10"}]}}}`,
		`{"interfaces":{"net1":{"routes":[{"dst":"0.0.0.0/0","gw":"nope"}]}}}`, `{"interfaces":{"net1":{"addresses":7}}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		a, err := Parse(value)
		if err != nil {
			if !annotationField.MatchString(err.Error()) {
				t.Fatalf("Parse(%q) error %q does not name a field", value, err)
			}
			return
		}
		for name, iface := range a.Interfaces {
			for _, addr := range iface.Addresses {
				if _, _, err := net.ParseCIDR(addr.CIDR); err != nil || (addr.Gateway != "" && net.ParseIP(addr.Gateway) == nil) {
					t.Fatalf("Parse(%q) accepted the address %+v of %s", value, addr, name)
				}
			}
			for _, r := range iface.Routes {
				if _, _, err := net.ParseCIDR(r.Dst); err != nil || (r.GW != "" && net.ParseIP(r.GW) == nil) {
					t.Fatalf("Parse(%q) accepted the route %+v of %s", value, r, name)
				}
			}
		}
		again, err := Parse(a.Encode())
		if err != nil {
			t.Fatalf("Parse(Encode(Parse(%q))) = %v", value, err)
		}
		if diff := cmp.Diff(a, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %q changed the assignments (-first +second):\n%s", value, diff)
		}
	})
}
