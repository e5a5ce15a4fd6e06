package plugin

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/selection"
)

// TestNADWithoutCNIVersionWorksAsUnderMultus: a NAD whose config names no cniVersion, which Multus accepts and
// the CNI libraries read as 0.1.0, attaches its network, and DEL removes it and frees its address also when the
// pod is gone (DEL from the cached result, which fails under Multus, multus-cni#476) or the cache is.
func TestNADWithoutCNIVersionWorksAsUnderMultus(t *testing.T) {
	for _, gone := range []string{"nothing", "pod", "cache"} {
		t.Run(gone+" gone", func(t *testing.T) {
			r := newRig(t, "1.0.0")
			r.nad("old-net", fmt.Sprintf(`{"type":"macvlan","master":"mvpar0","mode":"bridge","ipam":%s}`,
				r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1")), nil)
			p := r.pod("old", map[string]string{selection.NetworksAnnotation: "old-net"})
			if _, err := r.add(p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			net1 := addrs(t, p.netns, "net1")
			if len(net1) != 1 || !inRange(net1[0], "198.51.100.", 10, 99) {
				t.Fatalf("net1 addresses = %v, want one of 198.51.100.10-99 (host-local)", net1)
			}
			sts := r.status(p)
			if len(sts) != 2 || sts[1].Name != r.ns+"/old-net" || sts[1].Interface != "net1" || !cmp.Equal(sts[1].IPs, net1) {
				t.Errorf("network-status = %+v, want eth0's and net1's with %v", sts, net1)
			}
			if err := r.check(p); err != nil { // 0.1.0 predates CHECK: the network is skipped, the others checked
				t.Errorf("CHECK: %v", err)
			}
			switch gone {
			case "pod":
				obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: r.ns}}
				if err := suiteEnv.Client.Delete(t.Context(), obj, client.GracePeriodSeconds(0)); err != nil {
					t.Fatal(err)
				}
			case "cache":
				if err := os.RemoveAll(filepath.Join(r.dir, "cni")); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.del(p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			r.assertGone(p)
		})
	}
}
