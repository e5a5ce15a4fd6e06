package plugin

import (
	"fmt"
	"testing"

	"github.com/braid-cni/braid/crds/selection"
)

// TestDefaultNetworkOverride: as in Multus (parsePodNetworkAnnotation(netAnnot, conf.MultusNamespace)), a bare
// name in v1.multus-cni.io/default-network is a NAD of the Multus namespace (multusNamespace or
// clusterNetworkNamespace), not of the pod's; and namespace isolation, which guards the pod's own selections,
// does not apply to it: the cluster network is the administrator's, whichever one a pod asks for.
func TestDefaultNetworkOverride(t *testing.T) {
	r := newRig(t, "1.0.0")
	bridge := func(br, subnet string) string {
		return fmt.Sprintf(`{"cniVersion":"1.0.0","plugins":[{"type":"bridge","bridge":%q,"isGateway":true,
			"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q}]]}}]}`, br, r.ipamDir(), subnet)
	}
	multusNS := suiteEnv.Namespace(t)
	r.nadIn(multusNS, "alt", bridge("br1", "198.51.100.128/25"), nil)
	r.nad("alt", bridge("br2", "192.0.2.0/25"), nil) // the pod's namespace has a NAD of the same name
	r.setConf(map[string]any{"multusNamespace": multusNS, "namespaceIsolation": true})
	for i, ann := range []string{"alt", multusNS + "/alt"} {
		p := r.pod(fmt.Sprintf("override-%d", i), map[string]string{selection.DefaultNetworkAnnotation: ann})
		if _, err := r.add(p); err != nil {
			t.Fatalf("ADD with default-network %q: %v", ann, err)
		}
		if a := addrs(t, p.netns, "eth0"); len(a) != 1 || !inRange(a[0], "198.51.100.", 129, 254) {
			t.Errorf("default-network %q: eth0 = %v, want an address of %s/alt (198.51.100.128/25)", ann, a, multusNS)
		}
		if sts := r.status(p); len(sts) != 1 || sts[0].Name != multusNS+"/alt" || !sts[0].Default {
			t.Errorf("default-network %q: network-status = %+v, want eth0 on %s/alt, default", ann, sts, multusNS)
		}
		if err := r.del(p); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		r.assertGone(p)
	}
}
