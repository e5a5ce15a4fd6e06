package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// The usual way to change a StatefulSet's immutable fields: delete it with --cascade=orphan (its pods keep
// running, the garbage collector drops their owner reference) and create it again, which adopts the pods.
// The adopted pods are that StatefulSet's: when one is recreated (a rolling update) it keeps its addresses.
// Before, the addresses still named the first StatefulSet's UID and were released with the old pod.
func TestStatefulSetRecreatedAfterOrphanDeleteKeepsAdoptedAddresses(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "adopt-v4", "192.0.2.0/24", policy(braidv1.ReleaseKeepForStatefulSet))
	mkNAD(t, ns, "ctl", "adopt-v4")
	startServer(t, "")
	first := mkStatefulSet(t, ns, "kv", 1)
	pod := statefulSetPod(t, first, 0, "ctl")
	before := addressesOf(assignments(t, ns, "kv-0", "net1"), "net1")

	// kubectl delete --cascade=orphan: envtest runs no garbage collector, so the test drops the owner
	// reference as it would.
	if err := k8s.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first StatefulSet gone", func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(first), &appsv1.StatefulSet{})
		return apierrors.IsNotFound(err), fmt.Sprintf("%v", err)
	})
	setOwner(t, pod, nil)
	// Created again; its controller adopts kv-0.
	second := mkStatefulSet(t, ns, "kv", 1)
	setOwner(t, pod, second)
	time.Sleep(2 * time.Second)

	// A rolling update recreates kv-0.
	deletePod(t, pod)
	eventually(t, 10*time.Second, "kv-0's address reserved for its name", func() (bool, string) {
		fs := fips(t, "adopt-v4")
		return len(fs) == 1 && fs[0].Spec.PodUID == "", fmt.Sprintf("%+v", fs)
	})
	again := statefulSetPod(t, second, 0, "ctl")
	// Deleted when the test ends, so that no later test's server serves it (one with default networks would).
	t.Cleanup(func() { deletePod(t, again) })
	if after := addressesOf(assignments(t, ns, "kv-0", "net1"), "net1"); after != before {
		t.Fatalf("kv-0 of the adopting StatefulSet got %s, want its address %s", after, before)
	}
}

// setOwner makes set the pod's controller (nil: no owner), as the StatefulSet controller and the garbage
// collector do.
func setOwner(t *testing.T, pod *corev1.Pod, set *appsv1.StatefulSet) {
	t.Helper()
	p := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(pod), p); err != nil {
		t.Fatal(err)
	}
	p.OwnerReferences = nil
	if set != nil {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: set.Name,
			UID: set.UID, Controller: ptr.To(true)}}
	}
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}
