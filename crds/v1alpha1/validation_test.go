package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	var err error
	env, err = testenv.New()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// createYAML creates an object from the YAML a user would `kubectl apply`, with kubectl's strict field
// validation, so unknown fields are refused as they are for users.
func createYAML(t *testing.T, doc string) error {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("bad test YAML: %v", err)
	}
	u.SetGenerateName("t-")
	err := env.Client.Create(t.Context(), u, client.FieldValidation(metav1.FieldValidationStrict))
	if err == nil {
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), u) })
	}
	return err
}

func pool(spec string) string {
	return "apiVersion: braid.dev/v1alpha1\nkind: IPPool\nmetadata: {}\nspec:\n" + spec
}

func TestIPPoolAccepted(t *testing.T) {
	cases := map[string]string{
		"v4 minimal": `  cidr: 192.0.2.0/24`,
		"v4 full": `
  cidr: 192.0.2.0/24
  ranges: [{start: 192.0.2.10, end: 192.0.2.127}, {start: 192.0.2.128, end: 192.0.2.200}, {start: 192.0.2.250, end: 192.0.2.250}]
  excludes: [192.0.2.20, 192.0.2.32/28]
  gateway: 192.0.2.1
  routes: [{dst: 0.0.0.0/0}, {dst: 203.0.113.0/24, gw: 192.0.2.254}]
  dns: {nameservers: [192.0.2.53], domain: mgmt.example, search: [example], options: ["ndots:2"]}
  vlan: 100
  nodeSelector: {matchLabels: {rack: r1}}
  namespaceSelector: {matchLabels: {team: net}}
  releasePolicy: KeepForStatefulSet
  reuseCooldown: 2m`,
		"v6 minimal": `  cidr: 2001:db8:1::/64`,
		"v6 full": `
  cidr: 2001:db8:1::/64
  ranges: [{start: "2001:db8:1::ff", end: "2001:db8:1::1:0"}, {start: "2001:db8:1::a:0", end: "2001:db8:1::ffff:ffff"}]
  excludes: ["2001:db8:1::1", "2001:db8:1::100/120"]
  gateway: "2001:db8:1::1"
  routes: [{dst: "::/0"}, {dst: "2001:db8:2::/64", gw: "2001:db8:1::fe"}]
  releasePolicy: Never`,
		"v4 /31 point-to-point": `  cidr: 198.51.100.0/31`,
		"v6 /128":               `  cidr: 2001:db8:1::7/128`,
	}
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			if err := createYAML(t, pool(spec)); err != nil {
				t.Fatalf("valid pool refused: %v", err)
			}
		})
	}
}

func TestIPPoolDefaults(t *testing.T) {
	p := &braidv1.IPPool{Spec: braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}}
	p.GenerateName = "defaults-"
	if err := env.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p) })
	if p.Spec.ReleasePolicy != braidv1.ReleaseOnPodDeletion {
		t.Errorf("releasePolicy default = %q, want %q", p.Spec.ReleasePolicy, braidv1.ReleaseOnPodDeletion)
	}
	if p.Spec.ReuseCooldown == nil || p.Spec.ReuseCooldown.Seconds() != 60 {
		t.Errorf("reuseCooldown default = %v, want 60s", p.Spec.ReuseCooldown)
	}
}

func TestIPPoolRejected(t *testing.T) {
	cases := []struct {
		name  string
		spec  string
		field string // the field the error must name
		words string // what the error must say
	}{
		{"bad cidr", `  cidr: 192.0.2.0/33`, "spec.cidr", "must be exactly one CIDR"},
		{"not a cidr at all", `  cidr: mgmt-net`, "spec.cidr", "must be exactly one CIDR"},
		{"two cidrs in one", `  cidr: 192.0.2.0/24,198.51.100.0/24`, "spec.cidr", "must be exactly one CIDR"},
		{"two cidrs as a list field", "  cidr: 192.0.2.0/24\n  cidrs: [198.51.100.0/24]", "spec.cidrs", "unknown field"},
		{"host bits set", `  cidr: 192.0.2.7/24`, "spec.cidr", "no host bits set"},
		{"missing cidr", `  gateway: 192.0.2.1`, "spec.cidr", "Required"},
		{"range outside cidr", "  cidr: 192.0.2.0/24\n  ranges: [{start: 192.0.2.10, end: 198.51.100.20}]", "spec.ranges", "must lie inside cidr"},
		{"inverted range v4", "  cidr: 192.0.2.0/24\n  ranges: [{start: 192.0.2.10, end: 192.0.2.9}]", "spec.ranges[0]", "inverted range"},
		{"inverted range across octets", "  cidr: 192.0.2.0/24\n  ranges: [{start: 192.0.2.128, end: 192.0.2.127}]", "spec.ranges[0]", "inverted range"},
		// An inverted IPv6 range is reported by braid-ipam-server, not the schema (see IPRange).
		{"range of mixed families", "  cidr: 192.0.2.0/24\n  ranges: [{start: 192.0.2.10, end: \"2001:db8::1\"}]", "spec.ranges[0]", "same IP family"},
		{"range of the other family", "  cidr: 192.0.2.0/24\n  ranges: [{start: \"2001:db8::1\", end: \"2001:db8::9\"}]", "spec.ranges", "same IP family as cidr"},
		{"range start not an IP", "  cidr: 192.0.2.0/24\n  ranges: [{start: first, end: 192.0.2.9}]", "spec.ranges[0].start", "must be an IP address"},
		{"gateway of the wrong family", "  cidr: 192.0.2.0/24\n  gateway: \"2001:db8::1\"", "spec.gateway", "same IP family as cidr"},
		{"gateway outside", "  cidr: 192.0.2.0/24\n  gateway: 198.51.100.1", "spec.gateway", "must lie inside cidr"},
		{"gateway not an IP", "  cidr: 192.0.2.0/24\n  gateway: router", "spec.gateway", "must be an IP address"},
		{"exclude outside", "  cidr: 192.0.2.0/24\n  excludes: [203.0.113.5]", "spec.excludes", "must lie inside cidr"},
		{"exclude cidr wider than pool", "  cidr: 192.0.2.0/25\n  excludes: [192.0.2.0/24]", "spec.excludes", "must lie inside cidr"},
		{"exclude of the wrong family", "  cidr: 192.0.2.0/24\n  excludes: [\"2001:db8::1\"]", "spec.excludes", "same IP family as cidr"},
		{"exclude not an address", "  cidr: 192.0.2.0/24\n  excludes: [switch]", "spec.excludes[0]", "IP address or a CIDR"},
		{"route dst not a cidr", "  cidr: 192.0.2.0/24\n  routes: [{dst: default}]", "spec.routes[0].dst", "must be a CIDR"},
		{"route gw of the wrong family", "  cidr: 192.0.2.0/24\n  routes: [{dst: 0.0.0.0/0, gw: \"2001:db8::1\"}]", "spec.routes", "gw must be of the same IP family"},
		{"dns nameserver not an IP", "  cidr: 192.0.2.0/24\n  dns: {nameservers: [dns.example]}", "spec.dns.nameservers[0]", "must be an IP address"},
		{"vlan out of range", "  cidr: 192.0.2.0/24\n  vlan: 5000", "spec.vlan", "less than or equal to 4094"},
		{"unknown release policy", "  cidr: 192.0.2.0/24\n  releasePolicy: Sometimes", "spec.releasePolicy", "supported values"},
		{"cooldown not a duration", "  cidr: 192.0.2.0/24\n  reuseCooldown: soon", "spec.reuseCooldown", "duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := createYAML(t, pool(tc.spec))
			if err == nil {
				t.Fatalf("invalid pool accepted; want an error naming %s", tc.field)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Fatalf("want Invalid or BadRequest, got %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.field) || !strings.Contains(msg, tc.words) {
				t.Fatalf("error does not name %q with %q:\n%s", tc.field, tc.words, msg)
			}
		})
	}
}

func TestFloatingIPValidation(t *testing.T) {
	fip := func(spec string) string {
		return "apiVersion: braid.dev/v1alpha1\nkind: FloatingIP\nmetadata: {}\nspec:\n" + spec
	}
	if err := createYAML(t, fip("  ip: 192.0.2.10\n  pool: mgmt\n  pod: default/web-0\n  interface: net1\n  node: n1")); err != nil {
		t.Fatalf("valid FloatingIP refused: %v", err)
	}
	if err := createYAML(t, fip("  ip: \"2001:db8:1::10\"\n  pool: mgmt-v6")); err != nil {
		t.Fatalf("valid reservation refused: %v", err)
	}
	bad := []struct{ spec, field, words string }{
		{"  ip: 192.0.2.300\n  pool: mgmt", "spec.ip", "must be an IP address"},
		{"  ip: 192.0.2.10", "spec.pool", "Required"},
		{"  ip: 192.0.2.10\n  pool: mgmt\n  pod: web-0", "spec.pod", "should match"},
		{"  ip: 192.0.2.10\n  pool: mgmt\n  phase: Bound", "spec.phase", "unknown field"},
	}
	for _, tc := range bad {
		err := createYAML(t, fip(tc.spec))
		if err == nil || !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), tc.words) {
			t.Errorf("spec %q: want an error naming %s with %q, got %v", tc.spec, tc.field, tc.words, err)
		}
	}
}

func TestFloatingIPAddressIsImmutable(t *testing.T) {
	f := &braidv1.FloatingIP{Spec: braidv1.FloatingIPSpec{IP: "192.0.2.10", Pool: "mgmt"}}
	f.GenerateName = "immutable-"
	if err := env.Client.Create(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), f) })
	f.Spec.IP = "192.0.2.11"
	err := env.Client.Update(t.Context(), f)
	if err == nil || !strings.Contains(err.Error(), "ip is immutable") {
		t.Fatalf("changing spec.ip: want 'ip is immutable', got %v", err)
	}
}

// TestPrinterColumns asks the API server for the table kubectl prints, so the columns are the ones users see.
func TestPrinterColumns(t *testing.T) {
	p := &braidv1.IPPool{Spec: braidv1.IPPoolSpec{CIDR: "192.0.2.0/24"}}
	p.Name = "columns"
	if err := env.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p) })
	p.Status = braidv1.IPPoolStatus{Total: "254", Used: 3, Free: "251"}
	if err := env.Client.Status().Update(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	f := &braidv1.FloatingIP{Spec: braidv1.FloatingIPSpec{IP: "192.0.2.10", Pool: "columns", Pod: "default/web-0", Interface: "net1", Node: "n1"}}
	f.Name = "columns-192-0-2-10"
	if err := env.Client.Create(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), f) })
	f.Status.Phase = braidv1.FloatingIPReleased // a released address shows, cooling down, with its last pod
	if err := env.Client.Status().Update(t.Context(), f); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		resource string
		columns  []string
		row      []any
	}{
		{"ippools/columns", []string{"Name", "CIDR", "USED", "FREE", "AGE"}, []any{"columns", "192.0.2.0/24", float64(3), "251"}},
		{"floatingips/columns-192-0-2-10", []string{"Name", "IP", "POOL", "POD", "INTERFACE", "NODE", "PHASE", "AGE"},
			[]any{"columns-192-0-2-10", "192.0.2.10", "columns", "default/web-0", "net1", "n1", "Released"}},
	} {
		table := serverTable(t, tc.resource)
		var names []string
		for _, c := range table.ColumnDefinitions {
			names = append(names, c.Name)
		}
		if diff := cmp.Diff(tc.columns, names); diff != "" {
			t.Errorf("%s columns (-want +got):\n%s", tc.resource, diff)
		}
		if len(table.Rows) != 1 {
			t.Fatalf("%s: want one row, got %d", tc.resource, len(table.Rows))
		}
		cells := table.Rows[0].Cells[:len(tc.row)]
		if diff := cmp.Diff(tc.row, cells); diff != "" {
			t.Errorf("%s row (-want +got):\n%s", tc.resource, diff)
		}
	}
}

func serverTable(t *testing.T, resource string) *metav1.Table {
	t.Helper()
	rc, err := restClient()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rc.Get().AbsPath("/apis/braid.dev/v1alpha1/"+resource).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("get %s as table: %v", resource, err)
	}
	table := &metav1.Table{}
	if err := yaml.Unmarshal(raw, table); err != nil {
		t.Fatal(err)
	}
	return table
}

func restClient() (*rest.RESTClient, error) {
	cfg := rest.CopyConfig(env.Config)
	cfg.GroupVersion = &braidv1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(env.Scheme).WithoutConversion()
	return rest.RESTClientFor(cfg)
}

// TestIPPoolNameLength: a FloatingIP is named after its pool and address, so the pool's name leaves room for
// the longest address (the expanded IPv6 form) within the 253 characters of an object name.
func TestIPPoolNameLength(t *testing.T) {
	named := func(n int, cidr string) string {
		return fmt.Sprintf("apiVersion: braid.dev/v1alpha1\nkind: IPPool\nmetadata: {name: %s}\nspec: {cidr: %q}\n",
			strings.Repeat("p", n), cidr)
	}
	for _, tc := range []struct {
		n    int
		cidr string
		ok   bool
	}{{213, "2001:db8::/64", true}, {214, "2001:db8::/64", false}, {237, "192.0.2.0/24", true}, {238, "192.0.2.0/24", false}} {
		err := createYAML(t, named(tc.n, tc.cidr))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%d-character name for %s refused: %v", tc.n, tc.cidr, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "metadata.name: at most 213 characters")):
			t.Errorf("%d-character name for %s: want a refusal naming metadata.name, got %v", tc.n, tc.cidr, err)
		}
	}
}
