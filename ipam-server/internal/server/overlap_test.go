package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// Two pools of one network sharing addresses would each hand out the same address (each guards only its own
// FloatingIP names): the younger is refused, naming the older and a shared address, until the overlap goes.
// Pools with distinct VLANs are separate networks and both serve.
func TestOverlappingPoolsDoNotBothServe(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "ovl-old", "192.0.2.0/24")
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has whole seconds: make the order plain
	mkPool(t, "ovl-new", "192.0.2.0/25")
	mkPool(t, "vlan-a", "198.51.100.0/24", func(p *braidv1.IPPool) { p.Spec.VLAN = ptr.To(int32(100)) })
	mkPool(t, "vlan-b", "198.51.100.0/24", func(p *braidv1.IPPool) { p.Spec.VLAN = ptr.To(int32(200)) })
	mkNAD(t, ns, "old", "ovl-old")
	mkNAD(t, ns, "new", "ovl-new")
	startServer(t, "")

	ready := func(pool string) *metav1.Condition {
		return meta.FindStatusCondition(poolStatus(t, pool).Conditions, server.ConditionReady)
	}
	eventually(t, 10*time.Second, "ovl-new refused, naming ovl-old", func() (bool, string) {
		c := ready("ovl-new")
		ok := c != nil && c.Status == metav1.ConditionFalse && c.Reason == "OverlapsPool" &&
			strings.Contains(c.Message, "IPPool ovl-old") && strings.Contains(c.Message, "192.0.2.1 ")
		return ok, fmt.Sprintf("%+v", c)
	})
	for _, p := range []string{"ovl-old", "vlan-a", "vlan-b"} {
		eventually(t, 10*time.Second, p+" ready", func() (bool, string) {
			c := ready(p)
			return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", c)
		})
	}

	onOld := mkPod(t, ns, "on-old", "node-1", "old")
	mkPod(t, ns, "on-new", "node-1", "new")
	if got := addressesOf(assignments(t, ns, "on-old", "net1"), "net1"); got != "192.0.2.1/24" {
		t.Fatalf("on-old got %q", got)
	}
	awaitEvent(t, ns, "on-new", "NoEligiblePool", "IPPool ovl-new is not valid")

	// The older pool goes: the younger one serves. A deleted pool stays while its addresses are held
	// (TestAPoolWithHoldersIsDeletedOnceTheyAreGone): on-old's 192.0.2.1 is the younger pool's too.
	old := getPool(t, "ovl-old")
	if err := k8s.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if c := ready("ovl-new"); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("ovl-new serves while ovl-old's address is still held: %+v", c)
	}
	deletePod(t, onOld)
	eventually(t, 15*time.Second, "ovl-new ready once ovl-old is gone", func() (bool, string) {
		c := ready("ovl-new")
		return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", c)
	})
	if got := addressesOf(assignments(t, ns, "on-new", "net1"), "net1"); got == "" {
		t.Fatal("on-new not served")
	}
}

// creationTimestamp has whole seconds, and `kubectl apply -f pools.yaml` creates two pools within one: the pool
// that serves first keeps serving, also when the other's name sorts first. Before, the tie went by name: the
// pool serving already was refused after the fact, while its holders kept addresses the other could then hand
// out again.
func TestOverlappingPoolsOfOneSecondKeepTheOneServing(t *testing.T) {
	startServer(t, "")
	for attempt := 0; ; attempt++ {
		first, second := fmt.Sprintf("tie-z-first-%d", attempt), fmt.Sprintf("tie-a-second-%d", attempt)
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
		mkPool(t, first, "203.0.113.0/24")
		eventually(t, 10*time.Second, first+" ready", func() (bool, string) {
			c := meta.FindStatusCondition(poolStatus(t, first).Conditions, server.ConditionReady)
			return c != nil && c.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", c)
		})
		mkPool(t, second, "203.0.113.0/25")
		a, b := getPool(t, first), getPool(t, second)
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			if attempt == 4 {
				t.Skip("could not create two pools within one second")
			}
			for _, p := range []*braidv1.IPPool{a, b} {
				if err := k8s.Delete(context.Background(), p); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		eventually(t, 10*time.Second, second+" refused, naming "+first, func() (bool, string) {
			c := meta.FindStatusCondition(poolStatus(t, second).Conditions, server.ConditionReady)
			return c != nil && c.Status == metav1.ConditionFalse && strings.Contains(c.Message, "IPPool "+first), fmt.Sprintf("%+v", c)
		})
		time.Sleep(2 * time.Second) // both reconciled again
		if c := meta.FindStatusCondition(poolStatus(t, first).Conditions, server.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
			t.Fatalf("%s, serving first: %+v, want still ready", first, c)
		}
		return
	}
}

// A pool refused once it served (an older pool edited to overlap it) hands out nothing: its status says so,
// with the addresses its FloatingIPs still hold. Before, it kept the counts of when it served, its Exhausted
// condition saying addresses were free.
func TestRefusedPoolsStatusCountsWhatItHolds(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "rst-old", "192.0.2.0/28")
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has whole seconds: make the order plain
	mkPool(t, "rst-new", "198.51.100.0/28")
	mkNAD(t, ns, "n", "rst-new")
	startServer(t, "")
	p := mkPod(t, ns, "p", "node-1", "n")
	defer deletePod(t, p)
	assignments(t, ns, "p", "net1")
	eventually(t, 15*time.Second, "rst-new counts its holder", func() (bool, string) {
		st := poolStatus(t, "rst-new")
		return st.Used == 1 && st.Free == "13", fmt.Sprintf("used %d free %s", st.Used, st.Free)
	})

	old := getPool(t, "rst-old")
	old.Spec.CIDR = "198.51.100.0/27"
	if err := k8s.Update(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "rst-new refused, counting what it holds and nothing free", func() (bool, string) {
		st := poolStatus(t, "rst-new")
		ready := meta.FindStatusCondition(st.Conditions, server.ConditionReady)
		exhausted := meta.FindStatusCondition(st.Conditions, server.ConditionExhausted)
		ok := ready != nil && ready.Reason == "OverlapsPool" && st.Used == 1 && st.Free == "0" && st.Total == "14" &&
			(exhausted == nil || exhausted.Status != metav1.ConditionFalse)
		return ok, fmt.Sprintf("total %s used %d free %s ready %+v exhausted %+v", st.Total, st.Used, st.Free, ready, exhausted)
	})
}
