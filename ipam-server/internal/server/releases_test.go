package server_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// A release that fails to be written (a conflict with a stale cache, the API server unavailable) is retried;
// the address is released once, and counted once. Before, every attempt counted.
func TestAReleaseRetriedIsCountedOnce(t *testing.T) {
	spec := braidv1.IPPoolSpec{CIDR: "203.0.113.0/29", ReuseCooldown: &metav1.Duration{Duration: time.Hour}}
	m, err := pool.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "relcount-203-0-113-2"}, Spec: braidv1.FloatingIPSpec{
		IP: "203.0.113.2", Pool: "relcount", Pod: "default/gone-pod", PodUID: "0b1d", ReleasePolicy: braidv1.ReleaseOnPodDeletion}}
	if err := k8s.Create(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), f) })
	base, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	failures := 1
	c := interceptor.NewClient(base, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, o client.Object, opts ...client.SubResourceUpdateOption) error {
			if failures > 0 {
				failures--
				return errors.New("injected: status update failed")
			}
			return c.SubResource(sub).Update(ctx, o, opts...)
		},
	})
	fc := server.NewFloatingIPController(c, map[string]pool.Model{"relcount": m})
	if err := fc.Reconcile(context.Background(), f.Name); err == nil {
		t.Fatal("the first release should fail (injected)")
	}
	if err := fc.Reconcile(context.Background(), f.Name); err != nil {
		t.Fatal(err)
	}
	got := &braidv1.FloatingIP{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(f), got); err != nil || got.Status.Phase != braidv1.FloatingIPReleased {
		t.Fatalf("FloatingIP after the retry: %+v (%v), want Released", got.Status, err)
	}
	if n := fc.Releases("relcount"); n != 1 {
		t.Fatalf("releases counted %v times, want 1", n)
	}
}

// The StatefulSet's informer and the pods' are not in step: scaled down and up again at once, the cached
// StatefulSet may still show the lower count when its pod's deletion arrives. A release of the ordinal's
// address is for good (it may go to another pod), so a cached "not wanted" is checked with the API server.
func TestStaleStatefulSetDoesNotReleaseAWantedOrdinal(t *testing.T) {
	ns := env.Namespace(t)
	set := mkStatefulSet(t, ns, "db", 3)
	m, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "203.0.113.0/29"})
	if err != nil {
		t.Fatal(err)
	}
	f, live := heldForGoneDB2(t, set, "stale", "203.0.113.3")
	stale := interceptor.NewClient(live, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, o client.Object, opts ...client.GetOption) error {
			err := c.Get(ctx, key, o, opts...)
			if s, ok := o.(*appsv1.StatefulSet); ok && err == nil {
				s.Spec.Replicas = ptr.To[int32](2) // the cache's copy from before the scale-up
			}
			return err
		},
	})
	fc := server.NewFloatingIPControllerWithAPI(stale, live, map[string]pool.Model{"stale": m})
	if err := fc.Reconcile(context.Background(), f.Name); err != nil {
		t.Fatal(err)
	}
	got := &braidv1.FloatingIP{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(f), got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase == braidv1.FloatingIPReleased || got.Spec.PodUID != "" {
		t.Fatalf("db-2's address: phase %q, pod UID %q; want it reserved for db-2 (phase empty, no pod UID)",
			got.Status.Phase, got.Spec.PodUID)
	}
}

// A release with no cool-down deletes the FloatingIP. The decision is taken on the cached object; when the
// pod controller rebinds it meanwhile (the StatefulSet scaled up again, its pod back), the delete must not take
// the address from the pod now configured with it: another pod could be given it at once.
func TestAReleaseDoesNotDeleteAFloatingIPRebound(t *testing.T) {
	ns := env.Namespace(t)
	set := mkStatefulSet(t, ns, "db", 2) // db-2 is not wanted
	m, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "203.0.113.0/29", ReuseCooldown: &metav1.Duration{}})
	if err != nil {
		t.Fatal(err)
	}
	f, live := heldForGoneDB2(t, set, "rebound", "203.0.113.4")
	racing := interceptor.NewClient(live, interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.DeleteOption) error {
			// The pod controller wins the race: it rebinds the FloatingIP to the new db-2.
			cur := &braidv1.FloatingIP{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
				return err
			}
			cur.Spec.PodUID = "new-pod-uid"
			if err := c.Update(ctx, cur); err != nil {
				return err
			}
			return c.Delete(ctx, o, opts...)
		},
	})
	fc := server.NewFloatingIPController(racing, map[string]pool.Model{"rebound": m})
	_ = fc.Reconcile(context.Background(), f.Name) // fails, or is retried: the object is not the one decided on
	got := &braidv1.FloatingIP{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(f), got); err != nil {
		t.Fatalf("FloatingIP rebound to the new db-2 was deleted: %v", err)
	}
	if got.Spec.PodUID != "new-pod-uid" {
		t.Fatalf("FloatingIP bound to %q, want the new db-2", got.Spec.PodUID)
	}
}

// heldForGoneDB2 creates the FloatingIP of ip in pool that the StatefulSet set's pod db-2, now gone, held
// (policy KeepForStatefulSet), and returns it with a client of the API server itself.
func heldForGoneDB2(t *testing.T, set *appsv1.StatefulSet, pool, ip string) (*braidv1.FloatingIP, client.WithWatch) {
	t.Helper()
	f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: pool + "-" + strings.ReplaceAll(ip, ".", "-"),
		Annotations: map[string]string{server.StatefulSetAnnotation: set.Name, server.StatefulSetUIDAnnotation: string(set.UID)}},
		Spec: braidv1.FloatingIPSpec{IP: ip, Pool: pool, Pod: set.Namespace + "/db-2", PodUID: "gone-pod-uid",
			ReleasePolicy: braidv1.ReleaseKeepForStatefulSet}}
	create(t, f)
	live, err := client.NewWithWatch(env.Config, client.Options{Scheme: k8s.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return f, live
}
