package config

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/braid-cni/braid/sriov-device/internal/selector"
)

// FuzzParse feeds arbitrary config files and --resource-prefix values to Parse. A rejection is a tree of
// *FieldError (errors.Join), one line per error, each naming a field; an unknown key is named by itself, not
// by the object that holds it. An acceptance has unique, valid extended resource names and selector sets that
// each select something with valid values. Seed corpus: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, c := range []struct{ config, prefix string }{
		{upstreamConfig, ""},
		{`{"resourceList": [{"resourceName": "x", "selectors": [{"vendors": ["8086"]}, {"pfNames": ["ens1f0#0-3", "ens.*"]}]}]}`, "example.org"},
		{`{"resourceList": []}`, "Not A Prefix"}, {`{"resourceList": [`, ""}, {`[]`, ""}, {`{}`, ""}, {`{"resourcelist": []}`, ""},
		{`{"resourceList": [null, "x", {"resourceName": 7}]}`, ""}, {`{"": 1}`, ""},
		{`{"resourceList": [{"resourceName": "a-b", "deviceType": "gpu", "selectors": {"vendors": ["x"], "pfNames": ["#1"]}}]}`, ""},
		{`{"resourceList": [{"resourceName": "x", "selectors": {"vendors": ["15b3"], "isRdma": true, "ddpProfiles": ["p"]}}]}`, ""},
		{`{"resourceList": [{"resourceName": "ok", "selectors": {"vendors": ["8086"]}}, {"resourceName": "ok", "selectors": {"vendors": ["15b3"]}}]}`, ""},
	} {
		f.Add([]byte(c.config), c.prefix)
	}
	f.Fuzz(func(t *testing.T, data []byte, defaultPrefix string) {
		cfg, err := Parse(data, defaultPrefix)
		if err != nil {
			leaves := fieldErrors(t, data, err)
			if lines := strings.Split(err.Error(), "\n"); len(lines) != len(leaves) {
				t.Fatalf("Parse(%q) gave %d errors in %d lines:\n%v", data, len(leaves), len(lines), err)
			}
			return
		}
		checkConfig(t, data, cfg)
	})
}

// fieldErrors returns the leaves of err's errors.Join tree and fails unless each is a *FieldError naming a
// field.
func fieldErrors(t *testing.T, data []byte, err error) []*FieldError {
	t.Helper()
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*FieldError
		for _, e := range joined.Unwrap() {
			out = append(out, fieldErrors(t, data, e)...)
		}
		return out
	}
	var fe *FieldError // a leaf must be the *FieldError itself, not an error that wraps one behind other words
	if !errors.As(err, &fe) || fe.Error() != err.Error() || fe.Field == "" || fe.Err == nil || fe.Err.Error() == "" {
		t.Fatalf("Parse(%q) error %q is not a *FieldError naming a field", data, err)
	}
	if fe.Err.Error() == "unknown field" && (fe.Field == "config" || strings.HasSuffix(fe.Field, "]")) {
		t.Fatalf("Parse(%q) names the object %q for an unknown key in it", data, fe.Field)
	}
	return []*FieldError{fe}
}

// checkConfig asserts what an accepted config promises to the plugin.
func checkConfig(t *testing.T, data []byte, cfg Config) {
	t.Helper()
	seen := map[string]bool{}
	for _, r := range cfg.Resources {
		if !validResourceName(r.Name) || validatePrefix("", r.Prefix) != nil || len(validation.IsQualifiedName(r.FullName())) > 0 ||
			seen[r.FullName()] || r.DeviceType != DeviceTypeNetDevice || len(r.Selectors) == 0 {
			t.Fatalf("Parse(%q) accepted the resource %+v", data, r)
		}
		seen[r.FullName()] = true
		for _, s := range r.Selectors {
			checkSet(t, data, s)
		}
	}
}

func checkSet(t *testing.T, data []byte, s selector.Set) {
	t.Helper()
	if s.Empty() {
		t.Fatalf("Parse(%q) accepted a selector set that selects nothing", data)
	}
	for _, id := range append(append([]string(nil), s.Vendors...), s.Devices...) {
		if hexID(id) != nil || id != strings.ToLower(id) {
			t.Fatalf("Parse(%q) accepted the PCI ID %q", data, id)
		}
	}
	for _, a := range s.PCIAddresses {
		if !selector.ValidPCIAddress(a) {
			t.Fatalf("Parse(%q) accepted the PCI address %q", data, a)
		}
	}
	for _, p := range s.RootDevices {
		if !selector.ValidPCIAddress(p.PF) {
			t.Fatalf("Parse(%q) accepted the root device %q", data, p.PF)
		}
	}
	for _, d := range s.Drivers {
		if d == "" || strings.ContainsAny(d, "/ \t\n") {
			t.Fatalf("Parse(%q) accepted the driver %q", data, d)
		}
	}
}
