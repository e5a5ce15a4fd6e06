package security_test

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// write is one way of writing an object of braid's IPAM state; obj is a copy of the stored object.
type write struct {
	name string
	do   func(ctx context.Context, c client.Client, obj client.Object) error
}

var (
	mergePatch = client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"example.com/touched":"yes"}}}`))
	statusSet  = client.RawPatch(types.MergePatchType, []byte(`{"status":{}}`))
)

// writes are every verb that changes an object, on the object and on its status.
func writes(fresh func() client.Object) []write {
	return []write{
		{"create", func(ctx context.Context, c client.Client, _ client.Object) error { return c.Create(ctx, fresh()) }},
		{"update", func(ctx context.Context, c client.Client, o client.Object) error { return c.Update(ctx, o) }},
		{"patch", func(ctx context.Context, c client.Client, o client.Object) error { return c.Patch(ctx, o, mergePatch) }},
		{"delete", func(ctx context.Context, c client.Client, o client.Object) error { return c.Delete(ctx, o) }},
		{"deletecollection", func(ctx context.Context, c client.Client, o client.Object) error { return c.DeleteAllOf(ctx, o) }},
		{"update status", func(ctx context.Context, c client.Client, o client.Object) error { return c.Status().Update(ctx, o) }},
		{"patch status", func(ctx context.Context, c client.Client, o client.Object) error {
			return c.Status().Patch(ctx, o, statusSet)
		}},
	}
}

func pool(name string) *braidv1.IPPool {
	return &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: braidv1.IPPoolSpec{CIDR: "198.51.100.0/24"}}
}

func floatingIP(name, pool, ip string) *braidv1.FloatingIP {
	return &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: braidv1.FloatingIPSpec{IP: ip, Pool: pool}}
}

// unchanged fails the test if obj was changed or deleted since it was read as before.
func unchanged(t *testing.T, before client.Object, empty client.Object) {
	t.Helper()
	if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(before), empty); err != nil {
		t.Errorf("%s after refused writes: %v", before.GetName(), err)
	} else if empty.GetResourceVersion() != before.GetResourceVersion() {
		t.Errorf("%s changed by writes that were refused", before.GetName())
	}
}

// TestNodeCannotWriteIPAMState: with the strongest credential a node has (braid-node, with its node name), no
// verb changes an IPPool or a FloatingIP, nor their status; reading them stays allowed (DESIGN.md invariant 5).
func TestNodeCannotWriteIPAMState(t *testing.T) {
	ctx := t.Context()
	p, f := pool("sec-node-pool"), floatingIP("sec-node-pool-198-51-100-10", "sec-node-pool", "198.51.100.10")
	cleanPool(t, "sec-node-pool")
	for _, o := range []client.Object{p, f} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	node := clientAs(t, nodeSA, "node-a")
	for _, w := range writes(func() client.Object { return pool("sec-node-new") }) {
		wantForbidden(t, "braid-node: "+w.name+" IPPool", w.do(ctx, node, p.DeepCopy()), `"system:serviceaccount:braid-system:braid-node" cannot`)
	}
	for _, w := range writes(func() client.Object {
		return floatingIP("sec-node-pool-198-51-100-11", "sec-node-pool", "198.51.100.11")
	}) {
		wantForbidden(t, "braid-node: "+w.name+" FloatingIP", w.do(ctx, node, f.DeepCopy()), `"system:serviceaccount:braid-system:braid-node" cannot`)
	}
	unchanged(t, p, &braidv1.IPPool{})
	unchanged(t, f, &braidv1.FloatingIP{})
	for name, o := range map[string]client.Object{"sec-node-new": &braidv1.IPPool{}, "sec-node-pool-198-51-100-11": &braidv1.FloatingIP{}} {
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, o); err == nil {
			t.Errorf("braid-node created %s", name)
		}
	}

	if err := node.Get(ctx, client.ObjectKeyFromObject(p), &braidv1.IPPool{}); err != nil {
		t.Errorf("braid-node cannot read an IPPool: %v", err)
	}
	if err := node.List(ctx, &braidv1.FloatingIPList{}); !apierrors.IsForbidden(err) {
		t.Errorf("braid-node listing FloatingIPs: %v, want forbidden (nothing on the node reads them)", err)
	}
}

// TestIPAMServerWritesFloatingIPsNotPools: braid-ipam-server creates, rebinds, releases and deletes
// FloatingIPs and keeps pool status, but an IPPool itself is the operator's: it cannot create, change or
// delete one, beyond adding and removing its own finalizer (patch: RBAC lets it, ValidatingAdmissionPolicy
// braid-ippool-writes limits it to that).
func TestIPAMServerWritesFloatingIPsNotPools(t *testing.T) {
	ctx := t.Context()
	p := pool("sec-srv-pool")
	cleanPool(t, "sec-srv-pool")
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	server := clientAs(t, serverSA, "")
	for _, w := range writes(func() client.Object { return pool("sec-srv-new") }) {
		if w.name == "patch status" { // pool status is a merge patch of its own fields, never an update
			if err := w.do(ctx, server, p.DeepCopy()); err != nil {
				t.Errorf("braid-ipam-server cannot %s of an IPPool: %v", w.name, err)
			}
			continue
		}
		if w.name == "patch" {
			wantForbidden(t, "braid-ipam-server: patch IPPool's labels", w.do(ctx, server, p.DeepCopy()), "braid-ippool-writes")
			continue
		}
		wantForbidden(t, "braid-ipam-server: "+w.name+" IPPool", w.do(ctx, server, p.DeepCopy()),
			`"system:serviceaccount:braid-system:braid-ipam-server" cannot`)
	}
	for _, patch := range []string{`{"spec":{"cidr":"203.0.113.0/24"}}`, `{"metadata":{"finalizers":["example.com/other"]}}`} {
		wantForbidden(t, "braid-ipam-server: patch IPPool "+patch, server.Patch(ctx, p.DeepCopy(),
			client.RawPatch(types.MergePatchType, []byte(patch))), "braid-ippool-writes")
	}
	for _, patch := range []string{`{"metadata":{"finalizers":["braid.dev/floatingips"]}}`, `{"metadata":{"finalizers":null}}`} {
		if err := server.Patch(ctx, p.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Errorf("braid-ipam-server cannot patch IPPool %s: %v", patch, err)
		}
	}
	got := &braidv1.IPPool{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.CIDR != p.Spec.CIDR || got.Labels["example.com/touched"] != "" || len(got.Finalizers) != 0 {
		t.Errorf("IPPool spec or metadata changed by braid-ipam-server: %+v %v", got.Spec, got.Labels)
	}

	f := floatingIP("sec-srv-pool-198-51-100-20", "sec-srv-pool", "198.51.100.20")
	if err := server.Create(ctx, f); err != nil {
		t.Fatalf("braid-ipam-server cannot create a FloatingIP: %v", err)
	}
	f.Spec.Pod, f.Spec.Node = "db/db-0", "node-a"
	if err := server.Update(ctx, f); err != nil {
		t.Errorf("braid-ipam-server cannot rebind a FloatingIP: %v", err)
	}
	f.Status.Phase = braidv1.FloatingIPReleased
	if err := server.Status().Update(ctx, f); err != nil {
		t.Errorf("braid-ipam-server cannot release a FloatingIP: %v", err)
	}
	if err := server.Delete(ctx, f); err != nil {
		t.Errorf("braid-ipam-server cannot delete a FloatingIP: %v", err)
	}
}
