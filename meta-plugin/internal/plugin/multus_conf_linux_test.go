package plugin

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestNamedNetworksFallBackToConfDir: as in Multus (getNetDelegate), a clusterNetwork or defaultNetworks entry
// that names no NAD is the conf in confDir whose CNI name it is ("clusterNetwork": "k8s-pod-network" with
// Calico's conf), and braid's own conf is never that conf, whatever its name. A name that is neither is an
// error naming the field and both places braid looked in.
func TestNamedNetworksFallBackToConfDir(t *testing.T) {
	r := newRig(t, "1.0.0")
	confDir := filepath.Join(r.dir, "net.d")
	// braid's own conf comes first and carries the name too: it must be passed over.
	r.writeFile(filepath.Join(confDir, "00-braid.conf"), `{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"braid-shim"}`)
	r.writeFile(filepath.Join(confDir, "10-k8s.conflist"), fmt.Sprintf(`{"cniVersion":"1.0.0","name":"k8s-pod-network",
		"plugins":[{"type":"bridge","bridge":"br5","isGateway":true,"ipam":{"type":"host-local","dataDir":%q,
		"ranges":[[{"subnet":"198.51.100.0/25"}]]}}]}`, r.ipamDir()))
	r.writeFile(filepath.Join(confDir, "30-mgmt.conf"), fmt.Sprintf(`{"cniVersion":"1.0.0","name":"mgmt-net","type":"macvlan",
		"master":"mvpar0","mode":"bridge","ipam":%s}`, r.hostLocal("192.0.2.0/24", "192.0.2.10", "192.0.2.99", "192.0.2.1")))
	r.setConf(map[string]any{"clusterNetwork": "k8s-pod-network", "defaultNetworks": []string{"mgmt-net"}})

	p := r.pod("fallback", nil)
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD with clusterNetwork and defaultNetworks naming confs in confDir: %v", err)
	}
	if a := addrs(t, p.netns, "eth0"); len(a) != 1 || !inRange(a[0], "198.51.100.", 1, 126) {
		t.Errorf("eth0 = %v, want an address of k8s-pod-network (198.51.100.0/25)", a)
	}
	if a := addrs(t, p.netns, "net1"); len(a) != 1 || !inRange(a[0], "192.0.2.", 10, 99) {
		t.Errorf("net1 = %v, want an address of mgmt-net (192.0.2.10-99)", a)
	}
	names := statusNames(r, p)
	if want := []string{"k8s-pod-network@eth0", "mgmt-net@net1"}; !cmp.Equal(names, want) {
		t.Errorf("network-status = %v, want %v", names, want)
	}
	if err := r.check(p); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	r.assertGone(p)

	for field, c := range map[string]map[string]any{
		"clusterNetwork":     {"clusterNetwork": "nowhere"},
		"defaultNetworks[0]": {"defaultNetworks": []string{"nowhere"}},
	} {
		r.setConf(c)
		p := r.pod("missing-"+strings.ToLower(strings.Trim(field, "[0]")), nil)
		_, err := r.add(p)
		want := fmt.Sprintf(`%s: "nowhere" is neither a network-attachment-definition (kube-system/nowhere not found) nor the name of a conf in %s (confDir)`, field, confDir)
		if cniCode(err) != CodeNetwork || err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ADD with %s naming nothing: %v, want code %d with %q", field, err, CodeNetwork, want)
		}
		r.assertGone(p)
	}
}

// TestDelegatesAfterTheFirstAreNetworksOfEveryPod: as in Multus, "delegates": [A, B] makes A the cluster
// network and B a network of every pod, here after the defaultNetworks; B was silently ignored before.
func TestDelegatesAfterTheFirstAreNetworksOfEveryPod(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.standardNADs()
	cluster := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"cbr5","plugins":[{"type":"bridge","bridge":"br5","isGateway":true,
		"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"203.0.113.0/25"}]]}}]}`, r.ipamDir())
	storage := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"storage","type":"macvlan","master":"mvpar0","mode":"bridge","ipam":%s}`,
		r.hostLocal("192.0.2.0/24", "192.0.2.100", "192.0.2.120", "192.0.2.1"))
	r.setConf(map[string]any{"clusterNetwork": nil, "defaultNetworks": []string{r.ns + "/net-a"},
		"delegates": []json.RawMessage{json.RawMessage(cluster), json.RawMessage(storage)}})

	p := r.pod("delegates", nil)
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if got := keys(links(t, p.netns)); !cmp.Equal(got, []string{"eth0", "net1", "net2"}) {
		t.Fatalf("pod interfaces = %v, want eth0 (delegates[0]), net1 (defaultNetworks[0]), net2 (delegates[1])", got)
	}
	if a := addrs(t, p.netns, "net2"); len(a) != 1 || !inRange(a[0], "192.0.2.", 100, 120) {
		t.Errorf("net2 = %v, want an address of delegates[1] (192.0.2.100-120)", a)
	}
	names := statusNames(r, p)
	if want := []string{"cbr5@eth0", r.ns + "/net-a@net1", "storage@net2"}; !cmp.Equal(names, want) {
		t.Errorf("network-status = %v, want %v", names, want)
	}
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	r.assertGone(p)
}

// statusNames lists the pod's network-status entries as name@interface.
func statusNames(r *rig, p *pod) []string {
	var names []string
	for _, s := range r.status(p) {
		names = append(names, s.Name+"@"+s.Interface)
	}
	return names
}

// TestClusterNetworkNADGetsItsDevice: as in Multus (getNetDelegate hands the resource map to
// getKubernetesDelegate), a clusterNetwork NAD with k8s.v1.cni.cncf.io/resourceName gets the pod's device of
// that resource in "deviceID" of its config, so that an SR-IOV cluster network finds its VF.
func TestClusterNetworkNADGetsItsDevice(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.sriovNetwork("vf-master")
	var c map[string]any
	if err := json.Unmarshal(r.stdin, &c); err != nil {
		t.Fatal(err)
	}
	r.setConf(map[string]any{"clusterNetwork": r.ns + "/sriov-a", "podResourcesSocket": c["podResourcesSocket"]})
	p := r.pod("vf-master", nil)
	r.exec.reset()
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	calls, _ := r.exec.reset()
	got := lastCall(calls, func(c execCall) bool { return c.plugin == "macvlan" && c.command == "ADD" && c.ifName == "eth0" })
	if got == nil {
		t.Fatalf("macvlan ADD on eth0 not run; calls %+v", calls)
	}
	if got.stdin["deviceID"] != "0000:18:02.1" {
		t.Errorf("the cluster network's delegate got deviceID %v, want the kubelet's device 0000:18:02.1", got.stdin["deviceID"])
	}
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	r.assertGone(p)
}
