package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// A pod deleted and created again under its name after the server read it must not get the addresses meant
// for the first one: the annotation's patch carries the UID the server read.
func TestAssignmentIsNotWrittenOnAPodRecreatedUnderTheSameName(t *testing.T) {
	ctx := context.Background()
	first := mkPod(t, "default", "publish-uid", "node-1", "")
	seen := first.DeepCopy()
	deletePod(t, first)
	second := mkPod(t, "default", "publish-uid", "node-1", "")
	t.Cleanup(func() { deletePod(t, second) })

	a := assignment.Assignments{PodUID: string(seen.UID), Interfaces: map[string]assignment.Interface{
		"net1": {Network: "default/n", Addresses: []assignment.Address{{Pool: "p", FloatingIP: "p-192-0-2-10", CIDR: "192.0.2.10/24"}}}}}
	if err := server.Publish(ctx, k8s, seen, a); err == nil {
		t.Fatal("the assignment of the deleted pod was written on the pod that took its name")
	}
	got := &corev1.Pod{}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(second), got); err != nil {
		t.Fatal(err)
	}
	if v, ok := got.Annotations[assignment.Annotation]; ok {
		t.Fatalf("recreated pod carries %s=%s", assignment.Annotation, v)
	}

	// The pod the server did read gets its annotation.
	a.PodUID = string(second.UID)
	if err := server.Publish(ctx, k8s, second.DeepCopy(), a); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(second), got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[assignment.Annotation] != a.Encode() {
		t.Fatalf("annotation = %q, want %q", got.Annotations[assignment.Annotation], a.Encode())
	}
}

// Where deploy/base's admission policy is not installed, anyone allowed to patch pods can change the
// assignment annotation, e.g. point a pod at another pod's address, which braid-ipam would configure at its
// next sandbox start. The server puts the annotation right at once (Resync is off here), and holds no other
// address for it meanwhile.
func TestAnEditedAssignmentIsPutRight(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "edited", "198.51.100.0/28")
	mkNAD(t, ns, "mgmt", "edited")
	startServer(t, "")
	mkPod(t, ns, "victim", "node-1", "mgmt")
	mkPod(t, ns, "p1", "node-1", "mgmt")
	victim := assignments(t, ns, "victim", "net1")
	own := assignments(t, ns, "p1", "net1").Encode()

	forged := victim
	p := &corev1.Pod{}
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "p1"}, p); err != nil {
		t.Fatal(err)
	}
	forged.PodUID = string(p.UID)
	for _, edit := range []struct {
		what  string
		value any // the annotation's new value; nil removes it
	}{{"pointed at the other pod's address", forged.Encode()}, {"removed", nil}} {
		value, err := json.Marshal(edit.value)
		if err != nil {
			t.Fatal(err)
		}
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, assignment.Annotation, value)
		if err := k8s.Patch(t.Context(), p, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the server restores the assignment "+edit.what, func() (bool, string) {
			if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "p1"}, p); err != nil {
				return false, err.Error()
			}
			v := p.Annotations[assignment.Annotation]
			return v == own, v
		})
	}
	if got := fips(t, "edited"); len(got) != 2 {
		t.Errorf("pool holds %d FloatingIPs, want 2 (one per pod)", len(got))
	}
}
