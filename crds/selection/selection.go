// Package selection parses the NPWG Network Attachment Selection Annotation (k8s.v1.cni.cncf.io/networks) and
// braid's per-pod default network override (v1.multus-cni.io/default-network): the API pods use to ask for
// networks. The meta-plugin and braid-ipam-server share it, so both read a pod's request, and name its
// interfaces, the same way. It is a pure core: no I/O, no
// logging, no globals beyond constants. Every rejection is a *FieldError that names the offending field, e.g.
// `networks[1].mac`, so a user can find the mistake in the pod's annotation.
//
// Both formats of the NPWG specification (v1.3, section 4.1) are accepted: the comma list `ns/name@ifname,...`
// and the JSON list of maps. Keys accepted in the JSON form are the specification's (name, namespace, ips, mac,
// interface, cni-args, portMappings, bandwidth, default-route, infiniband-guid, ipam-claim-reference) plus the
// ones Multus accepts (deviceID, and interfaceRequest as an alias of interface), so pods written for Multus keep
// working. Keys with a period are extensions in reverse domain notation and are ignored; any other key is
// rejected, because the specification reserves keys without a period and a typo must not pass silently.
package selection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode"
)

const (
	// NetworksAnnotation selects the additional networks of a pod.
	NetworksAnnotation = "k8s.v1.cni.cncf.io/networks"
	// DefaultNetworkAnnotation replaces the cluster network of one pod.
	DefaultNetworkAnnotation = "v1.multus-cni.io/default-network"

	// maxLabel is the DNS-1123 label length limit.
	maxLabel = 63
	// maxIfName is the Linux limit on interface names (IFNAMSIZ - 1).
	maxIfName = 15
)

// ErrInvalid is what every parse error wraps; errors.As gives the *FieldError with the field's name.
var ErrInvalid = errors.New("invalid network selection")

// FieldError says which field of the annotation is wrong and why.
type FieldError struct {
	// Field is the path of the field, e.g. "networks[2].default-route".
	Field string
	// Reason says what is wrong, in words a user understands.
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap lets callers test for ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Bandwidth is the "bandwidth" request, in bits per second and bits (CNI CONVENTIONS.md).
type Bandwidth struct {
	IngressRate  int64 `json:"ingressRate,omitempty"`
	IngressBurst int64 `json:"ingressBurst,omitempty"`
	EgressRate   int64 `json:"egressRate,omitempty"`
	EgressBurst  int64 `json:"egressBurst,omitempty"`
}

// PortMapping is one "portMappings" entry. Protocol is normalised to lower case ("tcp" when absent), which is
// what the portmap plugin expects.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Element is one validated attachment request.
type Element struct {
	// Name is the NetworkAttachmentDefinition's name.
	Name string `json:"name"`
	// Namespace is the NAD's namespace; Parse fills in the pod's namespace when the request has none.
	Namespace string `json:"namespace,omitempty"`
	// Interface is the requested interface name in the pod; empty means braid picks net<N>.
	Interface string `json:"interface,omitempty"`
	// IPs are addresses with optional prefix length, passed as runtimeConfig "ips".
	IPs []string `json:"ips,omitempty"`
	// MAC is passed as runtimeConfig "mac".
	MAC string `json:"mac,omitempty"`
	// InfinibandGUID is passed as runtimeConfig "infinibandGUID".
	InfinibandGUID string `json:"infiniband-guid,omitempty"`
	// DefaultRoute holds the gateways for the pod's default route; it is meaningful when HasDefaultRoute,
	// and may then be empty (use the gateways the attachment's IPAM returns).
	DefaultRoute    []netip.Addr `json:"default-route,omitempty"`
	HasDefaultRoute bool         `json:"-"`
	// CNIArgs become the "args": {"cni": ...} of every plugin of the attachment, over the NAD's own.
	CNIArgs map[string]any `json:"cni-args,omitempty"`
	// Bandwidth is passed as runtimeConfig "bandwidth".
	Bandwidth *Bandwidth `json:"bandwidth,omitempty"`
	// PortMappings are passed as runtimeConfig "portMappings".
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	// DeviceID names the device for the delegate (Multus' key); braid also fills it from the kubelet.
	DeviceID string `json:"deviceID,omitempty"`
	// IPAMClaimReference names an IPAMClaim (spec 4.1.2.1.11); it excludes IPs.
	IPAMClaimReference string `json:"ipam-claim-reference,omitempty"`
}

// Ref is the "namespace/name" form used in network-status and in messages.
func (e Element) Ref() string { return e.Namespace + "/" + e.Name }

// HasDNS1123LabelForm reports whether s is lower-case letters, digits and '-', starting and ending with a letter
// or digit: a DNS-1123 label but for its length, which callers bound (63 for a label; a subdomain bounds only
// the whole). Written out rather than a regular expression, which would compile at every start of the CNI
// binaries that link this package.
func HasDNS1123LabelForm(s string) bool {
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if s == "" || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := range len(s) {
		if !alnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

// ValidLabel reports why s is not a DNS-1123 label, or "" when it is one.
func ValidLabel(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > maxLabel:
		return fmt.Sprintf("%q is longer than %d characters", s, maxLabel)
	case !HasDNS1123LabelForm(s):
		return fmt.Sprintf("%q is not a DNS-1123 label (lower case alphanumerics and '-', starting and ending "+
			"with an alphanumeric)", s)
	}
	return ""
}

// ValidInterfaceName reports why s cannot name an interface braid adds to a pod, or "" when it can: it must be
// a Linux interface name other than the loopback interface every pod already has.
func ValidInterfaceName(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case s == "lo":
		// A delegate would fail to create it, and its DEL (rollback) would try to delete the pod's loopback.
		return `"lo" is the pod's loopback interface; choose another name`
	case len(s) > maxIfName:
		return fmt.Sprintf("%q is longer than %d characters", s, maxIfName)
	case s == "." || s == "..":
		return fmt.Sprintf("%q is not a valid interface name", s)
	}
	for _, r := range s {
		// '%' makes the name a template the kernel fills in (net%d becomes net0): the interface would not be
		// the one asked for.
		if r == '/' || r == ':' || r == '%' || unicode.IsSpace(r) || r > unicode.MaxASCII || !unicode.IsPrint(r) {
			return fmt.Sprintf("%q contains '/', ':', '%%', white space or a non-printable character", s)
		}
	}
	return ""
}

// Parse parses the value of the networks annotation of a pod in podNamespace. An empty value selects nothing.
func Parse(value, podNamespace string) ([]Element, error) {
	v := strings.TrimSpace(value)
	var (
		elems []Element
		err   error
	)
	switch {
	case v == "":
		return nil, nil
	case v[0] == '[':
		elems, err = parseJSON(v)
	case v[0] == '{':
		return nil, fieldErr("networks", "the JSON form must be a list: wrap the object in [ ]")
	default:
		elems, err = parseCommaList(v)
	}
	if err != nil {
		return nil, err
	}
	for i := range elems {
		if elems[i].Namespace == "" {
			elems[i].Namespace = podNamespace
		}
	}
	if err := validateSet(elems); err != nil {
		return nil, err
	}
	return elems, nil
}

// ParseDefaultNetwork parses the per-pod default network override: one reference, "name" or "namespace/name"
// (or a JSON list of one element with only name and namespace). A name without namespace is in
// defaultNamespace, which is the meta-plugin's Multus namespace (multusNamespace / clusterNetworkNamespace),
// not the pod's, as Multus parses it (parsePodNetworkAnnotation(netAnnot, conf.MultusNamespace)). The cluster
// network's interface name is set by the runtime, so an interface or any per-attachment option is refused
// rather than ignored.
func ParseDefaultNetwork(value, defaultNamespace string) (Element, error) {
	elems, err := Parse(value, defaultNamespace)
	if err != nil {
		return Element{}, relabel(err, "networks", "default-network")
	}
	if len(elems) != 1 {
		return Element{}, fieldErr("default-network", "must name exactly one network, found %d", len(elems))
	}
	e := elems[0]
	if e.Interface != "" || len(e.IPs) > 0 || e.MAC != "" || e.InfinibandGUID != "" || e.HasDefaultRoute ||
		e.CNIArgs != nil || e.Bandwidth != nil || e.PortMappings != nil || e.DeviceID != "" || e.IPAMClaimReference != "" {
		return Element{}, fieldErr("default-network", "only name and namespace are allowed for the default network")
	}
	return e, nil
}

func relabel(err error, from, to string) error {
	var fe *FieldError
	if errors.As(err, &fe) && strings.HasPrefix(fe.Field, from) {
		return &FieldError{Field: to + strings.TrimPrefix(fe.Field, from), Reason: fe.Reason}
	}
	return err
}

// parseCommaList parses `a, ns/b, c@if1, ns/d@if2`.
func parseCommaList(v string) ([]Element, error) {
	items := strings.Split(v, ",")
	elems := make([]Element, 0, len(items))
	for i, item := range items {
		field := fmt.Sprintf("networks[%d]", i)
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fieldErr(field, "empty element in the comma-separated list")
		}
		// As in Multus, an empty namespace ("/net-a") is the pod's and an empty interface ("net-a@") is unset.
		var e Element
		nsName, ifName, hasIf := strings.Cut(item, "@")
		if hasIf {
			if strings.Contains(ifName, "@") {
				return nil, fieldErr(field, "%q has more than one '@'", item)
			}
			e.Interface = strings.TrimSpace(ifName)
			if r := ValidInterfaceName(e.Interface); e.Interface != "" && r != "" {
				return nil, fieldErr(field+".interface", "%s", r)
			}
		}
		ns, name, hasNS := strings.Cut(nsName, "/")
		if hasNS {
			if strings.Contains(name, "/") {
				return nil, fieldErr(field, "%q has more than one '/'", item)
			}
			e.Namespace = strings.TrimSpace(ns)
			if r := ValidLabel(e.Namespace); e.Namespace != "" && r != "" {
				return nil, fieldErr(field+".namespace", "%s", r)
			}
		} else {
			name = ns
		}
		e.Name = strings.TrimSpace(name)
		if r := ValidLabel(e.Name); r != "" {
			return nil, fieldErr(field+".name", "%s", r)
		}
		elems = append(elems, e)
	}
	return elems, nil
}

func parseJSON(v string) ([]Element, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		return nil, fieldErr("networks", "not a valid JSON list: %v", err)
	}
	elems := make([]Element, 0, len(raw))
	for i, r := range raw {
		e, err := parseJSONElement(fmt.Sprintf("networks[%d]", i), r)
		if err != nil {
			return nil, err
		}
		elems = append(elems, e)
	}
	return elems, nil
}

func isNull(r json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(r), []byte("null")) }

// emptyOptional: an empty interface, interfaceRequest or mac string, or an empty ips list, which Multus takes
// for "not requested".
func emptyOptional(key string, r json.RawMessage) bool {
	v := string(bytes.TrimSpace(r))
	switch key {
	case "interface", "interfaceRequest", "mac":
		return v == `""`
	case "ips":
		return strings.ReplaceAll(v, " ", "") == "[]"
	}
	return false
}

// decode unmarshals one key's value, naming the field in the error.
func decode(field string, r json.RawMessage, into any) error {
	d := json.NewDecoder(bytes.NewReader(r))
	d.DisallowUnknownFields()
	d.UseNumber()
	if err := d.Decode(into); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field != "" {
				return fieldErr(field+"."+te.Field, "must be of type %s, not %s", te.Type, te.Value)
			}
			return fieldErr(field, "must be of type %s, not %s", te.Type, te.Value)
		}
		return fieldErr(field, "%v", err)
	}
	return nil
}

func parseJSONElement(field string, r json.RawMessage) (Element, error) {
	var keys map[string]json.RawMessage
	if isNull(r) {
		return Element{}, fieldErr(field, "must be an object, not null")
	}
	if err := decode(field, r, &keys); err != nil {
		return Element{}, fieldErr(field, "must be an object with string keys")
	}
	var e Element
	var ifAlias string
	for k, val := range keys {
		f := field + "." + k
		if isNull(val) && k != "name" || emptyOptional(k, val) {
			continue // an explicit null (or, as Multus reads them, "" or [] for these keys) is an absent key
		}
		var err error
		switch k {
		case "name":
			err = decode(f, val, &e.Name)
		case "namespace":
			err = decode(f, val, &e.Namespace)
		case "interface":
			err = decode(f, val, &e.Interface)
		case "interfaceRequest":
			err = decode(f, val, &ifAlias)
		case "ips":
			err = decode(f, val, &e.IPs)
			if err == nil {
				err = validateIPs(f, e.IPs)
			}
		case "mac":
			err = decode(f, val, &e.MAC)
			if err == nil {
				err = validateMAC(f, e.MAC)
			}
		case "infiniband-guid":
			err = decode(f, val, &e.InfinibandGUID)
			if err == nil {
				err = validateHWAddr(f, e.InfinibandGUID, 8, 20)
			}
		case "default-route":
			e.HasDefaultRoute = true
			e.DefaultRoute, err = parseGateways(f, val)
		case "cni-args":
			// Numbers stay json.Number so that they reach the delegate exactly as the user wrote them.
			err = decode(f, val, &e.CNIArgs)
		case "bandwidth":
			e.Bandwidth, err = parseBandwidth(f, val)
		case "portMappings":
			e.PortMappings, err = parsePortMappings(f, val)
		case "deviceID":
			err = decode(f, val, &e.DeviceID)
			if err == nil && strings.TrimSpace(e.DeviceID) == "" {
				err = fieldErr(f, "must not be empty")
			}
		case "ipam-claim-reference":
			err = decode(f, val, &e.IPAMClaimReference)
			if err == nil && e.IPAMClaimReference == "" {
				err = fieldErr(f, "must not be empty")
			}
		default:
			if !strings.Contains(k, ".") {
				err = fieldErr(f, "unknown key; keys without a period are reserved by the NPWG specification "+
					"(extensions use reverse domain names such as \"org.example.key\")")
			}
		}
		if err != nil {
			return Element{}, err
		}
	}
	if _, ok := keys["name"]; !ok {
		return Element{}, fieldErr(field+".name", "is required")
	}
	if r := ValidLabel(e.Name); r != "" {
		return Element{}, fieldErr(field+".name", "%s", r)
	}
	if e.Namespace != "" {
		if r := ValidLabel(e.Namespace); r != "" {
			return Element{}, fieldErr(field+".namespace", "%s", r)
		}
	}
	if ifAlias != "" {
		if e.Interface != "" && e.Interface != ifAlias {
			return Element{}, fieldErr(field+".interfaceRequest", "%q differs from interface %q", ifAlias, e.Interface)
		}
		e.Interface = ifAlias
	}
	if e.Interface != "" {
		if r := ValidInterfaceName(e.Interface); r != "" {
			return Element{}, fieldErr(field+".interface", "%s", r)
		}
	}
	if len(e.IPs) > 0 && e.IPAMClaimReference != "" {
		return Element{}, fieldErr(field+".ipam-claim-reference", "cannot be combined with ips: choose one source of addresses")
	}
	return e, nil
}

func validateIPs(field string, ips []string) error {
	if len(ips) == 0 {
		return fieldErr(field, "must hold at least one address when present")
	}
	for i, s := range ips {
		if _, err := netip.ParsePrefix(s); err == nil {
			continue
		}
		if _, err := netip.ParseAddr(s); err == nil && !strings.Contains(s, "%") {
			continue
		}
		return fieldErr(fmt.Sprintf("%s[%d]", field, i), "%q is not an IPv4 or IPv6 address with optional prefix length", s)
	}
	return nil
}

func validateHWAddr(field, s string, lengths ...int) error {
	hw, err := net.ParseMAC(s)
	if err == nil {
		for _, l := range lengths {
			if len(hw) == l {
				return nil
			}
		}
	}
	return fieldErr(field, "%q is not a valid %d-byte hardware address", s, lengths[0])
}

// validateMAC also refuses what the kernel refuses as an interface's address: a multicast (group bit set) or
// all-zero MAC, which would otherwise fail inside the delegate with a message that names no field.
func validateMAC(field, s string) error {
	if err := validateHWAddr(field, s, 6); err != nil {
		return err
	}
	hw, _ := net.ParseMAC(s)
	if hw[0]&1 == 1 || bytes.Equal(hw, make([]byte, 6)) {
		return fieldErr(field, "%q is not a unicast MAC address (the first octet must be even, and not all zero); "+
			"use a locally administered one such as 02:00:00:00:00:01", s)
	}
	return nil
}

func parseGateways(field string, r json.RawMessage) ([]netip.Addr, error) {
	var ss []string
	if err := decode(field, r, &ss); err != nil {
		return nil, err
	}
	gws := make([]netip.Addr, 0, len(ss))
	for i, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.Unmap().IsUnspecified() || a.IsMulticast() || a.Unmap().IsLoopback() {
			return nil, fieldErr(fmt.Sprintf("%s[%d]", field, i), "%q is not a gateway IP address (a unicast address "+
				"of the attachment's network, such as 192.0.2.1)", s)
		}
		gws = append(gws, a)
	}
	return gws, nil
}

func parseBandwidth(field string, r json.RawMessage) (*Bandwidth, error) {
	var m map[string]json.RawMessage
	if err := decode(field, r, &m); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fieldErr(field, "must set at least one of ingressRate, ingressBurst, egressRate, egressBurst")
	}
	var b Bandwidth
	for k, v := range m {
		var dst *int64
		switch k {
		case "ingressRate":
			dst = &b.IngressRate
		case "ingressBurst":
			dst = &b.IngressBurst
		case "egressRate":
			dst = &b.EgressRate
		case "egressBurst":
			dst = &b.EgressBurst
		default:
			return nil, fieldErr(field+"."+k, "unknown key")
		}
		if err := decode(field+"."+k, v, dst); err != nil {
			return nil, err
		}
		if *dst <= 0 {
			return nil, fieldErr(field+"."+k, "must be a positive integer, not %d", *dst)
		}
	}
	if b.IngressBurst != 0 && b.IngressRate == 0 {
		return nil, fieldErr(field+".ingressBurst", "needs ingressRate")
	}
	if b.EgressBurst != 0 && b.EgressRate == 0 {
		return nil, fieldErr(field+".egressBurst", "needs egressRate")
	}
	return &b, nil
}

func parsePortMappings(field string, r json.RawMessage) ([]PortMapping, error) {
	var raw []map[string]json.RawMessage
	if err := decode(field, r, &raw); err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		return nil, fieldErr(field, "must hold at least one mapping when present")
	}
	pms := make([]PortMapping, len(raw))
	for i, m := range raw {
		f := fmt.Sprintf("%s[%d]", field, i)
		pm := &pms[i]
		// Keys are matched exactly: encoding/json would take "hostport" for "hostPort" silently.
		for k, v := range m {
			var err error
			switch k {
			case "hostPort":
				err = decode(f+"."+k, v, &pm.HostPort)
			case "containerPort":
				err = decode(f+"."+k, v, &pm.ContainerPort)
			case "protocol":
				err = decode(f+"."+k, v, &pm.Protocol)
			case "hostIP":
				err = decode(f+"."+k, v, &pm.HostIP)
			default:
				err = fieldErr(f+"."+k, "unknown key (want hostPort, containerPort, protocol, hostIP)")
			}
			if err != nil {
				return nil, err
			}
		}
		if pm.HostPort < 1 || pm.HostPort > 65535 {
			return nil, fieldErr(f+".hostPort", "must be between 1 and 65535, not %d", pm.HostPort)
		}
		if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
			return nil, fieldErr(f+".containerPort", "must be between 1 and 65535, not %d", pm.ContainerPort)
		}
		switch p := strings.ToLower(pm.Protocol); p {
		case "":
			pm.Protocol = "tcp"
		case "tcp", "udp", "sctp":
			pm.Protocol = p
		default:
			return nil, fieldErr(f+".protocol", "%q is not one of TCP, UDP, SCTP", pm.Protocol)
		}
		if pm.HostIP != "" {
			if _, err := netip.ParseAddr(pm.HostIP); err != nil {
				return nil, fieldErr(f+".hostIP", "%q is not an IP address", pm.HostIP)
			}
		}
	}
	return pms, nil
}

// MaxNetworks bounds the networks one pod may ask for. Each is an interface in the pod and, with braid-ipam,
// addresses held from a pool as soon as the pod is bound: a pod asking for thousands (an annotation may hold
// 256 KiB) would take whole pools from every other pod and flood the API server with their FloatingIPs.
const MaxNetworks = 128

// validateSet checks the rules that span elements: at most MaxNetworks, one default-route at most, unique
// requested interfaces.
func validateSet(elems []Element) error {
	if len(elems) > MaxNetworks {
		return fieldErr("networks", "asks for %d networks; a pod may ask for at most %d", len(elems), MaxNetworks)
	}
	routeAt, ifAt := -1, map[string]int{}
	for i, e := range elems {
		if e.HasDefaultRoute {
			if routeAt >= 0 {
				return fieldErr(fmt.Sprintf("networks[%d].default-route", i),
					"also set on networks[%d]; at most one element may set default-route", routeAt)
			}
			routeAt = i
		}
		if e.Interface != "" {
			if j, dup := ifAt[e.Interface]; dup {
				return fieldErr(fmt.Sprintf("networks[%d].interface", i), "%q is already requested by networks[%d]", e.Interface, j)
			}
			ifAt[e.Interface] = i
		}
	}
	return nil
}

// AssignInterfaces returns the interface name of each element: the requested one, or "net<N>" with N the
// element's position counted from first, moving on to the next free N when a requested name took it. taken
// holds names already in use, the cluster network's interface first (then those of defaultNetworks); no
// element may request one of them.
func AssignInterfaces(taken []string, first int, elems []Element) ([]string, error) {
	used := map[string]int{}
	for _, n := range taken {
		used[n] = -1
	}
	for i, e := range elems {
		if e.Interface == "" {
			continue
		}
		if j, dup := used[e.Interface]; dup {
			if j < 0 {
				return nil, fieldErr(fmt.Sprintf("networks[%d].interface", i), "%q is already used by the cluster network "+
					"or a default network", e.Interface)
			}
			return nil, fieldErr(fmt.Sprintf("networks[%d].interface", i), "%q is already requested by networks[%d]", e.Interface, j)
		}
		used[e.Interface] = i
	}
	names := make([]string, len(elems))
	next := first
	for i, e := range elems {
		if e.Interface != "" {
			names[i] = e.Interface
			continue
		}
		next = max(next, first+i)
		for {
			n := fmt.Sprintf("net%d", next)
			next++
			if _, inUse := used[n]; !inUse {
				names[i] = n
				used[n] = i
				break
			}
		}
	}
	return names, nil
}

// AssignAll names every extra interface of a pod the way braid does: the defaults (a meta-plugin's
// defaultNetworks, attached to every pod outside system namespaces) take net1..netK in order, then the pod's
// own elements continue from net<K+1>. clusterIf is the cluster network's interface (eth0). braid and
// braid-ipam-server both call it, so that an address is assigned to the interface that will carry it.
func AssignAll(clusterIf string, defaults, elems []Element) (defaultNames, names []string, err error) {
	taken := []string{clusterIf}
	if defaultNames, err = AssignInterfaces(taken, 1, defaults); err != nil {
		return nil, nil, err
	}
	if names, err = AssignInterfaces(append(taken, defaultNames...), len(defaults)+1, elems); err != nil {
		return nil, nil, err
	}
	return defaultNames, names, nil
}

// Encode renders elements in the JSON form, which Parse reads back to the same elements.
func Encode(elems []Element) (string, error) {
	type wire struct {
		Element
		DefaultRoute *[]string `json:"default-route,omitempty"`
	}
	out := make([]wire, len(elems))
	for i, e := range elems {
		out[i].Element = e
		if e.HasDefaultRoute {
			gws := make([]string, len(e.DefaultRoute))
			for j, g := range e.DefaultRoute {
				gws[j] = g.String()
			}
			out[i].DefaultRoute = &gws
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return "", fmt.Errorf("encode network selection: %w", err)
	}
	return string(b), nil
}
