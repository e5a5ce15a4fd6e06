package server_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
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
