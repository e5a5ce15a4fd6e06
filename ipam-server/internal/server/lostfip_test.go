package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A running pod's FloatingIP deleted by hand (kubectl delete floatingip) comes back with the same address:
// the pod has that address configured, and the pod's new incarnation does not take another. Before, the server
// gave the pod a second address it never configured, and the first went back to the pool while the pod still
// used it: after the cool-down, another pod got it too.
func TestFloatingIPDeletedByHandComesBackForItsPod(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "lost-v4", "192.0.2.0/29")
	mkNAD(t, ns, "n", "lost-v4")
	startServer(t, "")
	p := mkPod(t, ns, "p", "node-1", "n")
	before := addressesOf(assignments(t, ns, "p", "net1"), "net1")
	held := fips(t, "lost-v4")
	if len(held) != 1 {
		t.Fatalf("want one FloatingIP, got %d", len(held))
	}
	if err := k8s.Delete(context.Background(), &held[0]); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the FloatingIP is made again for p", func() (bool, string) {
		fs := fips(t, "lost-v4")
		var got, all []string
		for _, f := range fs {
			if f.Spec.PodUID == string(p.UID) {
				got = append(got, f.Spec.IP)
			}
			all = append(all, fmt.Sprintf("%s (%s, pod %s, %s, deleting %v)", f.Name, f.Spec.IP, f.Spec.Pod, f.Status.Phase, f.DeletionTimestamp != nil))
		}
		return len(fs) == 1 && len(got) == 1 && strings.HasPrefix(before, got[0]+"/"), strings.Join(all, "; ")
	})
	time.Sleep(time.Second)
	if after := addressesOf(assignments(t, ns, "p", "net1"), "net1"); after != before {
		t.Fatalf("p's assignment changed from %s to %s", before, after)
	}
	q := mkPod(t, ns, "q", "node-1", "n")
	defer deletePod(t, q)
	if got := addressesOf(assignments(t, ns, "q", "net1"), "net1"); got == before {
		t.Fatalf("q got %s, which p still uses", got)
	}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(p), p); err != nil {
		t.Fatal(err)
	}
	deletePod(t, p)
}
