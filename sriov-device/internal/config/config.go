// Package config reads the device plugin's configuration: the SR-IOV network device plugin's `resourceList`
// JSON, so that its users keep their config file. Parse is pure: bytes in, a validated model or errors that
// name the field (`resourceList[1].selectors.pfNames[0]: ...`) out.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/braid-cni/braid/sriov-device/internal/discover"
	"github.com/braid-cni/braid/sriov-device/internal/selector"
)

// DefaultPrefix is the resource prefix of resources whose config names none.
const DefaultPrefix = "braid.dev"

// DeviceTypeNetDevice is the only deviceType braid serves: PCI network functions (VFs and plain NICs).
const DeviceTypeNetDevice = "netDevice"

// Config is a validated configuration.
type Config struct {
	Resources []Resource
}

// Resource is one entry of resourceList.
type Resource struct {
	// Name is resourceName; Prefix is resourcePrefix or the default.
	Name   string
	Prefix string
	// DeviceType is always DeviceTypeNetDevice.
	DeviceType string
	// ExcludeTopology leaves NUMA information out of what the kubelet is told, as upstream's excludeTopology.
	ExcludeTopology bool
	// Selectors select the resource's functions: a function belongs to it when any Set matches.
	Selectors []selector.Set
}

// FullName is the extended resource name the kubelet knows, "<prefix>/<name>".
func (r Resource) FullName() string { return r.Prefix + "/" + r.Name }

// FieldError is a configuration error at one field.
type FieldError struct {
	// Field is the path of the field, e.g. "resourceList[1].selectors.pfNames[0]".
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// ErrUnsupported marks fields of the upstream format that braid does not implement, set to a value that asks
// for behaviour.
var ErrUnsupported = errors.New("not supported by braid-sriov-dp")

// Parse parses and validates a config. defaultPrefix is used for resources without resourcePrefix ("" means
// DefaultPrefix). All errors are returned together, each a *FieldError.
func Parse(data []byte, defaultPrefix string) (Config, error) {
	if defaultPrefix == "" {
		defaultPrefix = DefaultPrefix
	}
	var errs []error
	fail := func(field string, err error) { errs = append(errs, &FieldError{Field: field, Err: err}) }

	var root struct {
		ResourceList *[]json.RawMessage `json:"resourceList"`
	}
	if err := decodeObject(data, "", []string{"resourceList"}, &root); err != nil {
		return Config{}, err
	}
	if root.ResourceList == nil {
		return Config{}, &FieldError{Field: "resourceList", Err: errors.New("required")}
	}
	if errs := validatePrefix("--resource-prefix", defaultPrefix); errs != nil {
		return Config{}, errs
	}

	var cfg Config
	seen := map[string]int{}
	for i, raw := range *root.ResourceList {
		path := fmt.Sprintf("resourceList[%d]", i)
		r, err := parseResource(raw, path, defaultPrefix)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if j, dup := seen[r.FullName()]; dup {
			fail(path+".resourceName", fmt.Errorf("%q is already resourceList[%d]", r.FullName(), j))
			continue
		}
		seen[r.FullName()] = i
		cfg.Resources = append(cfg.Resources, r)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

type rawResource struct {
	ResourceName    string          `json:"resourceName"`
	ResourcePrefix  string          `json:"resourcePrefix"`
	DeviceType      string          `json:"deviceType"`
	ExcludeTopology bool            `json:"excludeTopology"`
	Selectors       json.RawMessage `json:"selectors"`
	AdditionalInfo  json.RawMessage `json:"additionalInfo"`
}

var resourceFields = []string{
	"resourceName", "resourcePrefix", "deviceType", "excludeTopology", "selectors", "additionalInfo",
}

func parseResource(raw json.RawMessage, path, defaultPrefix string) (Resource, error) {
	var rr rawResource
	if err := decodeObject(raw, path, resourceFields, &rr); err != nil {
		return Resource{}, err
	}
	var errs []error
	fail := func(field string, err error) { errs = append(errs, &FieldError{Field: path + "." + field, Err: err}) }

	r := Resource{Name: rr.ResourceName, Prefix: rr.ResourcePrefix, DeviceType: rr.DeviceType,
		ExcludeTopology: rr.ExcludeTopology}
	switch {
	case r.Name == "":
		fail("resourceName", errors.New("required"))
	case !validResourceName(r.Name):
		fail("resourceName", fmt.Errorf("%q must consist of letters, digits and _", r.Name))
	}
	if r.Prefix == "" {
		r.Prefix = defaultPrefix
	} else if err := validatePrefix(path+".resourcePrefix", r.Prefix); err != nil {
		errs = append(errs, err)
	}
	if r.Name != "" && len(errs) == 0 {
		if msgs := validation.IsQualifiedName(r.FullName()); len(msgs) > 0 {
			fail("resourceName", fmt.Errorf("%q is not a valid extended resource name: %s", r.FullName(),
				strings.Join(msgs, "; ")))
		}
	}
	switch r.DeviceType {
	case "":
		r.DeviceType = DeviceTypeNetDevice
	case DeviceTypeNetDevice:
	case "accelerator", "auxNetDevice":
		fail("deviceType", fmt.Errorf("%q: %w (only %q)", r.DeviceType, ErrUnsupported, DeviceTypeNetDevice))
	default:
		fail("deviceType", fmt.Errorf("%q is not a device type (only %q)", r.DeviceType, DeviceTypeNetDevice))
	}
	if len(rr.AdditionalInfo) > 0 && !isEmptyJSON(rr.AdditionalInfo) {
		fail("additionalInfo", ErrUnsupported)
	}

	sets, err := parseSelectors(rr.Selectors, path+".selectors")
	if err != nil {
		errs = append(errs, err)
	}
	r.Selectors = sets
	if len(errs) > 0 {
		return Resource{}, errors.Join(errs...)
	}
	return r, nil
}

// parseSelectors accepts the legacy form (one object) and the list form (an array of objects, any of which
// may select a function).
func parseSelectors(raw json.RawMessage, path string) ([]selector.Set, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return nil, &FieldError{Field: path, Err: errors.New("required: name the functions of this resource")}
	case raw[0] == '{':
		s, err := parseSet(raw, path)
		if err != nil {
			return nil, err
		}
		return []selector.Set{s}, nil
	case raw[0] == '[':
		var list []json.RawMessage
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, &FieldError{Field: path, Err: fmt.Errorf("not a list of selector objects: %w", err)}
		}
		if len(list) == 0 {
			return nil, &FieldError{Field: path, Err: errors.New("empty list: name the functions of this resource")}
		}
		var sets []selector.Set
		var errs []error
		for i, item := range list {
			s, err := parseSet(item, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			sets = append(sets, s)
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return sets, nil
	default:
		return nil, &FieldError{Field: path, Err: errors.New("must be an object or a list of objects")}
	}
}

type rawSet struct {
	Vendors      []string `json:"vendors"`
	Devices      []string `json:"devices"`
	Drivers      []string `json:"drivers"`
	PFNames      []string `json:"pfNames"`
	RootDevices  []string `json:"rootDevices"`
	PCIAddresses []string `json:"pciAddresses"`
	LinkTypes    []string `json:"linkTypes"`
	NeedVhostNet bool     `json:"needVhostNet"`

	// Selectors of the upstream format that braid does not implement; accepted only at their no-op value so
	// that existing configs keep working and none silently asks for something braid does not do.
	IsRdma      bool     `json:"isRdma"`
	VdpaType    string   `json:"vdpaType"`
	DDPProfiles []string `json:"ddpProfiles"`
	AcpiIndexes []string `json:"acpiIndexes"`
	PKeys       []string `json:"pKeys"`
	AuxTypes    []string `json:"auxTypes"`
}

var setFields = []string{
	"vendors", "devices", "drivers", "pfNames", "rootDevices", "pciAddresses", "linkTypes", "needVhostNet",
	"isRdma", "vdpaType", "ddpProfiles", "acpiIndexes", "pKeys", "auxTypes",
}

func parseSet(raw json.RawMessage, path string) (selector.Set, error) {
	var rs rawSet
	if err := decodeObject(raw, path, setFields, &rs); err != nil {
		return selector.Set{}, err
	}
	var errs []error
	fail := func(field string, err error) { errs = append(errs, &FieldError{Field: path + "." + field, Err: err}) }
	each := func(field string, values []string, check func(string) error) {
		for i, v := range values {
			if err := check(v); err != nil {
				fail(fmt.Sprintf("%s[%d]", field, i), err)
			}
		}
	}

	s := selector.Set{NeedVhostNet: rs.NeedVhostNet}
	each("vendors", rs.Vendors, hexID)
	s.Vendors = lower(rs.Vendors)
	each("devices", rs.Devices, hexID)
	s.Devices = lower(rs.Devices)
	each("drivers", rs.Drivers, func(v string) error {
		if v == "" || strings.ContainsAny(v, "/ \t\n") {
			return fmt.Errorf("%q is not a driver name", v)
		}
		return nil
	})
	s.Drivers = rs.Drivers
	for i, v := range rs.PFNames {
		p, err := selector.ParsePFName(v)
		if err != nil {
			fail(fmt.Sprintf("pfNames[%d]", i), err)
			continue
		}
		s.PFNames = append(s.PFNames, p)
	}
	for i, v := range rs.RootDevices {
		p, err := selector.ParseRootDevice(v)
		if err != nil {
			fail(fmt.Sprintf("rootDevices[%d]", i), err)
			continue
		}
		s.RootDevices = append(s.RootDevices, p)
	}
	each("pciAddresses", rs.PCIAddresses, func(v string) error {
		if !selector.ValidPCIAddress(strings.ToLower(v)) {
			return fmt.Errorf("%q is not a PCI address like 0000:3b:02.0", v)
		}
		return nil
	})
	s.PCIAddresses = lower(rs.PCIAddresses)
	each("linkTypes", rs.LinkTypes, func(v string) error {
		if !discover.KnownLinkType(v) {
			return fmt.Errorf("%q is not a link type (ether, infiniband, ...)", v)
		}
		return nil
	})
	s.LinkTypes = rs.LinkTypes

	if rs.IsRdma {
		fail("isRdma", ErrUnsupported)
	}
	if rs.VdpaType != "" {
		fail("vdpaType", ErrUnsupported)
	}
	for field, v := range map[string][]string{
		"ddpProfiles": rs.DDPProfiles, "acpiIndexes": rs.AcpiIndexes, "pKeys": rs.PKeys, "auxTypes": rs.AuxTypes,
	} {
		if len(v) > 0 {
			fail(field, ErrUnsupported)
		}
	}
	if len(errs) == 0 && s.Empty() {
		errs = append(errs, &FieldError{Field: path, Err: errors.New("selects nothing: name at least one of vendors, devices, drivers, pfNames, " +
			"rootDevices, pciAddresses, linkTypes")})
	}
	if len(errs) > 0 {
		sortFieldErrors(errs)
		return selector.Set{}, errors.Join(errs...)
	}
	return s, nil
}

// decodeObject decodes a JSON object into v after checking that it has no key outside known, so that a typo
// is an error naming the field rather than a silently ignored key.
func decodeObject(raw []byte, path string, known []string, v any) error {
	at := func(field string) string {
		if path == "" {
			if field == "" {
				return "config"
			}
			return field
		}
		if field == "" {
			return path
		}
		return path + "." + field
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &keys); err != nil {
		return &FieldError{Field: at(""), Err: fmt.Errorf("not a JSON object: %w", err)}
	}
	if keys == nil {
		return &FieldError{Field: at(""), Err: errors.New("not a JSON object: null")}
	}
	var errs []error
	for k := range keys {
		if !contains(known, k) {
			name := k
			if name == "" || strings.ContainsAny(name, ".[]\"\\") || strings.ContainsFunc(name, func(r rune) bool { return !unicode.IsPrint(r) }) {
				name = strconv.Quote(k) // an empty or odd key, written so that it cannot pass for a path or a new line
			}
			errs = append(errs, &FieldError{Field: at(name), Err: errors.New("unknown field")})
		}
	}
	if len(errs) > 0 {
		sortFieldErrors(errs)
		return errors.Join(errs...)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return &FieldError{Field: at(typeErr.Field), Err: fmt.Errorf("expected %s, got JSON %s",
				describe(typeErr.Type), typeErr.Value)}
		}
		return &FieldError{Field: at(""), Err: err}
	}
	return nil
}

// describe names a Go type the way a config author thinks of the JSON it expects.
func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "a list of strings"
		}
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "an object"
	default:
		return t.String()
	}
}

func validatePrefix(field, prefix string) error {
	if msgs := validation.IsDNS1123Subdomain(prefix); len(msgs) > 0 {
		return &FieldError{Field: field, Err: fmt.Errorf("%q is not a DNS subdomain: %s", prefix,
			strings.Join(msgs, "; "))}
	}
	if prefix == "kubernetes.io" || strings.HasSuffix(prefix, ".kubernetes.io") {
		return &FieldError{Field: field, Err: fmt.Errorf("%q: the kubernetes.io domain is reserved", prefix)}
	}
	return nil
}

// validResourceName is the upstream plugin's rule for resourceName (letters, digits, _); it also keeps the
// PCIDEVICE_ variable name a valid environment variable name.
func validResourceName(name string) bool {
	for _, c := range name {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return name != ""
}

func hexID(v string) error {
	if len(v) != 4 || strings.Trim(strings.ToLower(v), "0123456789abcdef") != "" {
		return fmt.Errorf("%q is not a 4-digit hex PCI ID like 8086", v)
	}
	return nil
}

func isEmptyJSON(raw json.RawMessage) bool {
	switch strings.TrimSpace(string(raw)) {
	case "null", "{}", "[]", `""`:
		return true
	}
	return false
}

func lower(in []string) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = strings.ToLower(s)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sortFieldErrors(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}
