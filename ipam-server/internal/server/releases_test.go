package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
