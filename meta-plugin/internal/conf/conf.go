// Package conf parses and validates braid's own CNI configuration (`"type": "braid"`) and the Kubernetes
// CNI_ARGS. It is a pure core: bytes in, a validated Conf or an error naming the field out.
//
// Key names follow Multus wherever they mean the same thing, so a Multus configuration can be turned into a
// braid one by changing its type: clusterNetwork, defaultNetworks, delegates, kubeconfig, confDir, cniDir,
// binDir, readinessindicatorfile, namespaceIsolation, globalNamespaces, systemNamespaces, multusNamespace,
// logFile, logLevel, logToStderr, and logOptions (with a warning); Multus' auxiliaryCNIChainName is refused.
// Keys braid adds: podResourcesSocket, deviceInfoDir, podLookupTimeoutSeconds, readinessTimeoutSeconds.
package conf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/braid-cni/braid/crds/selection"
)

// PluginType is the CNI type of braid's own configuration.
const PluginType = "braid"

// ShimType is the CNI type of the same configuration when braid runs as a node daemon: the runtime runs the
// small braid-shim, which hands the call, conf and all, to the daemon at DaemonSocket.
const ShimType = "braid-shim"

// IsBraid reports whether a plugin type is braid itself: braid's own, or braid-shim, which hands the call to
// braid's node daemon. braid never delegates to either, which would make it call itself without end.
func IsBraid(pluginType string) bool { return pluginType == PluginType || pluginType == ShimType }

// Defaults for keys left out of the configuration.
const (
	DefaultConfDir            = "/etc/cni/braid/net.d"
	DefaultCNIDir             = "/var/lib/cni/braid"
	DefaultBinDir             = "/opt/cni/bin"
	DefaultNamespace          = "kube-system"
	DefaultGlobalNamespace    = "default"
	DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"
	DefaultDeviceInfoDir      = "/var/run/k8s.cni.cncf.io/devinfo"
	DefaultLogLevel           = "error"
	DefaultPodLookupTimeout   = 10 * time.Second
	DefaultReadinessTimeout   = 30 * time.Second
)

// ErrInvalid is what every validation error wraps; errors.As gives the *FieldError.
var ErrInvalid = errors.New("invalid braid configuration")

// FieldError names the configuration key that is wrong.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Unwrap lets callers test for ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// parseNamespaces reads a list of namespaces written either as a JSON list or, as Multus' globalNamespaces is,
// as one comma-separated string.
func parseNamespaces(field string, raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fieldErr(field, "must be a list of namespaces or one comma-separated string")
		}
		list = nil
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				list = append(list, part)
			}
		}
	}
	for i, n := range list {
		if r := selection.ValidLabel(n); r != "" {
			return nil, fieldErr(fmt.Sprintf("%s[%d]", field, i), "%s", r)
		}
	}
	return list, nil
}

// NetRef names a NetworkAttachmentDefinition.
type NetRef struct {
	Namespace string
	Name      string
}

func (r NetRef) String() string { return r.Namespace + "/" + r.Name }

// Conf is braid's validated configuration, with defaults applied.
type Conf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`

	// ClusterNetwork is the master network: an absolute path to a conf or conflist file, an absolute path to a
	// directory (its first conf file, in lexical order, that is not braid's), or a NAD name ("[ns/]name").
	ClusterNetwork string `json:"clusterNetwork"`
	// Delegates is Multus' older way to give the networks inline: the first is the master network, the others
	// are attached to every pod, after DefaultNetworks.
	Delegates []json.RawMessage `json:"delegates"`
	// DefaultNetworks are NADs attached to every pod outside SystemNamespaces, before the pod's own.
	DefaultNetworks []string `json:"defaultNetworks"`
	// ClusterNetworkNamespace is where NAD names in ClusterNetwork and DefaultNetworks without a namespace are.
	ClusterNetworkNamespace string `json:"clusterNetworkNamespace"`
	MultusNamespace         string `json:"multusNamespace"`

	Kubeconfig string `json:"kubeconfig"`
	// DaemonSocket is where braid-shim finds braid's node daemon (type braid-shim only).
	DaemonSocket string `json:"daemonSocket"`
	// ConfDir holds on-disk confs for NADs without spec.config.
	ConfDir string `json:"confDir"`
	// CNIDir holds braid's attachment records and libcni's result cache for the delegates.
	CNIDir string `json:"cniDir"`
	// BinDir is searched for delegate plugins before CNI_PATH.
	BinDir string `json:"binDir"`

	ReadinessIndicatorFile string `json:"readinessindicatorfile"`

	NamespaceIsolation  bool            `json:"namespaceIsolation"`
	RawGlobalNamespaces json.RawMessage `json:"globalNamespaces"`
	RawSystemNamespaces json.RawMessage `json:"systemNamespaces"`

	LogFile     string `json:"logFile"`
	LogLevel    string `json:"logLevel"`
	LogToStderr bool   `json:"logToStderr"`
	// LogOptions is Multus' log rotation, which braid does not do: accepted with a warning.
	LogOptions json.RawMessage `json:"logOptions,omitempty"`
	// AuxiliaryCNIChainName is Multus' auxiliary CNI chain, which braid does not run: refused when set.
	AuxiliaryCNIChainName string `json:"auxiliaryCNIChainName,omitempty"`

	PodResourcesSocket      string `json:"podResourcesSocket"`
	DeviceInfoDir           string `json:"deviceInfoDir"`
	PodLookupTimeoutSeconds *int   `json:"podLookupTimeoutSeconds"`
	ReadinessTimeoutSeconds *int   `json:"readinessTimeoutSeconds"`

	// Capabilities and RuntimeConfig come from the runtime; braid passes them to the master network only
	// (NPWG spec 7.5).
	Capabilities  map[string]bool `json:"capabilities"`
	RuntimeConfig map[string]any  `json:"runtimeConfig"`

	// ValidAttachments is the GC argument of CNI 1.1.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments"`
	// LegacyAttachments is the same list under the name an erratum of the CNI 1.1 spec used.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments"`

	// Derived fields, set by Parse.
	PodLookupTimeout time.Duration `json:"-"`
	ReadinessTimeout time.Duration `json:"-"`
	// ClusterNAD is set when ClusterNetwork names a NAD rather than a path.
	ClusterNAD *NetRef `json:"-"`
	// DefaultNADs are DefaultNetworks, parsed.
	DefaultNADs []NetRef `json:"-"`
	// GlobalNamespaces hold NADs any pod may use under namespace isolation; ["default"] unless set, as in Multus.
	GlobalNamespaces []string `json:"-"`
	// SystemNamespaces get only the cluster network's defaults (Multus' systemNamespaces).
	SystemNamespaces []string `json:"-"`
	// Warnings are what the configuration gets wrong without harm, for the log.
	Warnings []string `json:"-"`
}

// Parse decodes and validates braid's configuration and applies defaults.
func Parse(data []byte) (*Conf, error) {
	var c Conf
	if err := json.Unmarshal(data, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, fieldErr(te.Field, "must be of type %s, not %s", te.Type, te.Value)
		}
		return nil, fieldErr("(configuration)", "not a JSON object: %v", err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	c.applyDefaults()
	return &c, nil
}

var logLevels = map[string]bool{"": true, "debug": true, "verbose": true, "info": true, "error": true, "panic": true}

func (c *Conf) validate() error {
	if c.Type != PluginType && c.Type != ShimType {
		return fieldErr("type", "must be %q (or %q with braid's node daemon), not %q", PluginType, ShimType, c.Type)
	}
	if c.DaemonSocket != "" && !filepath.IsAbs(c.DaemonSocket) {
		return fieldErr("daemonSocket", "must be an absolute path, not %q", c.DaemonSocket)
	}
	if c.Name == "" {
		return fieldErr("name", "must not be empty")
	}
	if c.CNIVersion == "" {
		return fieldErr("cniVersion", "must not be empty")
	}
	switch {
	case c.ClusterNetwork == "" && len(c.Delegates) == 0:
		return fieldErr("clusterNetwork", "is required (a conf file, a conf directory or a NetworkAttachmentDefinition name)")
	case c.ClusterNetwork != "" && len(c.Delegates) > 0:
		// As Multus does: clusterNetwork wins and delegates are not used, not even checked.
		c.Warnings = append(c.Warnings, "delegates: ignored, because clusterNetwork is set (as in Multus); remove one of them")
		c.Delegates = nil
	}
	if c.AuxiliaryCNIChainName != "" {
		// Multus runs the confs of this chain after every attachment; ignoring it would silently leave every
		// pod without what they set up (a service mesh's redirection, say).
		return fieldErr("auxiliaryCNIChainName", "braid does not run Multus' auxiliary CNI chain %q; add its plugins to "+
			"the cluster network's conflist (or to the NADs' configs) and remove this key", c.AuxiliaryCNIChainName)
	}
	if len(c.LogOptions) > 0 && string(c.LogOptions) != "null" {
		c.Warnings = append(c.Warnings, "logOptions: ignored, braid does not rotate logFile (Multus does); rotate it with logrotate")
	}
	for i, d := range c.Delegates {
		if err := validateDelegate(fmt.Sprintf("delegates[%d]", i), d); err != nil {
			return err
		}
	}
	ns, nsField := c.ClusterNetworkNamespace, "clusterNetworkNamespace"
	if c.MultusNamespace != "" {
		if ns != "" && ns != c.MultusNamespace {
			return fieldErr("multusNamespace", "%q differs from clusterNetworkNamespace %q", c.MultusNamespace, ns)
		}
		ns, nsField = c.MultusNamespace, "multusNamespace" // the key the user wrote, for the message
	}
	if ns != "" {
		if r := selection.ValidLabel(ns); r != "" {
			return fieldErr(nsField, "%s", r)
		}
	} else {
		ns = DefaultNamespace
	}
	c.ClusterNetworkNamespace = ns
	if c.ClusterNetwork != "" && !filepath.IsAbs(c.ClusterNetwork) {
		ref, err := parseRef("clusterNetwork", c.ClusterNetwork, ns)
		if err != nil {
			return err
		}
		c.ClusterNAD = &ref
	}
	for i, n := range c.DefaultNetworks {
		ref, err := parseRef(fmt.Sprintf("defaultNetworks[%d]", i), n, ns)
		if err != nil {
			return err
		}
		c.DefaultNADs = append(c.DefaultNADs, ref)
	}
	if c.Kubeconfig == "" {
		switch {
		case c.ClusterNAD != nil:
			return fieldErr("clusterNetwork", "names a NetworkAttachmentDefinition, which needs kubeconfig")
		case len(c.DefaultNADs) > 0:
			return fieldErr("defaultNetworks", "are NetworkAttachmentDefinitions, which need kubeconfig")
		}
	}
	for _, p := range []struct{ field, path string }{
		{"kubeconfig", c.Kubeconfig}, {"confDir", c.ConfDir}, {"cniDir", c.CNIDir}, {"binDir", c.BinDir},
		{"readinessindicatorfile", c.ReadinessIndicatorFile}, {"logFile", c.LogFile},
		{"podResourcesSocket", c.PodResourcesSocket}, {"deviceInfoDir", c.DeviceInfoDir},
	} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return fieldErr(p.field, "must be an absolute path, not %q", p.path)
		}
	}
	var err error
	if c.GlobalNamespaces, err = parseNamespaces("globalNamespaces", c.RawGlobalNamespaces); err != nil {
		return err
	}
	if c.SystemNamespaces, err = parseNamespaces("systemNamespaces", c.RawSystemNamespaces); err != nil {
		return err
	}
	if !logLevels[strings.ToLower(c.LogLevel)] {
		return fieldErr("logLevel", "%q is not one of debug, verbose, info, error, panic", c.LogLevel)
	}
	for field, v := range map[string]*int{"podLookupTimeoutSeconds": c.PodLookupTimeoutSeconds, "readinessTimeoutSeconds": c.ReadinessTimeoutSeconds} {
		if v != nil && (*v < 0 || *v > 600) {
			return fieldErr(field, "must be between 0 and 600, not %d", *v)
		}
	}
	return nil
}

// validateDelegate checks that an inline delegate is a conf or conflist and not braid itself.
func validateDelegate(field string, d json.RawMessage) error {
	type typed struct {
		Type string `json:"type"`
	}
	var probe struct {
		typed
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(d, &probe); err != nil || (probe.Type == "" && len(probe.Plugins) == 0) {
		return fieldErr(field, "must be a CNI conf with a type or a conflist with plugins")
	}
	self := func(f, t string) error {
		return fieldErr(f, "%q is braid itself, which would call itself without end; give the cluster network's own conf", t)
	}
	if IsBraid(probe.Type) {
		return self(field+".type", probe.Type)
	}
	for j, raw := range probe.Plugins {
		var p typed
		if json.Unmarshal(raw, &p) == nil && IsBraid(p.Type) { // other faults are the delegate loader's to report
			return self(fmt.Sprintf("%s.plugins[%d].type", field, j), p.Type)
		}
	}
	return nil
}

func parseRef(field, s, defaultNS string) (NetRef, error) {
	ns, name, hasNS := strings.Cut(s, "/")
	if !hasNS {
		ns, name = defaultNS, s
	}
	if r := selection.ValidLabel(ns); r != "" {
		return NetRef{}, fieldErr(field, "namespace %s", r)
	}
	if r := selection.ValidLabel(name); r != "" {
		return NetRef{}, fieldErr(field, "name %s", r)
	}
	return NetRef{Namespace: ns, Name: name}, nil
}

func (c *Conf) applyDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.ConfDir, DefaultConfDir)
	def(&c.CNIDir, DefaultCNIDir)
	def(&c.BinDir, DefaultBinDir)
	def(&c.PodResourcesSocket, DefaultPodResourcesSocket)
	def(&c.DeviceInfoDir, DefaultDeviceInfoDir)
	def(&c.LogLevel, DefaultLogLevel)
	c.LogLevel = strings.ToLower(c.LogLevel)
	if len(c.RawSystemNamespaces) == 0 || string(c.RawSystemNamespaces) == "null" { // null means left out
		c.SystemNamespaces = []string{DefaultNamespace}
	}
	if c.GlobalNamespaces == nil { // left out, null or "": Multus' default; an explicit [] leaves none
		c.GlobalNamespaces = []string{DefaultGlobalNamespace}
	}
	c.PodLookupTimeout = DefaultPodLookupTimeout
	if c.PodLookupTimeoutSeconds != nil {
		c.PodLookupTimeout = time.Duration(*c.PodLookupTimeoutSeconds) * time.Second
	}
	c.ReadinessTimeout = DefaultReadinessTimeout
	if c.ReadinessTimeoutSeconds != nil {
		c.ReadinessTimeout = time.Duration(*c.ReadinessTimeoutSeconds) * time.Second
	}
	if c.ValidAttachments == nil {
		c.ValidAttachments = c.LegacyAttachments
	}
}

// IsSystemNamespace reports whether pods of ns get only the cluster network's defaults (no defaultNetworks and
// no per-pod default network override), as Multus' systemNamespaces does.
func (c *Conf) IsSystemNamespace(ns string) bool {
	for _, s := range c.SystemNamespaces {
		if s == ns {
			return true
		}
	}
	return false
}

// MayUse reports whether a pod in podNS may attach a NAD from nadNS under namespace isolation.
func (c *Conf) MayUse(podNS, nadNS string) bool {
	if !c.NamespaceIsolation || podNS == nadNS {
		return true
	}
	for _, g := range c.GlobalNamespaces {
		if g == nadNS {
			return true
		}
	}
	return false
}

// K8sArgs are the Kubernetes keys of CNI_ARGS.
type K8sArgs struct {
	PodNamespace string
	PodName      string
	PodUID       string
	InfraID      string
}

// IsPod reports whether the call is for a Kubernetes pod.
func (a K8sArgs) IsPod() bool { return a.PodNamespace != "" && a.PodName != "" }

// ParseK8sArgs reads K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID and K8S_POD_INFRA_CONTAINER_ID from
// CNI_ARGS ("K=V;K=V"). Other keys are ignored whatever IgnoreUnknown says: they are for the delegates.
func ParseK8sArgs(cniArgs string) (K8sArgs, error) {
	var a K8sArgs
	for _, kv := range strings.Split(cniArgs, ";") {
		if strings.TrimSpace(kv) == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return K8sArgs{}, fieldErr("CNI_ARGS", "%q is not KEY=VALUE", kv)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.PodNamespace = v
		case "K8S_POD_NAME":
			a.PodName = v
		case "K8S_POD_UID":
			a.PodUID = v
		case "K8S_POD_INFRA_CONTAINER_ID":
			a.InfraID = v
		}
	}
	if (a.PodNamespace == "") != (a.PodName == "") {
		return K8sArgs{}, fieldErr("CNI_ARGS", "K8S_POD_NAMESPACE and K8S_POD_NAME must come together")
	}
	return a, nil
}

// PluginArgs returns CNI_ARGS as key/value pairs for libcni, unchanged, so the delegates see what braid saw.
func PluginArgs(cniArgs string) [][2]string {
	var out [][2]string
	for _, kv := range strings.Split(cniArgs, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}

// FirstDelegate returns the master network's conf when it is given inline in delegates (Multus' older form).
func (c *Conf) FirstDelegate() []byte {
	if len(c.Delegates) == 0 {
		return nil
	}
	return bytes.TrimSpace(c.Delegates[0])
}

// ExtraDelegates returns the delegates after the first: as in Multus, networks attached to every pod.
func (c *Conf) ExtraDelegates() []json.RawMessage {
	if len(c.Delegates) < 2 {
		return nil
	}
	return c.Delegates[1:]
}
