package server_test

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// TestAPoolCreatedLaterCompletesThePodsNamingIt: a NAD names an IPv4 and an IPv6 pool, and the IPv6 one does
// not exist yet. The pod is served its IPv4 address with a Warning Event naming the missing pool; once the
// pool is created the pod gets its IPv6 address too, with no periodic resync to find it (Resync is off).
func TestAPoolCreatedLaterCompletesThePodsNamingIt(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "late-v4", "192.0.2.0/24")
	mkNAD(t, ns, "mgmt", "late-v4", "late-v6")
	startServer(t, "")

	mkPod(t, ns, "p1", "node-1", "mgmt")
	if got := assignments(t, ns, "p1", "net1").Interfaces["net1"].Addresses; len(got) != 1 || got[0].Pool != "late-v4" {
		t.Fatalf("before late-v6 exists: addresses %+v, want one from late-v4", got)
	}
	awaitEvent(t, ns, "p1", "IPPoolNotFound", "IPPool late-v6 not found")

	mkPool(t, "late-v6", "2001:db8:7::/64")
	eventually(t, 10*time.Second, "the pod gets an IPv6 address from the new pool", func() (bool, string) {
		p := &corev1.Pod{}
		if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "p1"}, p); err != nil {
			return false, err.Error()
		}
		v := p.Annotations[assignment.Annotation]
		a, err := assignment.Parse(v)
		if err != nil {
			return false, err.Error()
		}
		addrs := a.Interfaces["net1"].Addresses
		return len(addrs) == 2 && addrs[0].Pool == "late-v4" && addrs[1].Pool == "late-v6", v
	})
	if n := timesReported(t, ns, "p1", "IPPoolNotFound"); n != 1 {
		t.Errorf("IPPoolNotFound reported %d times, want once", n)
	}
}

// timesReported counts the Events of a reason about a pod, with their repetitions (a series).
func timesReported(t *testing.T, ns, name, reason string) int {
	t.Helper()
	list := &corev1.EventList{}
	if err := k8s.List(t.Context(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.InvolvedObject.Name != name || e.Reason != reason {
			continue
		}
		switch {
		case e.Series != nil:
			n += int(e.Series.Count)
		case e.Count > 0:
			n += int(e.Count)
		default:
			n++
		}
	}
	return n
}
