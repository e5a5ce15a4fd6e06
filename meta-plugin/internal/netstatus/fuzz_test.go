package netstatus

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types/create"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// decodeField is how a Decode error names what is wrong: the key of an entry, or the whole value.
var decodeField = regexp.MustCompile(`^decode network-status: (?:not a JSON list of entries|[\w.-]+): \S`)

// FuzzDecode feeds arbitrary annotation values to Decode: a rejection names the key (or says the value is not
// a list), and what is accepted encodes and decodes back unchanged. Seed corpus: testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`[{"name":"cbr0","interface":"eth0","ips":["203.0.113.5","2001:db8:1::5"],"mac":"0a:58:c0:00:02:05","mtu":1500,"default":true,` +
			`"dns":{"nameservers":["203.0.113.53"],"search":["example.com"]},"default-route":["203.0.113.1"]},` +
			`{"name":"ns/net-a","interface":"net1","ips":["198.51.100.7"],"default":false,"device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:18:02.5"}}}]`,
		`[]`, `null`, ``, `{}`, `[{"name":7}]`, `[{"dns":{"nameservers":"x"}}]`, `[{"mtu":1e400}]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		sts, err := Decode(value)
		if err != nil {
			if !decodeField.MatchString(err.Error()) {
				t.Fatalf("Decode(%q) error %q does not name a field", value, err)
			}
			return
		}
		roundTrip(t, value, sts)
	})
}

// cniVersions are the result versions FuzzBuild picks from.
var cniVersions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// FuzzBuild turns arbitrary delegate results of every CNI version into status entries: Build never fails on a
// result that version's parser accepts, the entry names the network and an interface, lists only IP
// addresses, and reads back unchanged. Seed corpus: testdata/fuzz/FuzzBuild.
func FuzzBuild(f *testing.F) {
	for i := range cniVersions {
		f.Add(uint8(i), strings.ReplaceAll(bridgeResult, `"cniVersion":"%s",`, ""), true)
	}
	f.Add(uint8(5), `{"interfaces":[{"name":"net1","sandbox":"/var/run/netns/p"}],"ips":[{"address":"198.51.100.7/24"}]}`, false)
	f.Add(uint8(6), `{"ips":[{"address":"198.51.100.7/24","interface":-1}],"routes":[{"dst":"::/0"}]}`, true)
	f.Add(uint8(6), `{"interfaces":[{"sandbox":"/p"}],"ips":[{"address":"198.51.100.7/24","interface":9}]}`, false)
	f.Fuzz(func(t *testing.T, v uint8, result string, holdsDefaultRoute bool) {
		version := cniVersions[int(v)%len(cniVersions)]
		r, err := create.Create(version, []byte(`{"cniVersion":"`+version+`",`+strings.TrimPrefix(strings.TrimSpace(result), "{")))
		if err != nil {
			return // not a result of that version: libcni refuses it before braid sees it
		}
		in := Input{Name: "ns/net-a", IfName: "net1", Result: r, HoldsDefaultRoute: holdsDefaultRoute}
		st, err := Build(in)
		if err != nil {
			if !strings.Contains(err.Error(), in.Name) {
				t.Fatalf("Build of the %s result %q: error %q does not name the network", version, result, err)
			}
			return
		}
		if st.Name != in.Name || st.Interface == "" {
			t.Fatalf("Build of the %s result %q gave name %q interface %q", version, result, st.Name, st.Interface)
		}
		for _, s := range append(append([]string(nil), st.IPs...), st.DefaultRoute...) {
			if _, err := netip.ParseAddr(s); err != nil {
				t.Fatalf("Build of the %s result %q lists %q, which is not an IP address", version, result, s)
			}
		}
		if len(st.DefaultRoute) > 0 && !holdsDefaultRoute {
			t.Fatalf("Build of the %s result %q reports a default route it does not hold", version, result)
		}
		s, err := Encode([]Status{st})
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		roundTrip(t, s, []Status{st})
	})
}

// roundTrip asserts that sts, decoded from value, encodes and decodes back to the same entries.
func roundTrip(t *testing.T, value string, sts []Status) {
	t.Helper()
	s, err := Encode(sts)
	if err != nil {
		t.Fatalf("Encode(Decode(%q)): %v", value, err)
	}
	again, err := Decode(s)
	if err != nil {
		t.Fatalf("Decode(Encode(Decode(%q))) = %v; encoded %s", value, err, s)
	}
	if diff := cmp.Diff(sts, again, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("round trip of %q changed the entries (-first +second):\n%s", value, diff)
	}
}
