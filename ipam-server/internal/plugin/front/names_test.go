package front

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzIsDNS1123Subdomain holds braid-ipam's own check of IPPool names to apimachinery's, which braid-ipam-server
// and the API server apply: the same names pass, and a refusal says the same.
func FuzzIsDNS1123Subdomain(f *testing.F) {
	for _, s := range []string{"mgmt-rack1", "a.b-c.d", "", ".", "a.", ".a", "a..b", "-a", "a-", "A", "a_b", "ü",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 127) + "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, want := isDNS1123Subdomain(name), validation.IsDNS1123Subdomain(name)
		if len(got) != len(want) {
			t.Fatalf("isDNS1123Subdomain(%q) = %q; apimachinery says %q", name, got, want)
		}
		for i := range got {
			if !strings.HasPrefix(want[i], strings.TrimSuffix(got[i], ")")) {
				t.Fatalf("isDNS1123Subdomain(%q) message %q is not apimachinery's %q", name, got[i], want[i])
			}
		}
	})
}
