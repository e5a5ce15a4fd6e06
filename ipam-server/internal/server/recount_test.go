package server_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// A burst of allocations in a pool makes a few recounts of its status, not about one per address: a recount
// walks every address the pool holds, under the allocator's lock that allocations wait on.
func TestABurstOfAllocationsMakesAFewRecounts(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "recount", "2001:db8:7::/64")
	mkNAD(t, ns, "recount", "recount")
	startServer(t, "")
	mkPod(t, ns, "first", "node-1", "recount")
	assignments(t, ns, "first", "net1")
	time.Sleep(time.Second) // the first pod's recount done

	before := poolReconciles(t)
	start := time.Now()
	const pods = 60
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() { mkPod(t, ns, fmt.Sprintf("r%02d", i), fmt.Sprintf("node-%d", i%10), "recount") })
	}
	wg.Wait()
	for i := range pods {
		assignments(t, ns, fmt.Sprintf("r%02d", i), "net1")
	}
	eventually(t, 30*time.Second, "pool status exact", func() (bool, string) {
		st := poolStatus(t, "recount")
		return st.Used == pods+1, fmt.Sprintf("%+v", st)
	})
	took := time.Since(start)
	recounts := poolReconciles(t) - before
	// One recount per RecountDelay at most, each status write's own echo, and a few to spare.
	limit := int(took/server.RecountDelay) + int(took/server.StatusInterval) + 4
	t.Logf("%d allocations in %v: %d recounts (at most %d)", pods, took.Round(time.Millisecond), recounts, limit)
	if recounts > limit {
		t.Errorf("%d recounts of the pool for %d allocations in %v, want at most %d", recounts, pods, took, limit)
	}
}

// poolReconciles is how many reconciles the pool controller (of any server in this process) has finished.
func poolReconciles(t *testing.T) int {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "ippools" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return int(n)
}
