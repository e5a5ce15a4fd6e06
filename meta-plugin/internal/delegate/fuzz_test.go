package delegate

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/go-cmp/cmp"
)

// fieldMessages are the messages a rejected spec.config may carry after "spec.config: ", each naming the key
// that is wrong (or, for "not a JSON object", the whole document).
var fieldMessages = regexp.MustCompile(`^(?:` + strings.Join([]string{
	`not a JSON object`,
	`"name" is required`,
	`"cniVersion" must be a string such as "1\.0\.0", not `,
	`neither "type" nor "plugins" is set`,
	`no plugins`,
	`plugins\[\d+\]: `,
	// a single conf's plugin keys, checked by libcni
	`invalid network configuration: error parsing configuration: (?:missing 'type'|json: cannot unmarshal \S+ into Go struct field PluginConf\.\S+ of type)`,
	// the list's own keys, checked by libcni
	`invalid network configuration: error parsing configuration list: (?:no name|invalid name type|invalid cniVersions? |` +
		`invalid type for cniVersions|invalid type \S+ for \w+|invalid value .* for \w+$|invalid 'plugins' type|no plugins in list)`,
}, "|") + `)`)

// FuzzFromNADConfig feeds arbitrary text to the parser of a NAD's spec.config, then merges arbitrary cni-args
// and a device ID into what it accepted. Rejections wrap ErrConfig and name the key; an accepted config has a
// name and typed plugins, reads back the same, and Customize never fails on it and merges what it was given.
// Seed corpus: testdata/fuzz/FuzzFromNADConfig.
func FuzzFromNADConfig(f *testing.F) {
	for _, c := range []struct{ config, cniArgs, deviceID string }{
		{`{"cniVersion":"1.0.0","type":"macvlan","master":"eth1"}`, ``, ``},
		{`{"cniVersion":"1.0.0","name":"mv","type":"macvlan"}`, `{"vlan":5}`, ``},
		{`{"cniVersion":"1.1.0","plugins":[{"type":"macvlan"},{"type":"tuning"}]}`, ``, `0000:18:02.5`},
		{`{"cniVersion":"1.0.0","plugins":[{"type":"sriov","args":{"cni":{"spoofchk":"off","vlan":5}}},{"type":"tuning"}]}`,
			`{"spoofchk":"on","trust":"on"}`, `0000:18:02.5`},
		{`{"type":`, ``, ``},
		{`{"type":"macvlan"}`, ``, ``},
		{`{"cniVersion":"1.0.0","master":"eth1"}`, ``, ``},
		{`{"cniVersion":"1.0.0","plugins":[]}`, ``, ``},
		{`{"cniVersion":"1.0.0","plugins":[{"master":"x"}]}`, ``, ``},
		{`{"cniVersion":"1.0.0","plugins":["x"]}`, ``, ``},
	} {
		f.Add(c.config, c.cniArgs, c.deviceID)
	}
	f.Fuzz(func(t *testing.T, config, cniArgsJSON, deviceID string) {
		list, err := FromNADConfig("net-a", config)
		if err != nil {
			rest, ok := strings.CutPrefix(err.Error(), "spec.config: ")
			if !errors.Is(err, ErrConfig) || !ok || !fieldMessages.MatchString(rest) {
				t.Fatalf("FromNADConfig(%q) error %q does not name a field", config, err)
			}
			return
		}
		types := pluginTypes(t, config, list.Plugins)
		if list.Name == "" {
			t.Fatalf("FromNADConfig(%q) accepted a list without a name", config)
		}
		again, err := FromBytes(list.Bytes, "", "again")
		if err != nil {
			t.Fatalf("the list made of %q does not read back: %v\n%s", config, err, list.Bytes)
		}
		if again.Name != list.Name || !cmp.Equal(pluginTypes(t, config, again.Plugins), types) {
			t.Fatalf("%q read back as %q %v, first %q %v", config, again.Name, pluginTypes(t, config, again.Plugins), list.Name, types)
		}

		deviceID = strings.ToValidUTF8(deviceID, "\uFFFD") // device IDs are PCI addresses; JSON cannot carry others
		var cniArgs map[string]any
		_ = json.Unmarshal([]byte(cniArgsJSON), &cniArgs) // anything that is not an object gives no cni-args
		before := bytes.Clone(list.Bytes)
		out, err := Customize(list, cniArgs, deviceID)
		if err != nil {
			t.Fatalf("Customize of the accepted %q with %s %q: %v", config, cniArgsJSON, deviceID, err)
		}
		if !bytes.Equal(list.Bytes, before) {
			t.Fatalf("Customize changed its input list")
		}
		if out.Name != list.Name || !cmp.Equal(pluginTypes(t, config, out.Plugins), types) {
			t.Fatalf("Customize of %q changed the name or the plugins: %s", config, out.Bytes)
		}
		checkCustomized(t, out.Bytes, cniArgs, deviceID)
	})
}

func pluginTypes(t *testing.T, config string, ps []*libcni.PluginConfig) []string {
	t.Helper()
	if len(ps) == 0 {
		t.Fatalf("%q gave a list without plugins", config)
	}
	var types []string
	for i, p := range ps {
		if p.Network == nil || p.Network.Type == "" {
			t.Fatalf("%q gave plugin %d without a type", config, i)
		}
		types = append(types, p.Network.Type)
	}
	return types
}

// checkCustomized asserts that every plugin's args.cni holds each cni-arg and that the first plugin has the
// device ID.
func checkCustomized(t *testing.T, b []byte, cniArgs map[string]any, deviceID string) {
	t.Helper()
	var raw struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("customized list is not JSON: %v", err)
	}
	for i, p := range raw.Plugins {
		args, _ := p["args"].(map[string]any)
		cni, _ := args["cni"].(map[string]any)
		for k, v := range cniArgs {
			if !cmp.Equal(cni[k], v) {
				t.Fatalf("plugin %d has args.cni[%q] = %v, the pod asked for %v", i, k, cni[k], v)
			}
		}
	}
	if deviceID != "" && raw.Plugins[0]["deviceID"] != deviceID {
		t.Fatalf("first plugin has deviceID %v, want %q", raw.Plugins[0]["deviceID"], deviceID)
	}
}
