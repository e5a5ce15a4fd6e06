package server_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// The server caches every pod of the cluster, and every FloatingIP, pool and NAD, without their managedFields:
// one entry per writer of the object (the scheduler, the kubelet, braid's own writes), which braid never reads,
// and which would otherwise cost memory for each of the cluster's pods.
func TestCachesHoldNoManagedFields(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "cache-v4", "198.51.100.0/28")
	mkNAD(t, ns, "n", "cache-v4")
	mgr := startServer(t, "")
	mkPod(t, ns, "p", "node-1", "n")
	assignments(t, ns, "p", "net1")
	ctx, key := context.Background(), client.ObjectKey{Namespace: ns, Name: "p"}

	api := &corev1.Pod{}
	if err := k8s.Get(ctx, key, api); err != nil {
		t.Fatal(err)
	}
	if len(api.ManagedFields) == 0 {
		t.Fatal("the API server keeps no managedFields for the pod: this test shows nothing")
	}
	cached := &corev1.Pod{}
	if err := mgr.GetCache().Get(ctx, key, cached); err != nil {
		t.Fatal(err)
	}
	if len(cached.ManagedFields) != 0 || cached.Annotations["k8s.v1.cni.cncf.io/networks"] != "n" {
		t.Errorf("cached pod: managedFields %v, annotations %v; want none, and the annotations kept", cached.ManagedFields, cached.Annotations)
	}
	fips := &braidv1.FloatingIPList{}
	if err := mgr.GetCache().List(ctx, fips); err != nil {
		t.Fatal(err)
	}
	for _, f := range fips.Items {
		if len(f.ManagedFields) != 0 {
			t.Errorf("cached FloatingIP %s has managedFields %v", f.Name, f.ManagedFields)
		}
	}
	if len(fips.Items) == 0 {
		t.Error("no FloatingIP in the cache")
	}
}
