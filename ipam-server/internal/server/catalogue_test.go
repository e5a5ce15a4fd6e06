package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/braid-cni/braid/crds/catalogue"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// serverCase is one input braid-ipam-server refuses: a pod's networks annotation (with NADs it names), or an
// IPPool spec in YAML.
type serverCase struct {
	networks string            // the pod's k8s.v1.cni.cncf.io/networks
	nads     map[string]string // NADs to create: name -> spec.config
	node     string            // the pod's node; node-1 when empty
	pool     string            // an IPPool spec, as a user writes it
}

func (c serverCase) input() string {
	parts := []string{c.networks, c.pool}
	for _, cfg := range c.nads {
		parts = append(parts, cfg)
	}
	return strings.Join(parts, "\n")
}

func braidIPAMNAD(pools string) string {
	return `{"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0", "ipam": {"type": "braid-ipam", "pools": ` + pools + `}}`
}

// TestCatalogue proves the ANN-EV, NAD-EV and POOL-ST rows of testdata/bad-input.md: braid-ipam-server runs
// in-process against the real API server, and each bad input must end in the documented Event on the pod or
// the documented condition on the IPPool.
func TestCatalogue(t *testing.T) {
	ns := env.Namespace(t)
	// Shared world: a pool with a gateway and an admin reservation, an invalid pool, a pool for rack r9 only
	// and a node in rack r1; NAD "s" serves from the first.
	mkPool(t, "cat-static", "192.0.2.0/24", func(p *braidv1.IPPool) { p.Spec.Gateway = "192.0.2.1" })
	mkPool(t, "cat-overlap", "198.51.100.0/24", func(p *braidv1.IPPool) {
		p.Spec.Ranges = []braidv1.IPRange{{Start: "198.51.100.10", End: "198.51.100.100"}, {Start: "198.51.100.50", End: "198.51.100.150"}}
	})
	mkPool(t, "cat-rack9", "203.0.113.0/24", func(p *braidv1.IPPool) {
		p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "r9"}}
	})
	create(t, &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "cat-static-192-0-2-42"},
		Spec: braidv1.FloatingIPSpec{IP: "192.0.2.42", Pool: "cat-static"}})
	create(t, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cat-node", Labels: map[string]string{"rack": "r1"}}})
	mkNAD(t, ns, "s", "cat-static")
	startServer(t, "")

	cases := map[string]serverCase{
		"ANN-EV-01":  {networks: `[{"name": "s", "ips": ["not-an-ip"]}]`},
		"ANN-EV-02":  {networks: `s@eth0`},
		"ANN-EV-03":  {networks: `[{"name": "s", "ips": ["198.51.100.7/24"]}]`},
		"ANN-EV-04":  {networks: `[{"name": "s", "ips": ["192.0.2.1/24"]}]`},
		"ANN-EV-05":  {networks: `[{"name": "s", "ips": ["192.0.2.42/24"]}]`},
		"ANN-EV-06":  {networks: `[{"name": "s", "ips": ["192.0.2.50/25"]}]`},
		"ANN-EV-07":  {networks: strings.TrimSuffix(strings.Repeat("s,", 129), ",")},
		"NAD-EV-01":  {networks: "nopools", nads: map[string]string{"nopools": `{"cniVersion": "1.0.0", "type": "macvlan", "ipam": {"type": "braid-ipam"}}`}},
		"NAD-EV-02":  {networks: "strpools", nads: map[string]string{"strpools": braidIPAMNAD(`"cat-static"`)}},
		"NAD-EV-03":  {networks: "broken", nads: map[string]string{"broken": `{"cniVersion": "1.0.0", "type": "macvlan", "ipam": {"type": "braid-ipam"`}},
		"NAD-EV-04":  {networks: "ghost", nads: map[string]string{"ghost": braidIPAMNAD(`["no-such-pool"]`)}},
		"NAD-EV-05":  {networks: "invalid", nads: map[string]string{"invalid": braidIPAMNAD(`["cat-overlap"]`)}},
		"NAD-EV-06":  {networks: "rack9", nads: map[string]string{"rack9": braidIPAMNAD(`["cat-rack9"]`)}, node: "cat-node"},
		"NAD-EV-07":  {networks: "half", nads: map[string]string{"half": braidIPAMNAD(`["cat-static", "no-such-v6"]`)}},
		"NAD-EV-08":  {networks: "rangeipam", nads: map[string]string{"rangeipam": `{"cniVersion": "1.0.0", "type": "macvlan", "ipam": {"type": "braid-ipam", "pools": ["cat-static"], "range": "192.0.2.0/24"}}`}},
		"POOL-ST-01": {pool: "cidr: 2001:db8:1::/64\nranges: [{start: \"2001:db8:1::9\", end: \"2001:db8:1::1\"}]"},
		"POOL-ST-02": {pool: "cidr: 192.0.2.0/24\nranges: [{start: 192.0.2.10, end: 192.0.2.100}, {start: 192.0.2.50, end: 192.0.2.150}]"},
		"POOL-ST-03": {pool: "cidr: 192.0.2.0/24\nreuseCooldown: -5s"},
	}
	catalogue.Run(t, cases, func(t *testing.T, row catalogue.Row, c serverCase) {
		row.ExpectInput(t, c.input())
		name := strings.ToLower(row.ID)
		if c.pool != "" {
			expectCondition(t, row, mkPoolYAML(t, name, c.pool))
			return
		}
		for nad, cfg := range c.nads {
			create(t, &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: nad},
				Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: cfg}})
		}
		node := c.node
		if node == "" {
			node = "node-1"
		}
		// Deleted after the row, so that no later test's server serves it (one with default networks would).
		t.Cleanup(func() { deletePod(t, podObj(ns, name, "", "")) })
		mkPod(t, ns, name, node, c.networks)
		expectEvent(t, row, ns, name)
	}, "ANN-EV", "NAD-EV", "POOL-ST")
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
}

// mkPoolYAML creates an IPPool from the spec a user writes, as kubectl would, and returns its name.
func mkPoolYAML(t *testing.T, name, spec string) string {
	t.Helper()
	p := &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := yaml.UnmarshalStrict([]byte(spec), &p.Spec); err != nil {
		t.Fatalf("bad test YAML: %v", err)
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), p)
		dropFinalizer(name)
	})
	return name
}

// poll waits up to 20s for cond, which also returns what it saw for the failure message.
func poll(t *testing.T, cond func() (bool, string)) (bool, string) {
	t.Helper()
	var seen string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		ok, s := cond()
		seen = s
		return ok, nil
	})
	return err == nil, seen
}

// expectEvent waits for an Event of the row's reason on the pod carrying the row's message.
func expectEvent(t *testing.T, row catalogue.Row, ns, pod string) {
	t.Helper()
	ok, seen := poll(t, func() (bool, string) {
		evs := podEvents(t, ns, pod)
		for _, e := range evs {
			if reason, msg, _ := strings.Cut(e, ": "); reason == row.Reason() && row.Found(msg, "<ns>", ns) {
				return true, ""
			}
		}
		return false, strings.Join(evs, "\n\t")
	})
	if !ok {
		t.Errorf("no Event %s on pod %s/%s with the documented message %q; events:\n\t%s", row.Reason(), ns, pod, row.Messages(), seen)
	}
}

// expectCondition waits for the row's condition (e.g. Ready=False) with the row's reason and message.
func expectCondition(t *testing.T, row catalogue.Row, pool string) {
	t.Helper()
	typ, status, _ := strings.Cut(row.Condition(), "=")
	ok, seen := poll(t, func() (bool, string) {
		c := meta.FindStatusCondition(poolStatus(t, pool).Conditions, typ)
		if c == nil {
			return false, "no " + typ + " condition"
		}
		return string(c.Status) == status && c.Reason == row.Reason() && row.Found(c.Message), fmt.Sprintf("%s=%s reason %s: %s", c.Type, c.Status, c.Reason, c.Message)
	})
	if !ok {
		t.Errorf("IPPool %s: want condition %s reason %s with the documented message %q; has %s", pool, row.Condition(), row.Reason(), row.Messages(), seen)
	}
}
