package plugin

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/catalogue"
	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/meta-plugin/internal/device"
)

// addCase is one pod ADD with one bad input: the pod's annotations, NADs (on top of the rig's standard ones),
// or keys of braid's conf.
type addCase struct {
	networks       string            // the pod's k8s.v1.cni.cncf.io/networks
	defaultNetwork string            // the pod's v1.multus-cni.io/default-network
	nads           map[string]string // NAD name -> spec.config ("" for none)
	resource       string            // k8s.v1.cni.cncf.io/resourceName of those NADs; the kubelet gives the pod none
	conf           map[string]any    // keys of braid's conf over the rig's (nil deletes one)
}

// input is everything the case feeds braid, for the check that the catalogue shows the real input.
func (c addCase) input() string {
	parts := []string{c.networks, selection.DefaultNetworkAnnotation + ": " + c.defaultNetwork,
		device.ResourceAnnotation + ": " + c.resource}
	for _, cfg := range c.nads {
		parts = append(parts, cfg)
	}
	if c.conf != nil {
		b, _ := json.Marshal(c.conf)
		parts = append(parts, string(b))
	}
	return strings.Join(parts, "\n")
}

const macvlanNAD = `{"cniVersion": "1.0.0", "type": "macvlan", "master": "mvpar0"}`

// TestCatalogue proves the ANN, NAD and CONF rows of testdata/bad-input.md: braid's real CNI ADD runs as the
// runtime runs it (skel args, stdin conf, CNI_ARGS of a pod in the real API server, delegates found in the
// real plugin directory), and must fail with the documented CNI code and message, record the documented Event
// on the pod (and none when the row names none), and leave nothing behind.
func TestCatalogue(t *testing.T) {
	cases := map[string]addCase{
		"ANN-01":  {networks: `[{"name": "net-a", "interface": "eth0"}]`},
		"ANN-02":  {networks: `net-a@abcdefghijklmnop`},
		"ANN-03":  {networks: `Net-A`},
		"ANN-04":  {networks: `team/net-a/v2`},
		"ANN-05":  {networks: `net-a,,net-b`},
		"ANN-06":  {networks: `net-a@data0,net-b@data0`},
		"ANN-07":  {networks: `{"name": "net-a"}`},
		"ANN-08":  {networks: `[{"name": "net-a"`},
		"ANN-09":  {networks: `[{"namespace": "team"}]`},
		"ANN-10":  {networks: `[{"name": "net-b", "ips": ["198.51.100.300/24"]}]`},
		"ANN-11":  {networks: `[{"name": "net-b", "mac": "02:23:45:67:89"}]`},
		"ANN-12":  {networks: `[{"name": "net-a", "default-route": ["198.51.100.1"]}, {"name": "disk-net", "default-route": []}]`},
		"ANN-13":  {networks: `[{"name": "net-a", "ifname": "data0"}]`},
		"ANN-14":  {networks: `[{"name": "net-a", "portMappings": [{"hostPort": 0, "containerPort": 80}]}]`},
		"ANN-15":  {networks: `[{"name": "net-a", "bandwidth": {"egressBurst": 1000}}]`},
		"ANN-16":  {defaultNetwork: `net-a,net-b`},
		"ANN-17":  {networks: `[{"name": "net-a", "mac": "02:00:00:00:00:99"}]`},
		"ANN-18":  {networks: `no-such-net`},
		"ANN-19":  {networks: `kube-system/net-a`, conf: map[string]any{"namespaceIsolation": true}},
		"ANN-20":  {networks: `net-a@lo`},
		"ANN-21":  {networks: strings.TrimSuffix(strings.Repeat("net-a,", 129), ",")},
		"NAD-01":  {networks: `bad`, nads: map[string]string{"bad": `{"cniVersion": "1.0.0", "type": macvlan}`}},
		"NAD-02":  {networks: `bad`, nads: map[string]string{"bad": `{"type": "macvlan", "master": "mvpar0"}`}},
		"NAD-03":  {networks: `bad`, nads: map[string]string{"bad": `{"cniVersion": "1.0.0", "master": "mvpar0"}`}},
		"NAD-04":  {networks: `bad`, nads: map[string]string{"bad": `{"cniVersion": "1.0.0", "plugins": []}`}},
		"NAD-05":  {networks: `bad`, nads: map[string]string{"bad": `{"cniVersion": "1.0.0", "plugins": [{"master": "mvpar0"}]}`}},
		"NAD-06":  {networks: `loop`, nads: map[string]string{"loop": `{"cniVersion": "1.0.0", "type": "braid"}`}},
		"NAD-07":  {networks: `nowhere`, nads: map[string]string{"nowhere": ""}},
		"NAD-08":  {networks: `vf-net`, nads: map[string]string{"vf-net": macvlanNAD}, resource: "example.com/sriov_a"},
		"CONF-01": {conf: map[string]any{"clusterNetwork": nil}},
		"CONF-02": {conf: map[string]any{"clusterNetwork": nil, "delegates": []any{map[string]any{"cniVersion": "1.0.0", "name": "x", "type": "braid-shim"}}}},
		"CONF-03": {conf: map[string]any{"clusterNetwork": "calico", "kubeconfig": nil}},
		"CONF-04": {conf: map[string]any{"clusterNetwork": "Calico_Net"}},
		"CONF-05": {conf: map[string]any{"clusterNetwork": "/etc/cni/net.d/missing/10-calico.conflist"}},
		"CONF-06": {conf: map[string]any{"kubeconfig": "braid.kubeconfig"}},
		"CONF-07": {conf: map[string]any{"defaultNetworks": []string{"infra/mgmt/v2"}}},
		"CONF-08": {conf: map[string]any{"logLevel": "loud"}},
		"CONF-09": {conf: map[string]any{"podLookupTimeoutSeconds": -1}},
		"CONF-10": {conf: map[string]any{"namespaceIsolation": "yes"}},
		"CONF-11": {conf: map[string]any{"globalNamespaces": "default,Bad NS"}},
		"CONF-12": {conf: map[string]any{"multusNamespace": "kube-system", "clusterNetworkNamespace": "braid-system"}},
		"CONF-13": {conf: map[string]any{"daemonSocket": "run/braid.sock"}},
		"CONF-14": {conf: map[string]any{"auxiliaryCNIChainName": "vendor-cni-chain"}},
	}
	catalogue.Run(t, cases, func(t *testing.T, row catalogue.Row, c addCase) {
		row.ExpectInput(t, c.input())
		r := newRig(t, "1.0.0")
		r.standardNADs()
		for name, cfg := range c.nads {
			var ann map[string]string
			if c.resource != "" {
				ann = map[string]string{device.ResourceAnnotation: c.resource}
			}
			r.nad(name, cfg, ann)
		}
		conf := map[string]any{}
		if c.resource != "" {
			conf["podResourcesSocket"] = r.serveKubelet("p", nil)
		}
		for k, v := range c.conf {
			conf[k] = v
		}
		r.setConf(conf)
		ann := map[string]string{}
		if c.networks != "" {
			ann[selection.NetworksAnnotation] = c.networks
		}
		if c.defaultNetwork != "" {
			ann[selection.DefaultNetworkAnnotation] = c.defaultNetwork
		}
		p := r.pod("p", ann)

		_, err := r.add(p)
		var cniErr *types.Error
		if !errors.As(err, &cniErr) {
			t.Fatalf("ADD = %v, want a CNI error with code %d", err, row.Code())
		}
		if int(cniErr.Code) != row.Code() {
			t.Errorf("CNI error code %d, the catalogue says %d: %s", cniErr.Code, row.Code(), cniErr.Msg)
		}
		placeholders := []string{"<ns>", r.ns, "<confDir>", filepath.Join(r.dir, "net.d")}
		row.Expect(t, cniErr.Msg, placeholders...)
		events := r.addFailedEvents(p)
		switch {
		case row.Reason() == EventReason && len(events) != 1:
			t.Errorf("want one %s Event on the pod, got %q", EventReason, events)
		case row.Reason() == EventReason:
			row.Expect(t, events[0], placeholders...)
		case len(events) > 0:
			t.Errorf("the catalogue names no Event, but braid recorded %s %q", EventReason, events)
		}
		r.assertGone(p)
	}, "ANN", "NAD", "CONF")
}

// addFailedEvents returns the messages of braid's BraidAddFailed Events about the pod.
func (r *rig) addFailedEvents(p *pod) []string {
	r.t.Helper()
	var evs corev1.EventList
	if err := suiteEnv.Client.List(r.t.Context(), &evs, client.InNamespace(r.ns)); err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Name == p.name && ev.Reason == EventReason {
			out = append(out, ev.Message)
		}
	}
	return out
}
