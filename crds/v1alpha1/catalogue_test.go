package v1alpha1_test

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/braid-cni/braid/crds/catalogue"
)

// apiCase is an object a user applies: doc is created; when update is set, the created object's spec fields
// are then changed to its values (kubectl edit, or apply of a changed file).
type apiCase struct {
	doc    string
	update map[string]string
}

func fipDoc(spec string) string {
	return "apiVersion: braid.dev/v1alpha1\nkind: FloatingIP\nmetadata: {}\nspec:\n" + spec
}

// TestCatalogue proves the IPPool and FloatingIP rows of testdata/bad-input.md: each object goes to the real
// kube-apiserver with braid's CRDs and kubectl's strict field validation, and the API error must carry the
// documented reason and message.
func TestCatalogue(t *testing.T) {
	cases := map[string]apiCase{
		"POOL-01": {doc: pool(`  cidr: 192.0.2.0/33`)},
		"POOL-02": {doc: pool(`  cidr: 192.0.2.0/24,198.51.100.0/24`)},
		"POOL-03": {doc: pool(`  cidr: 192.0.2.7/24`)},
		"POOL-04": {doc: pool(`  gateway: 192.0.2.1`)},
		"POOL-05": {doc: pool("  cidr: 192.0.2.0/24\n  cidrs: [198.51.100.0/24]")},
		"POOL-06": {doc: pool("  cidr: 192.0.2.0/24\n  ranges: [{start: 192.0.2.10, end: 192.0.2.9}]")},
		"POOL-07": {doc: pool("  cidr: 192.0.2.0/24\n  ranges: [{start: 192.0.2.10, end: 198.51.100.20}]")},
		"POOL-08": {doc: pool("  cidr: 192.0.2.0/24\n  gateway: 198.51.100.1")},
		"POOL-09": {doc: pool("  cidr: 192.0.2.0/24\n  gateway: \"2001:db8::1\"")},
		"POOL-10": {doc: pool("  cidr: 192.0.2.0/24\n  excludes: [switch]")},
		"POOL-11": {doc: pool("  cidr: 192.0.2.0/24\n  routes: [{dst: default}]")},
		"POOL-12": {doc: pool("  cidr: 192.0.2.0/24\n  dns: {nameservers: [dns.example]}")},
		"POOL-13": {doc: pool("  cidr: 192.0.2.0/24\n  vlan: 5000")},
		"POOL-14": {doc: pool("  cidr: 192.0.2.0/24\n  releasePolicy: Sometimes")},
		"POOL-15": {doc: pool("  cidr: 192.0.2.0/24\n  reuseCooldown: soon")},
		"FIP-01":  {doc: fipDoc("  ip: 192.0.2.300\n  pool: mgmt")},
		"FIP-02":  {doc: fipDoc("  ip: 192.0.2.10")},
		"FIP-03":  {doc: fipDoc("  ip: 192.0.2.10\n  pool: mgmt\n  pod: web-0")},
		"FIP-04":  {doc: fipDoc("  ip: 192.0.2.10\n  pool: mgmt\n  phase: Bound")},
		"FIP-05":  {doc: fipDoc("  ip: 192.0.2.10\n  pool: mgmt\n  interface: management-network0")},
		"FIP-06":  {doc: fipDoc("  ip: 192.0.2.10\n  pool: mgmt\n  releasePolicy: Sometimes")},
		"FIP-07":  {doc: fipDoc("  ip: 192.0.2.10\n  pool: mgmt"), update: map[string]string{"ip": "192.0.2.11"}},
		"FIP-08":  {doc: fipDoc("  ip: 192.0.2.10\n  pool: mgmt"), update: map[string]string{"pool": "other"}},
	}
	catalogue.Run(t, cases, func(t *testing.T, row catalogue.Row, c apiCase) {
		input := c.doc
		for field, value := range c.update {
			input += "\nchanged to: " + field + ": " + value
		}
		row.ExpectInput(t, input)
		err := apply(t, c)
		if err == nil {
			t.Fatalf("%s: the API server accepted the object; want it refused with %q", row.ID, row.Messages())
		}
		if got := string(apierrors.ReasonForError(err)); got != row.Reason() {
			t.Errorf("API error reason %s, the catalogue says %s: %v", got, row.Reason(), err)
		}
		row.Expect(t, err.Error())
	}, "POOL", "FIP")
}

// apply creates the case's object as createYAML does and, for an update case, changes it.
func apply(t *testing.T, c apiCase) error {
	t.Helper()
	if c.update == nil {
		return createYAML(t, c.doc)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(c.doc), &u.Object); err != nil {
		t.Fatalf("bad test YAML: %v", err)
	}
	u.SetGenerateName("t-")
	if err := env.Client.Create(t.Context(), u); err != nil {
		t.Fatalf("create the object to change: %v", err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), u) })
	for field, value := range c.update {
		if err := unstructured.SetNestedField(u.Object, value, "spec", field); err != nil {
			t.Fatal(err)
		}
	}
	return env.Client.Update(t.Context(), u, client.FieldValidation(metav1.FieldValidationStrict))
}
