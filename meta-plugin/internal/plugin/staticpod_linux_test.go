package plugin

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/braid-cni/braid/crds/podid"
	"github.com/braid-cni/braid/crds/selection"
)

// TestStaticPodIsAttachedThroughItsMirror: the runtime names a static pod by the UID the kubelet gave it (the
// hash of its manifest), which the pod's mirror in the API carries in kubernetes.io/config.mirror, the mirror
// having another UID. braid finds the pod through its mirror, as Multus does: ADD attaches its networks and
// writes network-status on the mirror, and DEL removes them, from the record or, with the cache gone, from
// the mirror's networks.
func TestStaticPodIsAttachedThroughItsMirror(t *testing.T) {
	const staticUID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	for _, cacheGone := range []bool{false, true} {
		name := map[bool]string{false: "record", true: "cache gone"}[cacheGone]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, "1.0.0")
			r.setConf(map[string]any{"podLookupTimeoutSeconds": 2}) // a UID mismatch fails within it
			r.standardNADs()
			if r.node == "" {
				r.node = "node-1" // the API server refuses a mirror pod that is bound to no node
			}
			p := r.pod("etcd-node-1", map[string]string{selection.NetworksAnnotation: "net-a",
				podid.MirrorAnnotation: staticUID, "kubernetes.io/config.hash": staticUID, "kubernetes.io/config.source": "file"})
			p.uid = staticUID
			if _, err := r.add(p); err != nil {
				t.Fatalf("ADD of the static pod: %v", err)
			}
			if net1 := addrs(t, p.netns, "net1"); len(net1) != 1 || !inRange(net1[0], "198.51.100.", 10, 99) {
				t.Errorf("net1 addresses = %v, want one of 198.51.100.10-99", net1)
			}
			if names := statusNames(r, p); len(names) != 2 || names[1] != r.ns+"/net-a@net1" {
				t.Errorf("network-status on the mirror = %v, want eth0's and net-a@net1", names)
			}
			if cacheGone {
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
