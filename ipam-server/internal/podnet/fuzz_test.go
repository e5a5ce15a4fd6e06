package podnet

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/braid-cni/braid/crds/selection"
)

// FuzzParseSelections feeds arbitrary network-selection annotations (with and without default networks) to
// the server's reading of a pod. A rejection is a *selection.FieldError under the annotation's name; an
// acceptance lists the defaults first, then one Selection per element, each with a valid reference and a
// distinct valid interface name other than eth0, and the static addresses the element asked for.
// Seed corpus: testdata/fuzz/FuzzParseSelections.
func FuzzParseSelections(f *testing.F) {
	for _, s := range []string{
		"", "mgmt, other/ctl@ctl0,data", `[{"name":"a","interface":"net2"},{"name":"b"}]`,
		`[{"name":"mgmt","ips":["192.0.2.10/24","2001:db8::a"]},{"name":"ctl","namespace":"x","interface":"c0"}]`,
		`[{"name":"a","ips":["nope"]}]`, `[{"namespace":"x"}]`, `[{"name":`, `a,,b`, "a@eth0", "a@net1,b",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	defaults := []selection.Element{{Namespace: "kube-system", Name: "mgmt"}, {Namespace: "infra", Name: "ctl"}}
	f.Fuzz(func(t *testing.T, annotation string, withDefaults bool) {
		var defs []selection.Element
		if withDefaults {
			defs = defaults
		}
		sels, err := ParseSelections(annotation, "ns", defs)
		if err != nil {
			var fe *selection.FieldError
			if !errors.As(err, &fe) || fe.Field == "" || fe.Reason == "" || !strings.HasPrefix(err.Error(), NetworksAnnotation+": ") {
				t.Fatalf("ParseSelections(%q) error %v does not name a field", annotation, err)
			}
			return
		}
		elems, err := selection.Parse(annotation, "ns")
		if err != nil {
			t.Fatalf("ParseSelections accepted %q, which selection.Parse refuses: %v", annotation, err)
		}
		if len(sels) != len(defs)+len(elems) {
			t.Fatalf("ParseSelections(%q) gave %d selections for %d defaults and %d elements", annotation, len(sels), len(defs), len(elems))
		}
		seen := map[string]bool{"eth0": true}
		for i, s := range sels {
			if selection.ValidLabel(s.Namespace) != "" || selection.ValidLabel(s.Name) != "" {
				t.Fatalf("ParseSelections(%q) accepted the reference %q", annotation, s.Key())
			}
			if seen[s.Interface] || selection.ValidInterfaceName(s.Interface) != "" {
				t.Fatalf("ParseSelections(%q) gave the duplicate or invalid interface %q", annotation, s.Interface)
			}
			seen[s.Interface] = true
			if i < len(defs) {
				if s.Key() != defs[i].Ref() || len(s.IPs) != 0 {
					t.Fatalf("ParseSelections(%q): selection %d is %+v, want the default %s first", annotation, i, s, defs[i].Ref())
				}
				continue
			}
			e := elems[i-len(defs)]
			if s.Key() != e.Ref() || len(s.IPs) != len(e.IPs) || (e.Interface != "" && s.Interface != e.Interface) {
				t.Fatalf("ParseSelections(%q): selection %d is %+v for element %+v", annotation, i, s, e)
			}
		}
	})
}

// braidIPAMField is how BraidIPAM names what is wrong after "spec.config: ": the braid-ipam section's pools,
// or the whole document when it is not a JSON object.
var braidIPAMField = regexp.MustCompile(`^(?:(?:plugins\[\d+\]\.)?ipam(?:\.(?:pools(?:\[\d+\])?|[A-Za-z0-9_-]+)|\[".*"\])?: \S|not a JSON object)`)

// FuzzBraidIPAM feeds arbitrary spec.config text to the server's search for a braid-ipam section. A rejection
// names the braid-ipam section's field (or says the document is not a JSON object) and concerns a network
// that does use braid-ipam; an acceptance of such a network gives braid-ipam's type and valid IPPool names.
// Seed corpus: testdata/fuzz/FuzzBraidIPAM.
func FuzzBraidIPAM(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","plugins":[{"type":"macvlan","ipam":{"type":"braid-ipam","pools":["a","b"]}},{"type":"tuning"}]}`,
		`{"type":"macvlan","ipam":{"type":"host-local"}}`, `{"type":"macvlan","ipam":{"type":"braid-ipam"}}`, `{"type":`,
		`{"type":"macvlan","ipam":{"type":"braid-ipam","pools":["mgmt-rack1"],"timeout":"3s"}}`, "", " ", "null", "[]",
		`{"type":"macvlan","ipam":{"type":"whereabouts","pools":7}}`, `{"plugins":{"type":"macvlan"}}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, config string) {
		conf, uses, err := BraidIPAM(config)
		if err != nil {
			rest, ok := strings.CutPrefix(err.Error(), "spec.config: ")
			if !ok || !braidIPAMField.MatchString(rest) {
				t.Fatalf("BraidIPAM(%q) error %q does not name a field", config, err)
			}
			if !uses && !strings.HasPrefix(rest, "not a JSON object") {
				t.Fatalf("BraidIPAM(%q) fails a network that does not use braid-ipam: %v", config, err)
			}
			return
		}
		if !uses {
			return
		}
		if conf.Type != IPAMType || len(conf.Pools) == 0 {
			t.Fatalf("BraidIPAM(%q) accepted %+v", config, conf)
		}
		for _, p := range conf.Pools {
			if msgs := validation.IsDNS1123Subdomain(p); len(msgs) > 0 {
				t.Fatalf("BraidIPAM(%q) accepted the pool name %q: %v", config, p, msgs)
			}
		}
	})
}
