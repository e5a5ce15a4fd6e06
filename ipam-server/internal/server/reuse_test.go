package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// A static address whose pod was replaced (a Deployment's rollout, a single-replica StatefulSet on
// OnPodDeletion) is still cooling down, its FloatingIP released but not deleted: the new pod, asking for it by
// name, gets it, and the pool counts it once. Before, the create was refused, the address stayed held in
// memory by nobody after the cool-down, and the new pod was refused for good.
func TestStaticAddressGoesToThePodThatReplacesItsHolder(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "restatic-v4", "192.0.2.0/24", cooldown(time.Hour))
	mkNAD(t, ns, "s", "restatic-v4")
	startServer(t, "")
	const ask = `[{"name":"s","ips":["192.0.2.42/24"]}]`
	old := mkPod(t, ns, "web-a", "node-1", ask)
	assignments(t, ns, "web-a", "net1")
	deletePod(t, old)
	eventually(t, 10*time.Second, "the old pod's FloatingIP released", func() (bool, string) {
		fs := fips(t, "restatic-v4")
		return len(fs) == 1 && fs[0].Status.Phase == braidv1.FloatingIPReleased, fmt.Sprintf("%+v", fs)
	})

	mkPod(t, ns, "web-b", "node-2", ask)
	if got := addressesOf(assignments(t, ns, "web-b", "net1"), "net1"); got != "192.0.2.42/24" {
		t.Fatalf("replacement pod got %q, want 192.0.2.42/24", got)
	}
	eventually(t, 10*time.Second, "one FloatingIP, the new pod's, counted once", func() (bool, string) {
		fs, s := fips(t, "restatic-v4"), poolStatus(t, "restatic-v4")
		ok := len(fs) == 1 && fs[0].Spec.Pod == ns+"/web-b" && fs[0].Status.Phase != braidv1.FloatingIPReleased && s.Used == 1
		return ok, fmt.Sprintf("FloatingIPs %+v, used %d", fs, s.Used)
	})
}

// Two pools may split one CIDR into ranges; a static address is served by the one whose range holds it.
func TestStaticAddressFromTheSecondPoolOfACIDR(t *testing.T) {
	ns := env.Namespace(t)
	for _, p := range []struct{ name, start, end string }{{"split-a", "192.0.2.10", "192.0.2.49"}, {"split-b", "192.0.2.50", "192.0.2.99"}} {
		mkPool(t, p.name, "192.0.2.0/24", func(ip *braidv1.IPPool) {
			ip.Spec.Ranges = []braidv1.IPRange{{Start: p.start, End: p.end}}
		})
	}
	mkNAD(t, ns, "s", "split-a", "split-b")
	startServer(t, "")
	mkPod(t, ns, "want-60", "node-1", `[{"name":"s","ips":["192.0.2.60/24"]}]`)
	if got := addressesOf(assignments(t, ns, "want-60", "net1"), "net1"); got != "192.0.2.60/24" {
		t.Fatalf("got %q, want 192.0.2.60/24", got)
	}
	if fs := fips(t, "split-b"); len(fs) != 1 || fs[0].Spec.IP != "192.0.2.60" {
		t.Fatalf("FloatingIPs of split-b: %+v", fs)
	}
}

// An admin reserves an address a pod holds, under a name of their own: when the pod goes, the address stays
// reserved; it is not handed out while the admin's FloatingIP exists.
func TestReservationOfAHeldAddressOutlivesThePod(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "twice-v4", "203.0.113.0/30") // .1 and .2 usable; no cool-down
	mkNAD(t, ns, "n", "twice-v4")
	startServer(t, "")
	first := mkPod(t, ns, "first", "node-1", "n")
	held := addressesOf(assignments(t, ns, "first", "net1"), "net1")
	if held != "203.0.113.1/30" {
		t.Fatalf("first pod got %q", held)
	}
	keep := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "keep-router"}, Spec: braidv1.FloatingIPSpec{IP: "203.0.113.1", Pool: "twice-v4"}}
	if err := k8s.Create(context.Background(), keep); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), keep) })
	eventually(t, 10*time.Second, "both FloatingIPs seen", func() (bool, string) {
		return len(fips(t, "twice-v4")) == 2, fmt.Sprintf("%d", len(fips(t, "twice-v4")))
	})
	deletePod(t, first)
	eventually(t, 10*time.Second, "the pod's FloatingIP gone", func() (bool, string) {
		fs := fips(t, "twice-v4")
		return len(fs) == 1 && fs[0].Name == "keep-router", fmt.Sprintf("%+v", fs)
	})
	for i := range 2 {
		mkPod(t, ns, fmt.Sprintf("next%d", i), "node-1", "n")
	}
	if got := addressesOf(assignments(t, ns, "next0", "net1"), "net1"); got != "203.0.113.2/30" {
		t.Fatalf("next0 got %q, want 203.0.113.2/30", got)
	}
	awaitEvent(t, ns, "next1", "PoolExhausted", "twice-v4")
}

// A pod that ran to completion (a Job's, kept as history) or failed for good gives its address back by
// policy, as its sandbox is gone, though the pod object stays.
func TestFinishedPodGivesItsAddressBack(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "jobs-v4", "203.0.113.0/30") // .1 and .2 usable; no cool-down
	mkNAD(t, ns, "n", "jobs-v4")
	startServer(t, "")
	for i, phase := range []corev1.PodPhase{corev1.PodSucceeded, corev1.PodFailed} {
		name := fmt.Sprintf("job-%d", i)
		mkPod(t, ns, name, "node-1", "n")
		assignments(t, ns, name, "net1")
		p := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = phase
		if err := k8s.Status().Update(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, name+" ("+string(phase)+") gives its address back", func() (bool, string) {
			fs, s := fips(t, "jobs-v4"), poolStatus(t, "jobs-v4")
			return len(fs) == 0 && s.Used == 0, fmt.Sprintf("FloatingIPs %+v, used %d", fs, s.Used)
		})
	}
}

// A pool whose spec turns invalid (an edit the API server accepts: overlapping ranges) stops handing out
// addresses but keeps what it knows: a pod holding its address keeps it described, and an address released
// meanwhile still cools down. Before, the pool was forgotten: releases skipped the cool-down (the FloatingIP
// deleted at once) and resyncs rewrote its pods' assignments with no address.
func TestPoolTurnedInvalidKeepsCooldownsAndHolders(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "flaky-v4", "192.0.2.0/24", cooldown(time.Hour), func(p *braidv1.IPPool) {
		p.Spec.Ranges = []braidv1.IPRange{{Start: "192.0.2.10", End: "192.0.2.20"}}
	})
	mkNAD(t, ns, "n", "flaky-v4")
	startServer(t, "", func(o *server.Options) { o.Resync = 2 * time.Second })
	leaving := mkPod(t, ns, "leaving", "node-1", "n")
	mkPod(t, ns, "staying", "node-1", "n")
	gone := addressesOf(assignments(t, ns, "leaving", "net1"), "net1")
	kept := addressesOf(assignments(t, ns, "staying", "net1"), "net1")

	setRanges := func(r ...braidv1.IPRange) {
		p := getPool(t, "flaky-v4")
		p.Spec.Ranges = r
		if err := k8s.Update(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	setRanges(braidv1.IPRange{Start: "192.0.2.10", End: "192.0.2.20"}, braidv1.IPRange{Start: "192.0.2.15", End: "192.0.2.30"})
	eventually(t, 10*time.Second, "flaky-v4 not ready", func() (bool, string) {
		c := meta.FindStatusCondition(poolStatus(t, "flaky-v4").Conditions, server.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse, fmt.Sprintf("%+v", c)
	})
	deletePod(t, leaving)
	awaitReleased(t, "flaky-v4", ns+"/leaving")
	time.Sleep(5 * time.Second) // two resyncs of the staying pod
	if got := addressesOf(assignments(t, ns, "staying", "net1"), "net1"); got != kept {
		t.Fatalf("staying pod's assignment after resyncs: %q, want %q", got, kept)
	}

	setRanges(braidv1.IPRange{Start: "192.0.2.10", End: "192.0.2.30"})
	mkPod(t, ns, "next", "node-1", "n")
	if got := addressesOf(assignments(t, ns, "next", "net1"), "net1"); got == gone || got == kept {
		t.Fatalf("next pod got %q, which is cooling down or held", got)
	}
}

// An admin's FloatingIP for a pod name with releasePolicy OnPodDeletion waits for that pod, goes to it, and
// is released once that pod is gone. Before, it was released at once: no pod UID read as a holder gone.
func TestReservationForAPodNameWaitsForThePod(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "named-v4", "203.0.113.0/29")
	mkNAD(t, ns, "n", "named-v4")
	startServer(t, "")
	f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "for-q"}, Spec: braidv1.FloatingIPSpec{IP: "203.0.113.5", Pool: "named-v4",
		Pod: ns + "/q", Interface: "net1", Network: ns + "/n", ReleasePolicy: braidv1.ReleaseOnPodDeletion}}
	if err := k8s.Create(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), f) })
	time.Sleep(3 * time.Second)
	if fs := fips(t, "named-v4"); len(fs) != 1 || fs[0].Status.Phase == braidv1.FloatingIPReleased {
		t.Fatalf("the reservation for pod q before q exists: %+v", fs)
	}
	q := mkPod(t, ns, "q", "node-1", "n")
	if got := addressesOf(assignments(t, ns, "q", "net1"), "net1"); got != "203.0.113.5/29" {
		t.Fatalf("q got %q, want its reservation 203.0.113.5/29", got)
	}
	deletePod(t, q)
	eventually(t, 10*time.Second, "the reservation released with q", func() (bool, string) {
		fs := fips(t, "named-v4")
		return len(fs) == 0, fmt.Sprintf("%+v", fs)
	})
}

// A pool that is invalid when the server starts has never had a model in this process (another replica led
// while it was valid). The pods holding its addresses keep them described as they were: before, the pod's
// assignment was rewritten without its address, which a sandbox restart would then fail on.
func TestPoolInvalidAtStartKeepsItsHoldersDescribed(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "restart-v4", "198.51.100.0/24", func(p *braidv1.IPPool) {
		p.Spec.Ranges = []braidv1.IPRange{{Start: "198.51.100.10", End: "198.51.100.20"}}
		p.Spec.Gateway = "198.51.100.1"
	})
	mkNAD(t, ns, "n", "restart-v4")
	var before string
	t.Run("first server", func(t *testing.T) {
		startServer(t, "")
		mkPod(t, ns, "holder", "node-1", "n")
		before = assignedValue(t, ns, "holder", "net1")
	})
	p := getPool(t, "restart-v4")
	p.Spec.Ranges = append(p.Spec.Ranges, braidv1.IPRange{Start: "198.51.100.15", End: "198.51.100.30"})
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	startServer(t, "", func(o *server.Options) { o.Resync = time.Second })
	eventually(t, 10*time.Second, "restart-v4 refused by the new server", func() (bool, string) {
		s := poolStatus(t, "restart-v4")
		c := meta.FindStatusCondition(s.Conditions, server.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && s.ObservedGeneration == p.Generation, fmt.Sprintf("%+v", c)
	})
	time.Sleep(3 * time.Second) // resyncs of the holder
	if got := assignedValue(t, ns, "holder", "net1"); got != before {
		t.Fatalf("holder's assignment after the restart:\n%s\nwant, as before:\n%s", got, before)
	}
}

// assignedValue waits for the pod's interfaces to be assigned and returns the annotation as it stands.
func assignedValue(t *testing.T, ns, name string, ifaces ...string) string {
	t.Helper()
	assignments(t, ns, name, ifaces...)
	pod := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
		t.Fatal(err)
	}
	return pod.Annotations[assignment.Annotation]
}

// A pool invalid when the server started has no model in it, so its cool-down cannot be told; a pod of it
// that goes meanwhile leaves its FloatingIP released (the cool-down is durable, across a restart), and its
// address is not handed out at once when the pool is valid again. Before, the FloatingIP was deleted at once
// (no model read as no cool-down), and the address was the first the next pod got.
func TestReleaseWhileThePoolHasNoModelKeepsTheCooldown(t *testing.T) {
	ns := env.Namespace(t)
	valid := []braidv1.IPRange{{Start: "198.51.100.10", End: "198.51.100.20"}}
	mkPool(t, "nomodel-v4", "198.51.100.0/24", cooldown(time.Hour), func(p *braidv1.IPPool) { p.Spec.Ranges = valid })
	mkNAD(t, ns, "n", "nomodel-v4")
	var held string
	var leaving *corev1.Pod
	t.Run("first server", func(t *testing.T) {
		startServer(t, "")
		leaving = mkPod(t, ns, "leaving", "node-1", "n")
		held = addressesOf(assignments(t, ns, "leaving", "net1"), "net1")
	})
	setRanges := func(r ...braidv1.IPRange) {
		p := getPool(t, "nomodel-v4")
		p.Spec.Ranges = r
		if err := k8s.Update(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	setRanges(append(valid, braidv1.IPRange{Start: "198.51.100.15", End: "198.51.100.30"})...) // overlapping: invalid
	startServer(t, "")
	eventually(t, 10*time.Second, "nomodel-v4 refused by the new server", func() (bool, string) {
		c := meta.FindStatusCondition(poolStatus(t, "nomodel-v4").Conditions, server.ConditionReady)
		return c != nil && c.Status == metav1.ConditionFalse && c.ObservedGeneration == getPool(t, "nomodel-v4").Generation, fmt.Sprintf("%+v", c)
	})
	deletePod(t, leaving)
	awaitReleased(t, "nomodel-v4", ns+"/leaving")
	setRanges(valid...)
	mkPod(t, ns, "next", "node-1", "n")
	if got := addressesOf(assignments(t, ns, "next", "net1"), "net1"); got == held {
		t.Fatalf("next pod got %s, released a moment ago with a cool-down of an hour", got)
	}
}

// A pod waiting on an exhausted pool is told once: the reason does not change while the pool's counts do
// (another pod's address going into its cool-down). Before, the message carried the live counts, so each
// change gave the waiting pod another Event and counted another failure.
func TestExhaustedPoolIsReportedOncePerWaitingPod(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "full-v4", "203.0.113.0/30", cooldown(time.Hour)) // 2 usable addresses
	mkNAD(t, ns, "f", "full-v4")
	startServer(t, "")
	first := mkPod(t, ns, "first", "node-1", "f")
	mkPod(t, ns, "second", "node-1", "f")
	assignments(t, ns, "first", "net1")
	assignments(t, ns, "second", "net1")
	mkPod(t, ns, "waiting", "node-1", "f")
	awaitEvent(t, ns, "waiting", server.ReasonPoolExhausted, "full-v4")
	deletePod(t, first)
	awaitReleased(t, "full-v4", ns+"/first")
	time.Sleep(3 * time.Second) // retries of the waiting pod
	if n := timesReported(t, ns, "waiting", server.ReasonPoolExhausted); n != 1 {
		t.Errorf("%s reported %d times to the waiting pod, want once: %v", server.ReasonPoolExhausted, n, podEvents(t, ns, "waiting"))
	}
}

// awaitReleased waits until the pod's FloatingIP in the pool is released and kept, cooling down (not deleted:
// that would skip the cool-down).
func awaitReleased(t *testing.T, pool, podKey string) {
	t.Helper()
	eventually(t, 10*time.Second, podKey+"'s FloatingIP in "+pool+" released, cooling down", func() (bool, string) {
		for _, f := range fips(t, pool) {
			if f.Spec.Pod == podKey {
				return f.Status.Phase == braidv1.FloatingIPReleased, string(f.Status.Phase)
			}
		}
		return false, "its FloatingIP is gone: the cool-down was skipped"
	})
}
