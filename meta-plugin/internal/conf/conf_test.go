package conf

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"
)

const base = `"cniVersion":"1.0.0","name":"braid","type":"braid"`

func TestParseValid(t *testing.T) {
	cases := []struct {
		name  string
		json  string
		check func(t *testing.T, c *Conf)
	}{
		{"file master and defaults", `{` + base + `,"clusterNetwork":"/etc/cni/net.d/10-bridge.conflist"}`, func(t *testing.T, c *Conf) {
			want := Conf{ConfDir: DefaultConfDir, CNIDir: DefaultCNIDir, BinDir: DefaultBinDir, LogLevel: "error",
				PodResourcesSocket: DefaultPodResourcesSocket, DeviceInfoDir: DefaultDeviceInfoDir,
				SystemNamespaces: []string{"kube-system"}, ClusterNetworkNamespace: "kube-system",
				PodLookupTimeout: DefaultPodLookupTimeout, ReadinessTimeout: DefaultReadinessTimeout}
			got := Conf{ConfDir: c.ConfDir, CNIDir: c.CNIDir, BinDir: c.BinDir, LogLevel: c.LogLevel,
				PodResourcesSocket: c.PodResourcesSocket, DeviceInfoDir: c.DeviceInfoDir, SystemNamespaces: c.SystemNamespaces,
				ClusterNetworkNamespace: c.ClusterNetworkNamespace, PodLookupTimeout: c.PodLookupTimeout, ReadinessTimeout: c.ReadinessTimeout}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("defaults (-want +got):\n%s", diff)
			}
			if c.ClusterNAD != nil {
				t.Fatalf("a path was taken for a NAD: %+v", c.ClusterNAD)
			}
		}},
		{"Multus key names", `{` + base + `,"clusterNetwork":"calico","defaultNetworks":["mgmt","infra/ctl"],
			"kubeconfig":"/etc/cni/net.d/braid.d/braid.kubeconfig","confDir":"/etc/cni/multus/net.d","cniDir":"/var/lib/cni/multus",
			"binDir":"/opt/cni/bin","readinessindicatorfile":"/run/flannel/subnet.env","namespaceIsolation":true,
			"globalNamespaces":"default, infra","systemNamespaces":["kube-system","ops"],"multusNamespace":"net-ns",
			"logFile":"/var/log/braid.log","logLevel":"VERBOSE","logToStderr":true,"retryDeleteOnError":true}`, func(t *testing.T, c *Conf) {
			if *c.ClusterNAD != (NetRef{Namespace: "net-ns", Name: "calico"}) {
				t.Errorf("ClusterNAD = %+v", c.ClusterNAD)
			}
			if diff := cmp.Diff([]NetRef{{"net-ns", "mgmt"}, {"infra", "ctl"}}, c.DefaultNADs); diff != "" {
				t.Errorf("DefaultNADs:\n%s", diff)
			}
			if diff := cmp.Diff([]string{"default", "infra"}, c.GlobalNamespaces); diff != "" {
				t.Errorf("GlobalNamespaces:\n%s", diff)
			}
			if c.LogLevel != "verbose" || c.CNIDir != "/var/lib/cni/multus" || !c.NamespaceIsolation || c.ReadinessIndicatorFile != "/run/flannel/subnet.env" {
				t.Errorf("parsed %+v", c)
			}
			if !c.IsSystemNamespace("ops") || c.IsSystemNamespace("default") {
				t.Errorf("systemNamespaces not honoured: %v", c.SystemNamespaces)
			}
			if !c.MayUse("app", "app") || !c.MayUse("app", "infra") || c.MayUse("app", "other") {
				t.Errorf("namespace isolation wrong")
			}
		}},
		{"global namespaces as list", `{` + base + `,"clusterNetwork":"/x.conf","globalNamespaces":["a","b"]}`, func(t *testing.T, c *Conf) {
			if diff := cmp.Diff([]string{"a", "b"}, c.GlobalNamespaces); diff != "" {
				t.Error(diff)
			}
			if !c.MayUse("x", "z") {
				t.Error("isolation applied although namespaceIsolation is false")
			}
		}},
		{"isolation without globalNamespaces", `{` + base + `,"clusterNetwork":"/x.conf","namespaceIsolation":true}`, func(t *testing.T, c *Conf) {
			// As in Multus, NADs of "default" are for every pod unless globalNamespaces says otherwise.
			if diff := cmp.Diff([]string{"default"}, c.GlobalNamespaces); diff != "" {
				t.Errorf("GlobalNamespaces:\n%s", diff)
			}
			if !c.MayUse("app", "default") || !c.MayUse("app", "app") || c.MayUse("app", "other") || c.MayUse("app", "kube-system") {
				t.Error("namespace isolation wrong")
			}
		}},
		{"isolation with globalNamespaces empty", `{` + base + `,"clusterNetwork":"/x.conf","namespaceIsolation":true,"globalNamespaces":[]}`, func(t *testing.T, c *Conf) {
			if len(c.GlobalNamespaces) != 0 || c.MayUse("app", "default") || !c.MayUse("app", "app") {
				t.Errorf("an explicit empty list must leave no global namespace: %v", c.GlobalNamespaces)
			}
		}},
		{"inline delegates", `{` + base + `,"delegates":[{"cniVersion":"1.0.0","name":"cbr0","type":"bridge"}]}`, func(t *testing.T, c *Conf) {
			if !strings.Contains(string(c.FirstDelegate()), `"bridge"`) {
				t.Errorf("FirstDelegate = %s", c.FirstDelegate())
			}
		}},
		{"clusterNetwork wins over delegates", `{` + base + `,"clusterNetwork":"/x","delegates":[{"type":"bridge"},{"name":"x"}]}`, func(t *testing.T, c *Conf) {
			if c.ClusterNetwork != "/x" || len(c.Delegates) != 0 || c.FirstDelegate() != nil || c.ExtraDelegates() != nil {
				t.Errorf("clusterNetwork %q, delegates %s: want clusterNetwork used and delegates ignored, as in Multus", c.ClusterNetwork, c.Delegates)
			}
			if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "delegates: ignored, because clusterNetwork is set") {
				t.Errorf("warnings = %q, want one about delegates", c.Warnings)
			}
		}},
		{"timeouts and GC attachments", `{` + base + `,"clusterNetwork":"/d","podLookupTimeoutSeconds":0,"readinessTimeoutSeconds":5,
			"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`, func(t *testing.T, c *Conf) {
			if c.PodLookupTimeout != 0 || c.ReadinessTimeout != 5*time.Second {
				t.Errorf("timeouts %v %v", c.PodLookupTimeout, c.ReadinessTimeout)
			}
			if diff := cmp.Diff([]types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}, c.ValidAttachments); diff != "" {
				t.Error(diff)
			}
		}},
		{"legacy GC key", `{` + base + `,"clusterNetwork":"/d","cni.dev/attachments":[{"containerID":"c2","ifname":"eth0"}]}`, func(t *testing.T, c *Conf) {
			if len(c.ValidAttachments) != 1 || c.ValidAttachments[0].ContainerID != "c2" {
				t.Errorf("ValidAttachments = %v", c.ValidAttachments)
			}
		}},
		{"Multus log rotation is warned about", `{` + base + `,"clusterNetwork":"/d","logFile":"/var/log/braid.log",
			"logOptions":{"maxAge":5,"maxSize":100,"maxBackups":5,"compress":true},"auxiliaryCNIChainName":""}`, func(t *testing.T, c *Conf) {
			if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "logOptions: ignored") {
				t.Errorf("warnings = %q, want one about logOptions", c.Warnings)
			}
		}},
		{"runtime config kept for the master", `{` + base + `,"clusterNetwork":"/d","capabilities":{"portMappings":true},
			"runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}]}}`, func(t *testing.T, c *Conf) {
			if !c.Capabilities["portMappings"] || c.RuntimeConfig["portMappings"] == nil {
				t.Errorf("capabilities %v runtimeConfig %v", c.Capabilities, c.RuntimeConfig)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.json))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestParseInvalidNamesTheField(t *testing.T) {
	cases := []struct{ name, json, field string }{
		{"not JSON", `{`, "(configuration)"},
		{"wrong type", `{"cniVersion":"1.0.0","name":"n","type":"multus","clusterNetwork":"/x"}`, "type"},
		{"no name", `{"cniVersion":"1.0.0","type":"braid","clusterNetwork":"/x"}`, "name"},
		{"no version", `{"name":"n","type":"braid","clusterNetwork":"/x"}`, "cniVersion"},
		{"no master", `{` + base + `}`, "clusterNetwork"},
		{"delegate without type", `{` + base + `,"delegates":[{"name":"x"}]}`, "delegates[0]"},
		{"delegate is braid-shim", `{` + base + `,"delegates":[{"cniVersion":"1.0.0","name":"x","type":"braid-shim"}]}`, "delegates[0].type"},
		{"delegate list holds braid", `{` + base + `,"delegates":[{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"},{"type":"braid"}]}]}`,
			"delegates[0].plugins[1].type"},
		{"NAD master without kubeconfig", `{` + base + `,"clusterNetwork":"calico"}`, "clusterNetwork"},
		{"bad NAD master name", `{` + base + `,"clusterNetwork":"Calico_Net","kubeconfig":"/k"}`, "clusterNetwork"},
		{"default networks without kubeconfig", `{` + base + `,"clusterNetwork":"/x","defaultNetworks":["a"]}`, "defaultNetworks"},
		{"bad default network", `{` + base + `,"clusterNetwork":"/x","kubeconfig":"/k","defaultNetworks":["ok","a/b/c"]}`, "defaultNetworks[1]"},
		{"relative kubeconfig", `{` + base + `,"clusterNetwork":"/x","kubeconfig":"braid.kubeconfig"}`, "kubeconfig"},
		{"relative cniDir", `{` + base + `,"clusterNetwork":"/x","cniDir":"var/lib"}`, "cniDir"},
		{"relative socket", `{` + base + `,"clusterNetwork":"/x","podResourcesSocket":"kubelet.sock"}`, "podResourcesSocket"},
		{"bad global namespace", `{` + base + `,"clusterNetwork":"/x","globalNamespaces":"default,Bad NS"}`, "globalNamespaces[1]"},
		{"global namespaces wrong type", `{` + base + `,"clusterNetwork":"/x","globalNamespaces":7}`, "globalNamespaces"},
		{"bad system namespace", `{` + base + `,"clusterNetwork":"/x","systemNamespaces":["-x"]}`, "systemNamespaces[0]"},
		{"bad log level", `{` + base + `,"clusterNetwork":"/x","logLevel":"loud"}`, "logLevel"},
		{"isolation not a bool", `{` + base + `,"clusterNetwork":"/x","namespaceIsolation":"yes"}`, "namespaceIsolation"},
		{"negative timeout", `{` + base + `,"clusterNetwork":"/x","podLookupTimeoutSeconds":-1}`, "podLookupTimeoutSeconds"},
		{"timeout not a number", `{` + base + `,"clusterNetwork":"/x","readinessTimeoutSeconds":"5s"}`, "readinessTimeoutSeconds"},
		{"bad multusNamespace", `{` + base + `,"clusterNetwork":"/x","multusNamespace":"Kube_System"}`, "multusNamespace"},
		{"bad clusterNetworkNamespace", `{` + base + `,"clusterNetwork":"/x","clusterNetworkNamespace":"Kube_System"}`, "clusterNetworkNamespace"},
		{"namespace names differ", `{` + base + `,"clusterNetwork":"/x","multusNamespace":"a","clusterNetworkNamespace":"b"}`, "multusNamespace"},
		// Multus runs this chain after every attachment (OpenShift's vendor-cni-chain, istio-cni); braid does not, and
		// ignoring it would leave every pod without what the chain sets up.
		{"Multus auxiliary chain", `{` + base + `,"clusterNetwork":"/x","auxiliaryCNIChainName":"vendor-cni-chain"}`, "auxiliaryCNIChainName"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.json))
			var fe *FieldError
			if !errors.As(err, &fe) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse = %+v, %v; want a *FieldError naming %s", c, err, tc.field)
			}
			if fe.Field != tc.field {
				t.Fatalf("error names %q, want %q: %v", fe.Field, tc.field, err)
			}
		})
	}
}

func TestParseK8sArgs(t *testing.T) {
	a, err := ParseK8sArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;OTHER=x")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(K8sArgs{PodNamespace: "ns", PodName: "p", PodUID: "u-1", InfraID: "abc"}, a); diff != "" {
		t.Fatal(diff)
	}
	if !a.IsPod() {
		t.Fatal("IsPod = false")
	}
	if a, err := ParseK8sArgs(""); err != nil || a.IsPod() {
		t.Fatalf("empty args: %+v %v", a, err)
	}
	for _, bad := range []string{"K8S_POD_NAME=p", "K8S_POD_NAMESPACE=ns;garbage"} {
		var fe *FieldError
		if _, err := ParseK8sArgs(bad); !errors.As(err, &fe) || fe.Field != "CNI_ARGS" {
			t.Errorf("ParseK8sArgs(%q) = %v, want an error naming CNI_ARGS", bad, err)
		}
	}
	if diff := cmp.Diff([][2]string{{"A", "1"}, {"B", "x=y"}}, PluginArgs("A=1;B=x=y")); diff != "" {
		t.Error(diff)
	}
}
