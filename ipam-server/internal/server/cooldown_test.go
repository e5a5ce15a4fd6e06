package server_test

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// The API server keeps status.releasedAt to the second. Released at 0.9s past a second, the address must still
// wait the pool's whole cool-down, not up to a second less: the release time read back is never earlier than
// the release.
func TestAReleasedAddressWaitsTheWholeCooldown(t *testing.T) {
	const cool = 10 * time.Second
	m, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "203.0.113.0/29", ReuseCooldown: &metav1.Duration{Duration: cool}})
	if err != nil {
		t.Fatal(err)
	}
	f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "whole-203-0-113-5"}, Spec: braidv1.FloatingIPSpec{
		IP: "203.0.113.5", Pool: "whole", Pod: "default/gone-pod", PodUID: "0b1e", ReleasePolicy: braidv1.ReleaseOnPodDeletion}}
	if err := k8s.Create(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), f) })
	fc := server.NewFloatingIPController(k8s, map[string]pool.Model{"whole": m})
	released := time.Now().Truncate(time.Second).Add(900 * time.Millisecond)
	now := released
	fc.SetClock(func() time.Time { return now })
	if err := fc.Reconcile(context.Background(), f.Name); err != nil {
		t.Fatal(err)
	}
	now = released.Add(cool - 100*time.Millisecond) // still cooling down
	if err := fc.Reconcile(context.Background(), f.Name); err != nil {
		t.Fatal(err)
	}
	got := &braidv1.FloatingIP{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(f), got); err != nil {
		t.Fatalf("FloatingIP released %s ago, with a cool-down of %s, was deleted: %v", now.Sub(released), cool, err)
	}
	if got.Status.Phase != braidv1.FloatingIPReleased || got.Status.ReleasedAt.Time.Before(released) {
		t.Fatalf("status %+v, want Released at %s or later", got.Status, released)
	}
	now = released.Add(cool + time.Second)
	if err := fc.Reconcile(context.Background(), f.Name); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(f), got); !apierrors.IsNotFound(err) {
		t.Fatalf("FloatingIP past its cool-down: %v, want it deleted", err)
	}
}
