package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// A finished pod (Succeeded or Failed) gives its addresses back by policy; its assignment must then stop
// describing them, or two pods' assignments name one address once another pod takes it (and anything that
// reads the finished pod's annotation, a CNI ADD or CHECK, would be handed an address that is someone else's).
// The interface keeps its network and says why it has no address.
func TestFinishedPodsAssignmentNamesNoReleasedAddress(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "done-v4", "203.0.113.7/32") // a /32 holds one address; no cool-down
	mkNAD(t, ns, "n", "done-v4")
	startServer(t, "")
	mkPod(t, ns, "job", "node-1", "n")
	held := addressesOf(assignments(t, ns, "job", "net1"), "net1")
	p := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "job"}, p); err != nil {
		t.Fatal(err)
	}
	p.Status.Phase = corev1.PodSucceeded
	if err := k8s.Status().Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the finished pod's FloatingIP gone", func() (bool, string) {
		fs := fips(t, "done-v4")
		return len(fs) == 0, fmt.Sprintf("%+v", fs)
	})
	eventually(t, 10*time.Second, "the finished pod's assignment names no address", func() (bool, string) {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "job"}, p); err != nil {
			return false, err.Error()
		}
		a, err := assignment.Parse(p.Annotations[assignment.Annotation])
		if err != nil {
			return false, err.Error()
		}
		iface, ok := a.Interfaces["net1"]
		return ok && len(iface.Addresses) == 0 && iface.Error != "" && iface.Network == ns+"/n" && a.PodUID == string(p.UID),
			p.Annotations[assignment.Annotation]
	})
	// Another pod now gets the address; the finished pod's annotation still names none.
	mkPod(t, ns, "next", "node-1", "n")
	if got := addressesOf(assignments(t, ns, "next", "net1"), "net1"); got != held {
		t.Fatalf("next pod got %q, want the released %q", got, held)
	}
	time.Sleep(2 * time.Second)
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "job"}, p); err != nil {
		t.Fatal(err)
	}
	if a, err := assignment.Parse(p.Annotations[assignment.Annotation]); err != nil || len(a.Interfaces["net1"].Addresses) != 0 {
		t.Fatalf("finished pod's assignment: %s (%v)", p.Annotations[assignment.Annotation], err)
	}
}
