package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/braid-cni/braid/crds/catalogue"
)

// TestCatalogue proves the SR-IOV rows of testdata/bad-input.md: braid-sriov-dp itself (this test binary run as
// main, see TestMain) starts with each config file and must exit with the documented code, its log carrying
// the documented message. The log quotes the err value, so a " in the message shows as \" there.
func TestCatalogue(t *testing.T) {
	res := func(r string) string { return `{"resourceList": [` + r + `]}` }
	sel := func(s string) string { return res(`{"resourceName": "vf", "selectors": ` + s + `}`) }
	cases := map[string]string{
		"SRIOV-01": `{"resourceList": [{"resourceName": "vf", "selectors": {"vendors": ["8086"]}}`,
		"SRIOV-02": `{}`,
		"SRIOV-03": `{"resourcelist": []}`,
		"SRIOV-04": res(`{"selectors": {"vendors": ["8086"]}}`),
		"SRIOV-05": res(`{"resourceName": "x710-vf", "selectors": {"vendors": ["8086"]}}`),
		"SRIOV-06": res(`{"resourceName": "vf", "resourcePrefix": "kubernetes.io", "selectors": {"vendors": ["8086"]}}`),
		"SRIOV-07": res(`{"resourceName": "vf", "deviceType": "accelerator", "selectors": {"vendors": ["8086"]}}`),
		"SRIOV-08": res(`{"resourceName": "vf", "selector": {"vendors": ["8086"]}}`),
		"SRIOV-09": sel(`{}`),
		"SRIOV-10": sel(`{"vendors": ["80861"]}`),
		"SRIOV-11": sel(`{"vendors": "8086"}`),
		"SRIOV-12": sel(`{"pfNames": ["ens1f0#3-1"]}`),
		"SRIOV-13": sel(`{"rootDevices": ["3b:00.0"]}`),
		"SRIOV-14": sel(`{"linkTypes": ["eth"]}`),
		"SRIOV-15": sel(`{"vendors": ["15b3"], "isRdma": true}`),
		"SRIOV-16": res(`{"resourceName": "vf", "selectors": {"vendors": ["8086"]}},
			{"resourceName": "vf", "selectors": {"drivers": ["iavf"]}}`),
	}
	catalogue.Run(t, cases, func(t *testing.T, row catalogue.Row, config string) {
		row.ExpectInput(t, config)
		dir := t.TempDir()
		file := filepath.Join(dir, "config.json")
		if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		// Empty host root and plugin dir: should a config be accepted after all, the plugin fails on the missing
		// PCI bus instead of touching this host.
		cmd := command("--config", file, "--root", filepath.Join(dir, "host"), "--plugin-dir", filepath.Join(dir, "dp"),
			"--devinfo-dir", filepath.Join(dir, "devinfo"), "--host-events=false", "--resync", "0")
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("braid-sriov-dp still runs after 20s: the config was accepted; log:\n%s", out.String())
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != row.Code() {
			t.Fatalf("braid-sriov-dp ended with %v, the catalogue says exit code %d; log:\n%s", err, row.Code(), out.String())
		}
		row.Expect(t, failure(t, out.String()))
	}, "SRIOV")
}

// failure returns the err value of braid-sriov-dp's failure line, unquoted.
func failure(t *testing.T, log string) string {
	t.Helper()
	const mark = `level=ERROR msg="braid-sriov-dp failed" err=`
	for _, line := range strings.Split(log, "\n") {
		if _, v, ok := strings.Cut(line, mark); ok {
			if s, err := strconv.Unquote(v); err == nil {
				return s
			}
			return v
		}
	}
	t.Fatalf("no failure line (%s) in the log:\n%s", mark, log)
	return ""
}
