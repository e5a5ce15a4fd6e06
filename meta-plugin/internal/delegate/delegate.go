// Package delegate turns NAD configs and attachment requests into what libcni runs: a network config list
// with the pod's cni-args and device merged in, the runtimeConfig capability arguments, and the NPWG check
// that a requested capability is declared by some plugin of the list. It is a pure core: bytes in, bytes out.
package delegate

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/containernetworking/cni/libcni"

	"github.com/braid-cni/braid/crds/selection"
)

var (
	// ErrConfig means a delegate configuration cannot be used.
	ErrConfig = errors.New("invalid network configuration")
	// ErrCapability means the pod asked for something no plugin of the network declares (NPWG spec 4.1.2.1).
	ErrCapability = errors.New("requested capability not declared by any plugin")
)

// Capability names of CNI CONVENTIONS.md that braid fills from the selection annotation.
const (
	CapIPs            = "ips"
	CapMAC            = "mac"
	CapInfinibandGUID = "infinibandGUID"
	CapBandwidth      = "bandwidth"
	CapPortMappings   = "portMappings"
	CapDeviceID       = "deviceID"
	CapDeviceInfoFile = "CNIDeviceInfoFile"
)

// CapabilityError says which network lacks which capability.
type CapabilityError struct {
	Network    string
	Capability string
	Key        string
}

func (e *CapabilityError) Error() string {
	return fmt.Sprintf("network %s: the pod asks for %q, but no plugin in the network's config declares "+
		"\"capabilities\": {%q: true}", e.Network, e.Key, e.Capability)
}

// Unwrap lets callers test for ErrCapability.
func (e *CapabilityError) Unwrap() error { return ErrCapability }

// unversioned is the CNI version of a config that names none.
const unversioned = "0.1.0"

// FromNADConfig returns the config list in a NAD's spec.config, a conf or a conflist, with the NAD's name put
// in when the config has none (NPWG spec 3.4.2).
func FromNADConfig(nadName, config string) (*libcni.NetworkConfigList, error) {
	return FromBytes([]byte(config), nadName, "spec.config")
}

// FromBytes reads a CNI conf or conflist. defaultName fills a missing "name"; pass "" to require one. what
// names the source in errors (a file path, "spec.config", ...).
func FromBytes(b []byte, defaultName, what string) (*libcni.NetworkConfigList, error) {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object: %w", what, fmt.Errorf("%w: %w", ErrConfig, err))
	}
	if n, _ := raw["name"].(string); n == "" {
		if defaultName == "" {
			return nil, fmt.Errorf("%s: \"name\" is required: %w", what, ErrConfig)
		}
		raw["name"] = defaultName
	}
	switch v, set := raw["cniVersion"]; {
	case !set || v == "":
		if _, multi := raw["cniVersions"]; !multi {
			// The CNI libraries read a config without a version as 0.1.0 (version.ConfigDecoder), and so
			// does Multus, which passes such a NAD on as it is. Writing the version down keeps ADD as it was
			// under Multus and lets DEL read libcni's cached result, which it cannot without a version
			// (Multus' DEL of such a NAD fails, multus-cni#476).
			raw["cniVersion"] = unversioned
		}
	default:
		if _, ok := v.(string); !ok {
			return nil, fmt.Errorf("%s: \"cniVersion\" must be a string such as \"1.0.0\", not %s: %w", what, jsonType(v), ErrConfig)
		}
	}
	_, isList := raw["plugins"]
	if !isList {
		if t, _ := raw["type"].(string); t == "" {
			return nil, fmt.Errorf("%s: neither \"type\" nor \"plugins\" is set: %w", what, ErrConfig)
		}
		raw = map[string]any{"name": raw["name"], "cniVersion": raw["cniVersion"], "plugins": []any{raw}}
	}
	// Check each plugin here, so that an error names plugins[i] (libcni says "plugin config i", or nothing
	// when the entry is not an object).
	plugins, _ := raw["plugins"].([]any)
	for i, p := range plugins {
		b, err := json.Marshal(p)
		if err == nil {
			_, err = libcni.NetworkPluginConfFromBytes(b)
		}
		if err != nil && isList {
			return nil, fmt.Errorf("%s: plugins[%d]: %w", what, i, fmt.Errorf("%w: %w", ErrConfig, err))
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", what, fmt.Errorf("%w: %w", ErrConfig, err))
		}
	}
	out, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, fmt.Errorf("%w: %w", ErrConfig, err))
	}
	list, err := libcni.ConfListFromBytes(out)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, fmt.Errorf("%w: %w", ErrConfig, err))
	}
	if len(list.Plugins) == 0 {
		return nil, fmt.Errorf("%s: no plugins: %w", what, ErrConfig)
	}
	return list, nil
}

// FindType returns the index and type of the list's first plugin whose type is, by match; -1 when there is
// none. braid uses it to never delegate to itself.
func FindType(list *libcni.NetworkConfigList, match func(string) bool) (int, string) {
	for i, p := range list.Plugins {
		if p.Network != nil && match(p.Network.Type) {
			return i, p.Network.Type
		}
	}
	return -1, ""
}

// Customize merges the pod's cni-args into "args": {"cni": ...} of every plugin (the pod's keys win over the
// NAD's, NPWG spec 4.1.2.1.6) and sets "deviceID" and "pciBusID" on the first plugin, where device plugins'
// CNIs look for it (sriov reads "deviceID", host-device "pciBusID"), as Multus does. The input list is not
// modified.
func Customize(list *libcni.NetworkConfigList, cniArgs map[string]any, deviceID string) (*libcni.NetworkConfigList, error) {
	if len(cniArgs) == 0 && deviceID == "" {
		return list, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return nil, fmt.Errorf("network %s: %w", list.Name, fmt.Errorf("%w: %w", ErrConfig, err))
	}
	plugins := make([]any, len(list.Plugins))
	for i, p := range list.Plugins {
		var pm map[string]any
		if err := json.Unmarshal(p.Bytes, &pm); err != nil {
			return nil, fmt.Errorf("network %s plugin %d: %w", list.Name, i, fmt.Errorf("%w: %w", ErrConfig, err))
		}
		if len(cniArgs) > 0 {
			args, _ := pm["args"].(map[string]any)
			if args == nil {
				args = map[string]any{}
			}
			cni, _ := args["cni"].(map[string]any)
			merged := map[string]any{}
			maps.Copy(merged, cni)
			maps.Copy(merged, cniArgs)
			args["cni"] = merged
			pm["args"] = args
		}
		if i == 0 && deviceID != "" {
			pm["deviceID"] = deviceID
			pm["pciBusID"] = deviceID // host-device's key for the device, which Multus sets too
		}
		plugins[i] = pm
	}
	raw["plugins"] = plugins
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", list.Name, fmt.Errorf("%w: %w", ErrConfig, err))
	}
	out, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", list.Name, fmt.Errorf("%w: %w", ErrConfig, err))
	}
	return out, nil
}

// request is one capability the annotation asks for and the annotation key it came from.
type request struct {
	capability, key string
	value           any
}

func requests(e selection.Element) []request {
	var rs []request
	if len(e.IPs) > 0 {
		rs = append(rs, request{CapIPs, "ips", slices.Clone(e.IPs)})
	}
	if e.MAC != "" {
		rs = append(rs, request{CapMAC, "mac", e.MAC})
	}
	if e.InfinibandGUID != "" {
		rs = append(rs, request{CapInfinibandGUID, "infiniband-guid", e.InfinibandGUID})
	}
	if e.Bandwidth != nil {
		rs = append(rs, request{CapBandwidth, "bandwidth", *e.Bandwidth})
	}
	if len(e.PortMappings) > 0 {
		rs = append(rs, request{CapPortMappings, "portMappings", slices.Clone(e.PortMappings)})
	}
	return rs
}

// CheckCapabilities fails when the element asks for a capability that no plugin of the list declares: the
// NPWG spec says the whole attachment must then fail, rather than the request being dropped silently.
func CheckCapabilities(network string, list *libcni.NetworkConfigList, e selection.Element) error {
	for _, r := range requests(e) {
		declared := false
		for _, p := range list.Plugins {
			if p.Network != nil && p.Network.Capabilities[r.capability] {
				declared = true
				break
			}
		}
		if !declared {
			return &CapabilityError{Network: network, Capability: r.capability, Key: r.key}
		}
	}
	return nil
}

// CapabilityArgs are the runtimeConfig values for one extra attachment. libcni hands each plugin only the
// ones it declares. deviceID and devInfoFile may be empty.
func CapabilityArgs(e selection.Element, deviceID, devInfoFile string) map[string]any {
	args := map[string]any{}
	for _, r := range requests(e) {
		args[r.capability] = r.value
	}
	if deviceID != "" {
		args[CapDeviceID] = deviceID
	}
	if devInfoFile != "" {
		args[CapDeviceInfoFile] = devInfoFile
	}
	return args
}

// jsonType names the JSON type of a decoded value, for errors.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
