package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/braid-cni/braid/crds/podid"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// mkMirror makes the API's mirror of a static pod of node-1, as the kubelet makes it: its own UID, and the
// static pod's UID in kubernetes.io/config.mirror.
func mkMirror(t *testing.T, ns, name, staticUID, networks string) *corev1.Pod {
	t.Helper()
	p := podObj(ns, name, "node-1", networks)
	p.Annotations[podid.MirrorAnnotation] = staticUID
	p.Annotations["kubernetes.io/config.hash"] = staticUID
	p.Annotations["kubernetes.io/config.source"] = "file"
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Deleting a static pod's mirror (kubectl delete pod) does not stop the static pod: it runs on with its
// address, and the kubelet makes a new mirror, of another UID. The new mirror gets the same address back, from
// the same FloatingIP; released at once, the address would have gone to another pod while the static pod had it.
func TestStaticPodKeepsItsAddressWhenItsMirrorIsDeleted(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "mirror-v4", "203.0.113.16/30") // two addresses, no cool-down: a release frees one at once
	mkNAD(t, ns, "n", "mirror-v4")
	startServer(t, "", func(o *server.Options) { o.MirrorGrace = time.Minute })
	const staticUID = "3c4d5e6f708192a3b4c5d6e7f8091a2b"
	first := mkMirror(t, ns, "etcd-node-1", staticUID, "n")
	held := addressesOf(assignments(t, ns, "etcd-node-1", "net1"), "net1")
	fs := fips(t, "mirror-v4")
	if len(fs) != 1 {
		t.Fatalf("FloatingIPs: %+v, want the mirror's one", fs)
	}
	name := fs[0].Name

	deletePod(t, first)
	time.Sleep(time.Second) // the FloatingIP controller sees the mirror gone before the kubelet's new one comes
	second := mkMirror(t, ns, "etcd-node-1", staticUID, "n")
	if got := addressesOf(assignments(t, ns, "etcd-node-1", "net1"), "net1"); got != held {
		t.Fatalf("the new mirror got %q, want the static pod's %q", got, held)
	}
	eventually(t, 10*time.Second, "the FloatingIP bound to the new mirror", func() (bool, string) {
		fs := fips(t, "mirror-v4")
		return len(fs) == 1 && fs[0].Name == name && fs[0].Spec.PodUID == string(second.UID) && fs[0].Status.Phase == "",
			fmt.Sprintf("%+v", fs)
	})
}

// A mirror that stays gone is a static pod removed from its node (its manifest deleted): its addresses go back
// once the grace has passed, not before.
func TestStaticPodsAddressIsReleasedWhenItsMirrorStaysGone(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "gone-v4", "203.0.113.20/30")
	mkNAD(t, ns, "n", "gone-v4")
	grace := 3 * time.Second
	startServer(t, "", func(o *server.Options) { o.MirrorGrace = grace })
	mirror := mkMirror(t, ns, "etcd-node-1", "4d5e6f708192a3b4c5d6e7f8091a2b3c", "n")
	assignments(t, ns, "etcd-node-1", "net1")
	deletePod(t, mirror)
	deleted := time.Now()
	time.Sleep(grace / 2)
	if fs := fips(t, "gone-v4"); len(fs) != 1 {
		t.Fatalf("FloatingIPs %v after %v, want the mirror's, kept for the grace of %v", fs, grace/2, grace)
	}
	eventually(t, grace+10*time.Second, "the FloatingIP released", func() (bool, string) {
		fs := fips(t, "gone-v4")
		return len(fs) == 0, fmt.Sprintf("%+v", fs)
	})
	if took := time.Since(deleted); took < grace {
		t.Fatalf("released %v after the mirror went, before the grace of %v", took, grace)
	}
}

// A static pod's FloatingIP deleted by hand while it waits for a new mirror leaves nothing behind: the
// controller forgets its wait (one entry per such FloatingIP, for the life of the process, before).
func TestAStaticPodsFloatingIPDeletedDuringTheGraceIsForgotten(t *testing.T) {
	ctx := context.Background()
	f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "grace-203-0-113-6",
		Annotations: map[string]string{server.StaticPodAnnotation: "5e6f708192a3b4c5d6e7f8091a2b3c4d"}},
		Spec: braidv1.FloatingIPSpec{IP: "203.0.113.6", Pool: "grace", Pod: "kube-system/etcd-node-1", PodUID: "0c2f",
			ReleasePolicy: braidv1.ReleaseOnPodDeletion}}
	if err := k8s.Create(ctx, f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, f) })
	m, err := pool.Parse(braidv1.IPPoolSpec{CIDR: "203.0.113.0/29"})
	if err != nil {
		t.Fatal(err)
	}
	fc := server.NewFloatingIPController(k8s, map[string]pool.Model{"grace": m})
	fc.SetMirrorGrace(time.Hour)
	if err := fc.Reconcile(ctx, f.Name); err != nil {
		t.Fatal(err)
	}
	if n := fc.MirrorWaits(); n != 1 {
		t.Fatalf("the FloatingIP of a static pod without its mirror: %d waits, want 1", n)
	}
	if err := k8s.Delete(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := fc.Reconcile(ctx, f.Name); err != nil {
		t.Fatal(err)
	}
	if n := fc.MirrorWaits(); n != 0 {
		t.Errorf("after the FloatingIP was deleted: %d waits remembered, want none", n)
	}
}
