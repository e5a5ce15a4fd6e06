package selection

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzParse checks that no annotation value crashes the parser, that every rejection is a *FieldError, and that
// whatever is accepted obeys the specification's rules and survives Encode/Parse unchanged. The seed corpus is
// in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"net-a", "ns/net-a@net1,net-b", `[{"name":"a","ips":["192.0.2.1/24"]}]`, "[]", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		elems, err := Parse(value, "pods")
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" {
				t.Fatalf("Parse(%q) error %v does not name a field", value, err)
			}
			return
		}
		routes := 0
		for i, e := range elems {
			if ValidLabel(e.Name) != "" || ValidLabel(e.Namespace) != "" {
				t.Fatalf("Parse(%q) accepted element %d with name %q namespace %q", value, i, e.Name, e.Namespace)
			}
			if e.Interface != "" && ValidInterfaceName(e.Interface) != "" {
				t.Fatalf("Parse(%q) accepted interface %q", value, e.Interface)
			}
			if e.HasDefaultRoute {
				routes++
			}
		}
		if routes > 1 {
			t.Fatalf("Parse(%q) accepted %d default-route elements", value, routes)
		}
		if names, err := AssignInterfaces([]string{"eth0"}, 1, elems); err == nil {
			seen := map[string]bool{"eth0": true}
			for _, n := range names {
				if seen[n] || ValidInterfaceName(n) != "" {
					t.Fatalf("AssignInterfaces gave duplicate or invalid name %q for %q", n, value)
				}
				seen[n] = true
			}
		}
		s, err := Encode(elems)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		again, err := Parse(s, "other")
		if err != nil {
			t.Fatalf("Parse(Encode(Parse(%q))) = %v; encoded %s", value, err, s)
		}
		if diff := cmp.Diff(elems, again, cmpAddr, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %q changed the elements (-first +second):\n%s", value, diff)
		}
	})
}
