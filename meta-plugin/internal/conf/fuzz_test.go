package conf

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/braid-cni/braid/crds/selection"
)

// FuzzParse feeds arbitrary bytes to the parser of braid's own conf (what the runtime writes to stdin). Every
// rejection must be a *FieldError (wrapping ErrInvalid) with a field and a reason; every acceptance must obey
// the rules validate states and survive a JSON round trip unchanged. Seed corpus: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{` + base + `,"clusterNetwork":"/etc/cni/net.d/10-bridge.conflist"}`,
		`{` + base + `,"clusterNetwork":"calico","defaultNetworks":["mgmt","infra/ctl"],"kubeconfig":"/k",
			"globalNamespaces":"default, infra","systemNamespaces":["kube-system"],"multusNamespace":"net-ns","logLevel":"VERBOSE"}`,
		`{` + base + `,"delegates":[{"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}]}`,
		`{` + base + `,"clusterNetwork":"/d","podLookupTimeoutSeconds":0,"readinessTimeoutSeconds":5,
			"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`,
		`{` + base + `,"clusterNetwork":"/d","capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":80}]}}`,
		`{`, `[]`, `null`, `{"type":7}`,
		`{` + base + `,"clusterNetwork":"/x","delegates":[{"type":"bridge"}]}`,
		`{` + base + `,"clusterNetwork":"/x","kubeconfig":"/k","defaultNetworks":["ok","a/b/c"]}`,
		`{` + base + `,"clusterNetwork":"/x","globalNamespaces":"default,Bad NS"}`,
		`{` + base + `,"clusterNetwork":"/x","readinessTimeoutSeconds":"5s"}`,
		`{` + base + `,"clusterNetwork":"/x","multusNamespace":"a","clusterNetworkNamespace":"b"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			requireFieldError(t, "Parse", string(data), err)
			return
		}
		checkConf(t, string(data), c)
		// What was accepted, written back as JSON, must parse to the same configuration.
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal(Parse(%q)): %v", data, err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(Parse(%q))) = %v; marshalled %s", data, err, b)
		}
		// Warnings go with what they warn about: delegates next to clusterNetwork are not written back.
		ignore := cmpopts.IgnoreFields(Conf{}, "RawGlobalNamespaces", "RawSystemNamespaces", "Delegates", "Warnings")
		if diff := cmp.Diff(c, again, ignore, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip of %q changed the conf (-first +second):\n%s", data, diff)
		}
	})
}

// checkConf asserts what an accepted conf promises to its users.
func checkConf(t *testing.T, in string, c *Conf) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("Parse(%q) accepted a conf that "+format, append([]any{in}, args...)...)
	}
	if c.Type != PluginType || c.Name == "" || c.CNIVersion == "" {
		fail("lacks type, name or cniVersion: %+v", c)
	}
	if (c.ClusterNetwork == "") == (len(c.Delegates) == 0) {
		fail("has both or neither of clusterNetwork and delegates")
	}
	if len(c.Delegates) > 0 && len(c.FirstDelegate()) == 0 {
		fail("has an empty first delegate")
	}
	if (c.ClusterNAD != nil) != (c.ClusterNetwork != "" && !filepath.IsAbs(c.ClusterNetwork)) {
		fail("has clusterNetwork %q but ClusterNAD %+v", c.ClusterNetwork, c.ClusterNAD)
	}
	refs := append([]NetRef(nil), c.DefaultNADs...)
	if c.ClusterNAD != nil {
		refs = append(refs, *c.ClusterNAD)
	}
	if len(c.DefaultNADs) != len(c.DefaultNetworks) {
		fail("has %d defaultNetworks but %d parsed", len(c.DefaultNetworks), len(c.DefaultNADs))
	}
	for _, r := range refs {
		if selection.ValidLabel(r.Namespace) != "" || selection.ValidLabel(r.Name) != "" {
			fail("names the network-attachment-definition %q", r)
		}
	}
	if len(refs) > 0 && c.Kubeconfig == "" {
		fail("names network-attachment-definitions but no kubeconfig")
	}
	for _, p := range []string{c.ConfDir, c.CNIDir, c.BinDir, c.PodResourcesSocket, c.DeviceInfoDir} {
		if !filepath.IsAbs(p) {
			fail("has the relative path %q", p)
		}
	}
	for _, p := range []string{c.Kubeconfig, c.ReadinessIndicatorFile, c.LogFile} {
		if p != "" && !filepath.IsAbs(p) {
			fail("has the relative path %q", p)
		}
	}
	for _, ns := range append(append([]string{c.ClusterNetworkNamespace}, c.GlobalNamespaces...), c.SystemNamespaces...) {
		if selection.ValidLabel(ns) != "" {
			fail("has the namespace %q", ns)
		}
	}
	if !logLevels[c.LogLevel] || c.LogLevel == "" || c.LogLevel != strings.ToLower(c.LogLevel) {
		fail("has log level %q", c.LogLevel)
	}
	for _, d := range []int64{int64(c.PodLookupTimeout.Seconds()), int64(c.ReadinessTimeout.Seconds())} {
		if d < 0 || d > 600 {
			fail("has a timeout of %ds", d)
		}
	}
}

// FuzzParseK8sArgs feeds arbitrary CNI_ARGS to ParseK8sArgs: rejections name CNI_ARGS, and what it accepts is
// exactly what the string says.
func FuzzParseK8sArgs(f *testing.F) {
	for _, s := range []string{
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;OTHER=x",
		"", ";;", "K8S_POD_NAME=p", "K8S_POD_NAMESPACE=ns;garbage", "A=1;B=x=y", "K8S_POD_NAMESPACE=;K8S_POD_NAME=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		a, err := ParseK8sArgs(args)
		if err != nil {
			requireFieldError(t, "ParseK8sArgs", args, err)
			if fe := (*FieldError)(nil); errors.As(err, &fe) && fe.Field != "CNI_ARGS" {
				t.Fatalf("ParseK8sArgs(%q) error names %q, want CNI_ARGS", args, fe.Field)
			}
			return
		}
		if (a.PodNamespace == "") != (a.PodName == "") {
			t.Fatalf("ParseK8sArgs(%q) = %+v: namespace without name or the reverse", args, a)
		}
		pairs := map[string]string{}
		for _, kv := range PluginArgs(args) {
			pairs[kv[0]] = kv[1] // the last one wins, as in ParseK8sArgs
		}
		got := map[string]string{"K8S_POD_NAMESPACE": a.PodNamespace, "K8S_POD_NAME": a.PodName,
			"K8S_POD_UID": a.PodUID, "K8S_POD_INFRA_CONTAINER_ID": a.InfraID}
		for k, v := range got {
			if pairs[k] != v {
				t.Fatalf("ParseK8sArgs(%q) gives %s=%q, the string says %q", args, k, v, pairs[k])
			}
		}
	})
}

// requireFieldError fails unless err is a *FieldError that wraps ErrInvalid and has a field and a reason.
func requireFieldError(t *testing.T, fn, in string, err error) {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) || fe.Field == "" || fe.Reason == "" {
		t.Fatalf("%s(%q) error %v does not name a field", fn, in, err)
	}
}
