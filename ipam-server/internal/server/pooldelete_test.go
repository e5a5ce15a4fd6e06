package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// A pool deleted while pods hold its addresses stays (deleting, serving nobody new) until its FloatingIPs are
// gone, as a PersistentVolumeClaim in use does: a pool made meanwhile over the same addresses must not hand
// out the ones still configured in running pods. Before, the pool went at once, and a new pool of the same
// CIDR gave the held address to a second pod.
func TestAPoolWithHoldersIsDeletedOnceTheyAreGone(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "del-a", "192.0.2.0/29")
	mkNAD(t, ns, "n", "del-a")
	startServer(t, "")
	p := mkPod(t, ns, "p", "node-1", "n")
	held := addressesOf(assignments(t, ns, "p", "net1"), "net1")

	if err := k8s.Delete(context.Background(), getPool(t, "del-a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "del-a says it is being deleted", func() (bool, string) {
		ipp := &braidv1.IPPool{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: "del-a"}, ipp); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(ipp.Status.Conditions, server.ConditionReady)
		return c != nil && c.Reason == "Deleting" && strings.Contains(c.Message, "1 FloatingIP"), fmt.Sprintf("%+v", c)
	})
	mkPool(t, "del-b", "192.0.2.0/29")
	mkNAD(t, ns, "n2", "del-b")
	mkPod(t, ns, "q", "node-1", "n2")
	time.Sleep(3 * time.Second)
	q := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "q"}, q); err != nil {
		t.Fatal(err)
	}
	if a, _ := assignment.Parse(q.Annotations[assignment.Annotation]); addressesOf(a, "net1") == held {
		t.Fatalf("q got %s, which p still holds", held)
	}

	deletePod(t, p)
	eventually(t, 15*time.Second, "del-a gone with its last FloatingIP", func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKey{Name: "del-a"}, &braidv1.IPPool{})
		return apierrors.IsNotFound(err), fmt.Sprintf("%v", err)
	})
	assignments(t, ns, "q", "net1")
}

// A deleted pool waits only for the pods that use its addresses: its FloatingIPs that hold nothing for a pod
// (an admin's reservation, an address released and cooling down) go with it. Before, a reservation kept a
// deleted pool for ever, and a released address for its whole cool-down (an uninstall hung on both).
func TestADeletedPoolTakesItsUnusedFloatingIPsAlong(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "del-r", "198.51.100.0/29", cooldown(time.Hour))
	mkNAD(t, ns, "n", "del-r")
	create(t, &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "del-r-198-51-100-6"},
		Spec: braidv1.FloatingIPSpec{IP: "198.51.100.6", Pool: "del-r"}})
	startServer(t, "")
	p := mkPod(t, ns, "p", "node-1", "n")
	assignments(t, ns, "p", "net1")

	if err := k8s.Delete(context.Background(), getPool(t, "del-r")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: "del-r"}, &braidv1.IPPool{}); err != nil {
		t.Fatalf("del-r went while p holds one of its addresses: %v", err)
	}
	deletePod(t, p)
	eventually(t, 15*time.Second, "del-r gone, with its reservation and p's released address", func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKey{Name: "del-r"}, &braidv1.IPPool{})
		var left []string
		for _, f := range fips(t, "del-r") {
			left = append(left, f.Name+" "+string(f.Status.Phase))
		}
		return apierrors.IsNotFound(err) && len(left) == 0, fmt.Sprintf("%v; FloatingIPs %v", err, left)
	})
}

// A deleted pool's finalizer goes only when the API server, not the cache alone, shows no FloatingIP bound to a
// pod: one the allocator has just made may not be in the cache yet, and the pool would go while it is held.
func TestADeletedPoolsHoldersAreCountedFromTheAPIServerWhenTheCacheShowsNone(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "del-lag", "203.0.113.0/29")
	held := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "del-lag-203-0-113-2"},
		Spec: braidv1.FloatingIPSpec{IP: "203.0.113.2", Pool: "del-lag", Pod: ns + "/p", PodUID: "uid-of-p", Interface: "net1", Network: ns + "/n"}}
	create(t, held)
	n, err := server.PodsHolding(context.Background(), lagging{k8s}, k8s, "del-lag")
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("pods holding del-lag's addresses, its cache lagging: %d, want 1", n)
	}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: held.Name}, &braidv1.FloatingIP{}); err != nil {
		t.Errorf("the held FloatingIP: %v, want it kept", err)
	}
}

// lagging is a cache that has not seen any FloatingIP yet.
type lagging struct{ client.Client }

func (l lagging) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*braidv1.FloatingIPList); ok {
		return nil
	}
	return l.Client.List(ctx, list, opts...)
}
