package server_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
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

// A reconcile of the pod that started before it finished can publish its addresses after the FloatingIP
// controller withdrew them. The pod controller withdraws them again when it next looks at the finished pod.
// Before, it ignored finished pods, and the annotation kept naming addresses gone back to the pool.
func TestFinishedPodsAddressesAreWithdrawnAgain(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "again-v4", "203.0.113.8/32")
	mkNAD(t, ns, "n", "again-v4")
	startServer(t, "", func(o *server.Options) { o.Resync = time.Second })
	mkPod(t, ns, "job", "node-1", "n")
	assignments(t, ns, "job", "net1")
	p := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "job"}, p); err != nil {
		t.Fatal(err)
	}
	published := p.Annotations[assignment.Annotation]
	p.Status.Phase = corev1.PodFailed
	if err := k8s.Status().Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	names := func() (bool, string) {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "job"}, p); err != nil {
			return false, err.Error()
		}
		a, err := assignment.Parse(p.Annotations[assignment.Annotation])
		return err == nil && len(a.Interfaces["net1"].Addresses) == 0 && len(fips(t, "again-v4")) == 0, p.Annotations[assignment.Annotation]
	}
	eventually(t, 10*time.Second, "the finished pod's addresses withdrawn and released", names)
	patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"`+assignment.Annotation+`":`+strconv.Quote(published)+`}}}`))
	if err := k8s.Patch(context.Background(), p, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the addresses published late withdrawn again", names)
}
