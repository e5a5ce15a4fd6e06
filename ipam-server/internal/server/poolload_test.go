package server_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// TestANewPoolWhoseAddressesCannotBeListedIsLoadedOnRetry: the pool controller loads a new pool together with
// the addresses its FloatingIPs hold. When that list fails, the pool is left unloaded and the reconcile fails
// (to be retried), without marking the valid pool invalid; the retry loads it and announces it to the pod
// controller, once.
func TestANewPoolWhoseAddressesCannotBeListedIsLoadedOnRetry(t *testing.T) {
	mkPool(t, "listfail", "192.0.2.0/24")
	base, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	failures := 1
	c := interceptor.NewClient(base, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*braidv1.FloatingIPList); ok {
				if failures > 0 {
					failures--
					return errors.New("injected: list failed")
				}
				return nil // the cache's index is not on the API server: no FloatingIPs
			}
			return c.List(ctx, list, opts...)
		},
	})
	pc := server.NewPoolController(c)

	if err := pc.Reconcile(t.Context(), "listfail"); err == nil {
		t.Fatal("reconcile with a failing list: no error, want one (to be retried)")
	}
	if pc.Loaded("listfail") || len(pc.Announced()) != 0 {
		t.Fatal("after the failed list the pool is loaded or announced; the retry would skip its addresses")
	}
	for _, cond := range poolStatus(t, "listfail").Conditions {
		if cond.Reason == "InvalidSpec" {
			t.Fatalf("a list failure marked the valid pool invalid: %+v", cond)
		}
	}

	if err := pc.Reconcile(t.Context(), "listfail"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := pc.Announced(); !pc.Loaded("listfail") || !slices.Equal(got, []string{"listfail"}) {
		t.Fatalf("after the retry: loaded %v, announced %v; want loaded and announced once", pc.Loaded("listfail"), got)
	}
	if err := pc.Reconcile(t.Context(), "listfail"); err != nil || len(pc.Announced()) != 0 {
		t.Fatalf("a third reconcile: err %v, or announced again", err)
	}
}

// The per-pool gauges follow the allocator at every reconcile, also when the status write is held back
// (status writes are spaced statusInterval apart in bursts). Before, they were set only with a write, and
// lagged the pool by up to that interval.
func TestPoolGaugesFollowEveryReconcile(t *testing.T) {
	mkPool(t, "gauges", "192.0.2.0/29") // 6 usable
	base, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	pc := server.NewPoolController(interceptor.NewClient(base, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*braidv1.FloatingIPList); ok {
				return nil // the cache's index is not on the API server: no FloatingIPs
			}
			return c.List(ctx, list, opts...)
		},
	}))
	if err := pc.Reconcile(t.Context(), "gauges"); err != nil {
		t.Fatal(err)
	}
	if used, free := pc.Gauge("braid_ipam_pool_used", "gauges"), pc.Gauge("braid_ipam_pool_free", "gauges"); used != 0 || free != 6 {
		t.Fatalf("after the first reconcile: used %v free %v, want 0 and 6", used, free)
	}
	pc.Observe(&braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "gauges-192-0-2-1", UID: "g1"},
		Spec: braidv1.FloatingIPSpec{IP: "192.0.2.1", Pool: "gauges"}})
	if err := pc.Reconcile(t.Context(), "gauges"); err != nil { // right after the first write: held back
		t.Fatal(err)
	}
	if used, free := pc.Gauge("braid_ipam_pool_used", "gauges"), pc.Gauge("braid_ipam_pool_free", "gauges"); used != 1 || free != 5 {
		t.Fatalf("after an address was taken: used %v free %v, want 1 and 5", used, free)
	}
}
