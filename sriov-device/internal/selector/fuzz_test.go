package selector

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// FuzzParsePFName feeds arbitrary pfNames entries to ParsePFName. A rejection quotes the entry or its PF part
// (the config package puts the field in front); an acceptance has a PF part and ordered VF ranges, a plain
// name matches exactly itself, and a regular expression is one on its own and matches whole PF names only,
// exactly as "^(?:expr)$" would. Seed corpus: testdata/fuzz/FuzzParsePFName.
func FuzzParsePFName(f *testing.F) {
	for _, s := range []string{
		"ens1f0", "ens1f0#3", "ens1f0#0-3", "ens1f0#0,2,5-7", "ens1f0#65535", "ens.*#1", "", "#0-3", "ens1f0#", "ens1f0#a",
		"ens1f0#3-1", "ens1f0#1--2", "ens1f0#0,,2", "ens1f0# 1", "ens1f0#65536", "ens1f0#1#2", "ens[", "averyveryverylongname",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePFName(s)
		if err != nil {
			requireQuoted(t, "ParsePFName", s, err)
			return
		}
		checkPF(t, "ParsePFName", s, p)
		if p.re == nil {
			if len(p.PF) > 15 || !p.matchPF(p.PF) || p.matchPF(p.PF+"0") || p.matchPF("x"+p.PF) {
				t.Fatalf("ParsePFName(%q): the plain name %q is too long or does not match exactly itself", s, p.PF)
			}
			return
		}
		if _, err := regexp.Compile(p.PF); err != nil {
			t.Fatalf("ParsePFName(%q) accepted %q, which is not a regular expression on its own (%v): it escapes the anchors", s, p.PF, err)
		}
		if strings.Contains(p.PF, `\Q`) {
			return // quoted text would swallow the anchors of the reference below
		}
		// An expression that is one on its own can sit between anchors: that is the reference.
		anchored := regexp.MustCompile("^(?:" + p.PF + ")$")
		prefix, _ := anchored.LiteralPrefix()
		for _, name := range []string{p.PF, s, prefix, prefix + "0", prefix + "f0v1", "ens1f0", "eth0", "0"} {
			if p.matchPF(name) != anchored.MatchString(name) {
				t.Fatalf("ParsePFName(%q): %q matches %v, but the whole-name match says %v", s, name, p.matchPF(name), !p.matchPF(name))
			}
		}
	})
}

// FuzzParseRootDevice feeds arbitrary rootDevices entries to ParseRootDevice: a rejection quotes the entry or
// its PF part; an acceptance is a valid lowercase PCI address with ordered VF ranges.
// Seed corpus: testdata/fuzz/FuzzParseRootDevice.
func FuzzParseRootDevice(f *testing.F) {
	for _, s := range []string{"0000:AF:00.1#0-7", "0000:3b:00.0", "ens1f0", "3b:00.0#1", "0000:3b:20.0", "0000:3b:00.0#2-1", "0000:3b:02.8"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseRootDevice(s)
		if err != nil {
			requireQuoted(t, "ParseRootDevice", s, err)
			return
		}
		checkPF(t, "ParseRootDevice", s, p)
		if !ValidPCIAddress(p.PF) || !p.matchPF(p.PF) {
			t.Fatalf("ParseRootDevice(%q) accepted the PF %q", s, p.PF)
		}
	})
}

// requireQuoted fails unless err quotes the entry or its PF part, which is how these errors name the value.
func requireQuoted(t *testing.T, fn, s string, err error) {
	t.Helper()
	pf, _, _ := strings.Cut(s, "#")
	if msg := err.Error(); !strings.Contains(msg, strconv.Quote(s)) && !strings.Contains(msg, strconv.Quote(pf)) {
		t.Fatalf("%s(%q) error %q does not quote the entry", fn, s, msg)
	}
}

// checkPF asserts what every accepted entry promises: a PF part without "#", and VF ranges in order within
// the 16 bits of the SR-IOV capability, as the entry wrote them.
func checkPF(t *testing.T, fn, s string, p PF) {
	t.Helper()
	if p.PF == "" || strings.Contains(p.PF, "#") {
		t.Fatalf("%s(%q) accepted the PF part %q", fn, s, p.PF)
	}
	_, list, hasList := strings.Cut(s, "#")
	if hasList != (p.VFs != nil) || (hasList && len(p.VFs) != strings.Count(list, ",")+1) {
		t.Fatalf("%s(%q) gave %d VF ranges", fn, s, len(p.VFs))
	}
	for _, r := range p.VFs {
		if r.First < 0 || r.First > r.Last || r.Last > 65535 || !p.hasVF(r.First) || !p.hasVF(r.Last) {
			t.Fatalf("%s(%q) gave the VF range %+v", fn, s, r)
		}
	}
}
