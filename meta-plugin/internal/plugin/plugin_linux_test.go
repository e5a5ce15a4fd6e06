package plugin

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// inRange reports whether addr is one of the host-local range's addresses (last octet lo..hi).
func inRange(addr, prefix string, lo, hi int) bool {
	rest, ok := strings.CutPrefix(addr, prefix)
	if !ok {
		return false
	}
	var n int
	_, err := fmt.Sscanf(rest, "%d", &n)
	return err == nil && n >= lo && n <= hi
}

func mac(t *testing.T, n ns.NetNS, ifName string) string {
	t.Helper()
	l, ok := links(t, n)[ifName]
	if !ok {
		t.Fatalf("no %s in the pod", ifName)
	}
	return l.Attrs().HardwareAddr.String()
}

// standardPod asks for net-a (host-local), net-b (static address and MAC from the annotation) and disk-net
// (on-disk conf) under the custom name data0, which takes the pod's IPv4 default route.
const standardSelection = `[{"name":"net-a"},
	{"name":"net-b","ips":["198.51.100.200/24"],"mac":"02:00:00:00:02:00"},
	{"name":"disk-net","interface":"data0","default-route":["192.0.2.1"]}]`

// assertGone checks that nothing of the pod is left: no interface in its namespace, no address reserved, no
// cache file, no veth left on the host.
func (r *rig) assertGone(p *pod) {
	r.t.Helper()
	if ls := links(r.t, p.netns); len(ls) != 0 {
		r.t.Errorf("interfaces left in the pod: %v", keys(ls))
	}
	if f := r.ipamFiles(); len(f) != 0 {
		r.t.Errorf("addresses still reserved: %v", f)
	}
	if f := r.cacheFiles(); len(f) != 0 {
		r.t.Errorf("cache files left: %v", f)
	}
	for _, l := range r.hostLinks() {
		if strings.HasPrefix(l, "veth") {
			r.t.Errorf("host veth left: %s", l)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestAddAttachesEveryNetworkAndDelRemovesThem(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			r := newRig(t, v)
			r.standardNADs()
			p := r.pod("web", map[string]string{selection.NetworksAnnotation: standardSelection})

			r.apiCalls.Store(0)
			res, err := r.add(p)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if n := r.apiCalls.Load(); n > 2+3 {
				t.Errorf("ADD made %d API calls, want at most 2 + 3 NADs", n)
			}

			// The pod has the four interfaces with the right addresses and MACs.
			if got := keys(links(t, p.netns)); !cmp.Equal(got, []string{"data0", "eth0", "net1", "net2"}) {
				t.Fatalf("pod interfaces = %v, want data0 eth0 net1 net2", got)
			}
			eth0 := addrs(t, p.netns, "eth0")
			if len(eth0) != 2 || !slices.ContainsFunc(eth0, func(a string) bool { return inRange(a, "203.0.113.", 2, 254) }) ||
				!slices.ContainsFunc(eth0, func(a string) bool { return strings.HasPrefix(a, "2001:db8:1::") }) {
				t.Errorf("eth0 addresses = %v, want one of 203.0.113.0/24 and one of 2001:db8:1::/64", eth0)
			}
			if net1 := addrs(t, p.netns, "net1"); len(net1) != 1 || !inRange(net1[0], "198.51.100.", 10, 99) {
				t.Errorf("net1 addresses = %v, want one of 198.51.100.10-99 (host-local)", net1)
			}
			if net2 := addrs(t, p.netns, "net2"); !cmp.Equal(net2, []string{"198.51.100.200"}) {
				t.Errorf("net2 addresses = %v, want the requested 198.51.100.200", net2)
			}
			if m := mac(t, p.netns, "net2"); m != "02:00:00:00:02:00" {
				t.Errorf("net2 MAC = %s, want the requested 02:00:00:00:02:00", m)
			}
			if d := addrs(t, p.netns, "data0"); len(d) != 1 || !inRange(d[0], "192.0.2.", 10, 99) {
				t.Errorf("data0 addresses = %v, want one of 192.0.2.10-99 (on-disk conf)", d)
			}

			// The IPv4 default route moved to data0; IPv6's stays with the cluster network.
			routes := defaultRoutes(t, p.netns)
			if !slices.Contains(routes, "data0 via 192.0.2.1") || !slices.Contains(routes, "eth0 via 2001:db8:1::1") || len(routes) != 2 {
				t.Errorf("default routes = %v, want data0 via 192.0.2.1 and eth0 via 2001:db8:1::1 only", routes)
			}

			// The result is eth0's, without the IPv4 default route it no longer has.
			var resIfs []string
			for _, i := range res.Interfaces {
				if i.Sandbox != "" {
					resIfs = append(resIfs, i.Name)
				}
			}
			if !cmp.Equal(resIfs, []string{"eth0"}) {
				t.Errorf("result's pod interfaces = %v, want eth0", resIfs)
			}
			for _, rt := range res.Routes {
				if netstatus.IsDefault(rt.Dst) && rt.GW.To4() != nil {
					t.Errorf("result still has IPv4 default route %v", rt)
				}
			}

			// network-status: one entry per interface, exactly one default, facts that match the pod.
			sts := r.status(p)
			var names, ifs []string
			defaults := 0
			for _, s := range sts {
				names, ifs = append(names, s.Name), append(ifs, s.Interface)
				if s.Default {
					defaults++
				}
				if s.Interface != "" && s.MAC != mac(t, p.netns, s.Interface) {
					t.Errorf("status MAC of %s = %s, pod has %s", s.Interface, s.MAC, mac(t, p.netns, s.Interface))
				}
				if got := addrs(t, p.netns, s.Interface); !cmp.Equal(s.IPs, got) {
					t.Errorf("status IPs of %s = %v, pod has %v", s.Interface, s.IPs, got)
				}
			}
			wantNames := []string{"cbr0", r.ns + "/net-a", r.ns + "/net-b", r.ns + "/disk-net"}
			if !cmp.Equal(names, wantNames) || !cmp.Equal(ifs, []string{"eth0", "net1", "net2", "data0"}) {
				t.Errorf("status names %v interfaces %v, want %v on eth0 net1 net2 data0", names, ifs, wantNames)
			}
			if defaults != 1 || len(sts) != 4 || !sts[0].Default {
				t.Errorf("status has %d entries, %d default (want 4 and exactly one, eth0's)", len(sts), defaults)
			}
			if len(sts) == 4 && !cmp.Equal(sts[3].DefaultRoute, []string{"192.0.2.1"}) {
				t.Errorf("data0's default-route = %v, want [192.0.2.1]", sts[3].DefaultRoute)
			}

			// CHECK passes, DEL removes everything, a second DEL is a no-op.
			if err := r.check(p); err != nil {
				t.Errorf("CHECK after ADD: %v", err)
			}
			if err := r.del(p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			r.assertGone(p)
			if err := r.del(p); err != nil {
				t.Fatalf("second DEL: %v", err)
			}
		})
	}
}

func TestCommaFormDefaultNetworksAndOverride(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			r := newRig(t, v)
			r.standardNADs()
			r.nad("alt", fmt.Sprintf(`{"cniVersion":%q,"plugins":[{"type":"bridge","bridge":"br1","isGateway":true,"isDefaultGateway":true,
				"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"198.51.100.128/25"}]]}}]}`, v, r.ipamDir()), nil)
			r.setConf(map[string]any{"defaultNetworks": []string{r.ns + "/disk-net"}})
			p := r.pod("comma", map[string]string{
				selection.NetworksAnnotation:       " net-a , net-a@extra0",
				selection.DefaultNetworkAnnotation: r.ns + "/alt", // a bare name is the Multus namespace's (TestDefaultNetworkOverride)
			})
			if _, err := r.add(p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if got := keys(links(t, p.netns)); !cmp.Equal(got, []string{"eth0", "extra0", "net1", "net2"}) {
				t.Fatalf("interfaces = %v, want eth0 (alt), net1 (default network disk-net), net2 and extra0 (net-a twice)", got)
			}
			if a := addrs(t, p.netns, "eth0"); len(a) != 1 || !inRange(a[0], "198.51.100.", 129, 254) {
				t.Errorf("eth0 = %v, want an address of the per-pod default network alt", a)
			}
			if a := addrs(t, p.netns, "net1"); len(a) != 1 || !inRange(a[0], "192.0.2.", 10, 99) {
				t.Errorf("net1 = %v, want the default network disk-net", a)
			}
			sts := r.status(p)
			if len(sts) != 4 || sts[0].Name != r.ns+"/alt" || !sts[0].Default || sts[2].Name != r.ns+"/net-a" || sts[3].Interface != "extra0" {
				t.Errorf("status = %+v", sts)
			}
			if err := r.del(p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			r.assertGone(p)
		})
	}
}

func TestFailureOfThirdAttachmentRemovesTheFirstTwo(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			r := newRig(t, v)
			r.standardNADs()
			// The third attachment's parent does not exist.
			bad := strings.Replace(r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.100", "198.51.100.120", "198.51.100.1"), ""), "mvpar0", "absent0", 1)
			r.nad("net-missing-parent", bad, nil)
			p := r.pod("fails", map[string]string{selection.NetworksAnnotation: "net-a,net-missing-parent"})
			_, err := r.add(p)
			if err == nil {
				t.Fatal("ADD succeeded with a macvlan parent that does not exist")
			}
			if !strings.Contains(err.Error(), "net-missing-parent") || !strings.Contains(err.Error(), "networks[1]") || !strings.Contains(err.Error(), "rolled back 3") {
				t.Errorf("error %q does not name the network, its annotation element and the rollback", err)
			}
			r.assertGone(p)
			if sts := r.status(p); sts != nil {
				t.Errorf("network-status written for a failed ADD: %+v", sts)
			}
			r.assertEvent(p, "net-missing-parent")
			if err := r.del(p); err != nil {
				t.Errorf("DEL after a failed ADD: %v", err)
			}
		})
	}
}

func (r *rig) assertEvent(p *pod, want string) {
	r.t.Helper()
	var evs corev1.EventList
	if err := suiteEnv.Client.List(r.t.Context(), &evs, client.InNamespace(r.ns)); err != nil {
		r.t.Fatal(err)
	}
	for _, ev := range evs.Items {
		if ev.InvolvedObject.Name == p.name && ev.Reason == EventReason && ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, want) {
			return
		}
	}
	r.t.Errorf("no %s Warning event on pod %s mentioning %q (events: %+v)", EventReason, p.name, want, evs.Items)
}

func TestDelWithoutCacheOrPod(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			for _, tc := range []struct {
				name                   string
				dropCache, dropPod     bool
				extrasRemovedFromNetns bool
			}{
				{name: "cache deleted", dropCache: true, extrasRemovedFromNetns: true},
				{name: "pod deleted", dropPod: true, extrasRemovedFromNetns: true},
				{name: "cache and pod deleted", dropCache: true, dropPod: true},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := newRig(t, v)
					r.standardNADs()
					p := r.pod("gone", map[string]string{selection.NetworksAnnotation: standardSelection})
					if _, err := r.add(p); err != nil {
						t.Fatalf("ADD: %v", err)
					}
					if tc.dropCache {
						if err := os.RemoveAll(filepath.Join(r.dir, "cni")); err != nil {
							t.Fatal(err)
						}
					}
					if tc.dropPod {
						obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: r.ns}}
						if err := suiteEnv.Client.Delete(t.Context(), obj, client.GracePeriodSeconds(0)); err != nil {
							t.Fatal(err)
						}
					}
					if err := r.del(p); err != nil {
						t.Fatalf("DEL: %v", err)
					}
					if tc.extrasRemovedFromNetns {
						r.assertGone(p)
					} else {
						// With neither record nor pod, only the cluster network is known: it must be gone.
						if _, ok := links(t, p.netns)["eth0"]; ok {
							t.Error("eth0 left after DEL without cache and pod")
						}
						for _, l := range r.hostLinks() {
							if strings.HasPrefix(l, "veth") {
								t.Errorf("cluster network's host veth %s left", l)
							}
						}
					}
					if err := r.del(p); err != nil {
						t.Fatalf("second DEL: %v", err)
					}
				})
			}
		})
	}
}

func TestCheckNoticesARemovedInterface(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			r := newRig(t, v)
			r.standardNADs()
			p := r.pod("checked", map[string]string{selection.NetworksAnnotation: standardSelection})
			if _, err := r.add(p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if err := r.check(p); err != nil {
				t.Fatalf("CHECK of an intact pod: %v", err)
			}
			err := p.netns.Do(func(ns.NetNS) error {
				l, err := netlink.LinkByName("net2")
				if err != nil {
					return err
				}
				return netlink.LinkDel(l)
			})
			if err != nil {
				t.Fatal(err)
			}
			err = r.check(p)
			if err == nil || !strings.Contains(err.Error(), "net2") {
				t.Fatalf("CHECK after net2 was removed = %v, want an error naming net2", err)
			}
			if err := r.del(p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			r.assertGone(p)
		})
	}
}

func TestGCRemovesAttachmentsNotInTheValidList(t *testing.T) {
	r := newRig(t, "1.1.0") // GC exists from CNI 1.1 on
	r.standardNADs()
	keep := r.pod("keep", map[string]string{selection.NetworksAnnotation: "net-a"})
	stale := r.pod("stale", map[string]string{selection.NetworksAnnotation: "net-a,disk-net"})
	for _, p := range []*pod{keep, stale} {
		if _, err := r.add(p); err != nil {
			t.Fatalf("ADD %s: %v", p.name, err)
		}
	}
	// A leftover of a container braid has no record of: only libcni's cache knows it.
	orphan := filepath.Join(r.dir, "cni", "results", "net-a-c0ffee-net1")
	r.writeFile(orphan, `{"kind":"cniCacheV1","containerId":"c0ffee","config":"`+
		encodeB64(r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"), ""))+
		`","ifName":"net1","networkName":"net-a","result":{"cniVersion":"1.1.0"}}`)

	ageFiles(t, filepath.Join(r.dir, "cni", "attachments", stale.containerID+".json"))
	if err := r.gc(keep.containerID); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := keys(links(t, stale.netns)); len(got) != 0 {
		t.Errorf("stale container still has %v", got)
	}
	if got := keys(links(t, keep.netns)); !cmp.Equal(got, []string{"eth0", "net1"}) {
		t.Errorf("valid container has %v after GC, want eth0 net1", got)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan cache file survived GC: %v", err)
	}
	for _, f := range r.cacheFiles() {
		if strings.Contains(f, stale.containerID) {
			t.Errorf("stale container's cache file %s survived GC", f)
		}
	}
	if n := len(r.ipamFiles()); n != 3 {
		t.Errorf("%d addresses reserved after GC, want 3 (keep's eth0 v4+v6 and net1)", n)
	}
	r.setConf(nil)
	if err := r.del(keep); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	r.assertGone(keep)
}

func TestUndeclaredCapabilityFailsBeforeAnythingRuns(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			r := newRig(t, v)
			r.nad("plain", r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"), ""), nil)
			p := r.pod("wants-mac", map[string]string{selection.NetworksAnnotation: `[{"name":"plain","mac":"02:00:00:00:00:99"}]`})
			r.exec.reset()
			_, err := r.add(p)
			if cniCode(err) != CodeCapability || !strings.Contains(err.Error(), `"mac"`) || !strings.Contains(err.Error(), r.ns+"/plain") {
				t.Fatalf("ADD = %v, want code %d naming the capability and the network", err, CodeCapability)
			}
			if calls, _ := r.exec.reset(); len(calls) != 0 {
				t.Errorf("%d plugins ran although the request could not be honoured", len(calls))
			}
			r.assertGone(p)
			r.assertEvent(p, "mac")
		})
	}
}

func TestInvalidSelectionAndIsolationAreRefused(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.standardNADs()
	p := r.pod("bad-annotation", map[string]string{selection.NetworksAnnotation: `[{"name":"net-a","ips":["198.51.100.300"]}]`})
	_, err := r.add(p)
	if cniCode(err) != CodeSelection || !strings.Contains(err.Error(), "networks[0].ips[0]") {
		t.Errorf("ADD with a bad address = %v, want code %d naming networks[0].ips[0]", err, CodeSelection)
	}
	r.assertEvent(p, "networks[0].ips[0]")

	other := suiteEnv.Namespace(t)
	r.setConf(map[string]any{"namespaceIsolation": true, "globalNamespaces": "kube-system"})
	q := r.pod("crosses", map[string]string{selection.NetworksAnnotation: other + "/net-a"})
	_, err = r.add(q)
	if cniCode(err) != CodeNetwork || !strings.Contains(err.Error(), "namespace isolation") {
		t.Errorf("ADD across namespaces under isolation = %v, want code %d", err, CodeNetwork)
	}
	missing := r.pod("missing", map[string]string{selection.NetworksAnnotation: "no-such-net"})
	_, err = r.add(missing)
	if cniCode(err) != CodeNetwork || !strings.Contains(err.Error(), "no-such-net not found") {
		t.Errorf("ADD of a missing NAD = %v, want code %d", err, CodeNetwork)
	}
	for _, x := range []*pod{p, q, missing} {
		r.assertGone(x)
	}
}

func TestPodLookupChecksUID(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.setConf(map[string]any{"podLookupTimeoutSeconds": 1})
	p := r.pod("recreated", nil)
	p.uid = "00000000-0000-0000-0000-000000000000"
	_, err := r.add(p)
	if cniCode(err) != types.ErrTryAgainLater || !strings.Contains(err.Error(), "UID") {
		t.Fatalf("ADD for an old pod UID = %v, want code 11 about the UID", err)
	}
	r.assertGone(p)
}

func TestDeviceHandover(t *testing.T) {
	for _, v := range specVersions {
		t.Run(v, func(t *testing.T) {
			r := newRig(t, v)
			// The kubelet gave the pod a device; braid finds it through the PodResources API.
			r.sriovNetwork("vf")
			p := r.pod("vf", map[string]string{selection.NetworksAnnotation: "sriov-a"})
			r.exec.reset()
			if _, err := r.add(p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			calls, _ := r.exec.reset()
			got := lastCall(calls, func(c execCall) bool { return c.plugin == "macvlan" && c.command == "ADD" })
			if got == nil {
				t.Fatalf("macvlan ADD not run; calls %+v", calls)
			}
			rc, _ := got.stdin["runtimeConfig"].(map[string]any)
			devFile, _ := rc["CNIDeviceInfoFile"].(string)
			if got.stdin["deviceID"] != "0000:18:02.1" || rc["deviceID"] != "0000:18:02.1" || devFile == "" {
				t.Fatalf("delegate got deviceID %v, runtimeConfig %v; want the kubelet's device in both", got.stdin["deviceID"], rc)
			}
			if _, err := os.Stat(devFile); err != nil {
				t.Errorf("device-info file for the delegate: %v", err)
			}
			sts := r.status(p)
			if len(sts) != 2 || sts[1].DeviceInfo == nil || sts[1].DeviceInfo.Pci == nil || sts[1].DeviceInfo.Pci.PciAddress != "0000:18:02.1" {
				t.Errorf("status = %+v, want the device-info on net1", sts)
			}
			if err := r.del(p); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if _, err := os.Stat(devFile); !os.IsNotExist(err) {
				t.Errorf("device-info file left after DEL: %v", err)
			}
			r.assertGone(p)
		})
	}
}

// TestFailedAddLeavesNoDeviceInfo: braid copies every device-info file before the first network runs; when an
// earlier network fails, the copy for a later SR-IOV network that never ran goes too, and a DEL rebuilt from
// the pod (the rollback removed the record) removes a copy a crash could have left.
func TestFailedAddLeavesNoDeviceInfo(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.sriovNetwork("vfleak")
	bad := strings.Replace(r.macvlanConf(r.hostLocal("192.0.2.0/24", "192.0.2.100", "192.0.2.120", "192.0.2.1"), ""), "mvpar0", "absent0", 1)
	r.nad("net-missing-parent", bad, nil)
	copies := func() []string {
		m, _ := filepath.Glob(filepath.Join(r.dir, "devinfo", "cni", "*"))
		return m
	}
	p := r.pod("vfleak", map[string]string{selection.NetworksAnnotation: "net-missing-parent,sriov-a"})
	if _, err := r.add(p); err == nil {
		t.Fatal("ADD succeeded with a macvlan parent that does not exist")
	}
	if left := copies(); len(left) != 0 {
		t.Errorf("device-info copies left by a failed ADD: %v", left)
	}
	// A copy left behind by a crash between plan and the first network: DEL without a record removes it.
	if err := os.MkdirAll(filepath.Join(r.dir, "devinfo", "cni"), 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(r.dir, "devinfo", "cni", "sriov-a-"+p.containerID+"-net2-device.json")
	r.writeFile(stale, `{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:18:02.1"}}`)
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if left := copies(); len(left) != 0 {
		t.Errorf("device-info copies left after DEL: %v", left)
	}
	r.assertGone(p)
}

func TestStatus(t *testing.T) {
	r := newRig(t, "1.1.0")
	status := func() error {
		return r.hostNS.Do(func(ns.NetNS) error { return r.plugin.CmdStatus(&skel.CmdArgs{StdinData: r.stdin, Path: cniBinDir}) })
	}
	if err := status(); err != nil {
		t.Fatalf("STATUS of a ready node: %v", err)
	}
	r.setConf(map[string]any{"readinessindicatorfile": filepath.Join(r.dir, "absent")})
	if err := status(); cniCode(err) != types.ErrPluginNotAvailable {
		t.Errorf("STATUS without the readiness file = %v, want code 50", err)
	}
	r.setConf(map[string]any{"clusterNetwork": filepath.Join(r.dir, "empty.d")})
	if err := status(); cniCode(err) != types.ErrPluginNotAvailable {
		t.Errorf("STATUS without the cluster network = %v, want code 50", err)
	}
}

// TestStatusCoversDefaultNetworks: every ADD outside the system namespaces also attaches the defaultNetworks,
// so STATUS asks their plugins too (CNI 1.1: a plugin STATUSes the delegates its ADD relies on). A default
// network whose plugin is not installed, or that does not resolve, makes braid not ready (code 50).
func TestStatusCoversDefaultNetworks(t *testing.T) {
	r := newRig(t, "1.1.0")
	r.standardNADs()
	r.nad("uninstalled", `{"cniVersion":"1.1.0","type":"no-such-plugin"}`, nil)
	status := func() error {
		return r.hostNS.Do(func(ns.NetNS) error { return r.plugin.CmdStatus(&skel.CmdArgs{StdinData: r.stdin, Path: cniBinDir}) })
	}
	r.setConf(map[string]any{"defaultNetworks": []string{r.ns + "/net-a"}})
	if err := status(); err != nil {
		t.Fatalf("STATUS with a working default network: %v", err)
	}
	r.setConf(map[string]any{"defaultNetworks": []string{r.ns + "/net-a", r.ns + "/uninstalled"}})
	if err := status(); cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "defaultNetworks[1]") {
		t.Errorf("STATUS with a default network whose plugin is missing = %v, want code 50 naming defaultNetworks[1]", err)
	}
	r.setConf(map[string]any{"defaultNetworks": []string{r.ns + "/nowhere"}})
	if err := status(); cniCode(err) != types.ErrPluginNotAvailable || !strings.Contains(err.Error(), "defaultNetworks[0]") {
		t.Errorf("STATUS with a default network that does not exist = %v, want code 50 naming defaultNetworks[0]", err)
	}
}

func encodeB64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestUnsavableRecordLeavesNoDeviceInfo: when the attachment record cannot be written, ADD fails before any
// network runs, and the device-info copies plan made go with it.
func TestUnsavableRecordLeavesNoDeviceInfo(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.sriovNetwork("norecord")
	// A file where the records' directory should be: no record can be saved.
	if err := os.MkdirAll(filepath.Join(r.dir, "cni"), 0o700); err != nil {
		t.Fatal(err)
	}
	r.writeFile(filepath.Join(r.dir, "cni", "attachments"), "not a directory")
	p := r.pod("norecord", map[string]string{selection.NetworksAnnotation: "sriov-a"})
	if _, err := r.add(p); err == nil {
		t.Fatal("ADD succeeded without a record")
	}
	if left, _ := filepath.Glob(filepath.Join(r.dir, "devinfo", "cni", "*")); len(left) != 0 {
		t.Errorf("device-info copies left by an ADD whose record could not be saved: %v", left)
	}
}

// sriovNetwork makes the NAD sriov-a, an SR-IOV-like network (macvlan standing in for the sriov plugin) of
// resource example.com/sriov_a, and plays the device plugin and the kubelet for pod podName: VF 0000:18:02.1
// is allocated to it (PodResources API) and its device-info file written.
func (r *rig) sriovNetwork(podName string) {
	r.t.Helper()
	r.nad("sriov-a", r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"),
		`{"deviceID":true,"CNIDeviceInfoFile":true}`), map[string]string{"k8s.v1.cni.cncf.io/resourceName": "example.com/sriov_a"})
	sock := r.serveKubelet(podName, map[string][]string{"example.com/sriov_a": {"0000:18:02.1"}})
	r.setConf(map[string]any{"podResourcesSocket": sock})
	dp := filepath.Join(r.dir, "devinfo", "dp", "example.com-sriov_a-0000:18:02.1-device.json")
	if err := os.MkdirAll(filepath.Dir(dp), 0o755); err != nil {
		r.t.Fatal(err)
	}
	r.writeFile(dp, `{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:18:02.1","pf-pci-address":"0000:18:00.0"}}`)
}

// TestHostDeviceGetsTheKubeletsDeviceWithoutCapabilities: a Multus-style host-device NAD declares no
// capabilities, so the device reaches host-device only through "pciBusID" in its config, which Multus sets
// next to "deviceID". The test node has no such PCI device: ADD fails, but in host-device's search for the
// kubelet's device, not for want of a device in its config.
func TestHostDeviceGetsTheKubeletsDeviceWithoutCapabilities(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.nad("hostdev", `{"cniVersion":"1.0.0","type":"host-device"}`, map[string]string{"k8s.v1.cni.cncf.io/resourceName": "example.com/sriov_a"})
	r.setConf(map[string]any{"podResourcesSocket": r.serveKubelet("hd", map[string][]string{"example.com/sriov_a": {"0000:18:02.1"}})})
	p := r.pod("hd", map[string]string{selection.NetworksAnnotation: "hostdev"})
	r.exec.reset()
	_, err := r.add(p)
	if err == nil {
		t.Fatal("ADD succeeded without the PCI device on the node")
	}
	calls, _ := r.exec.reset()
	var got map[string]any
	for _, c := range calls {
		if c.plugin == "host-device" && c.command == "ADD" {
			got = c.stdin
		}
	}
	if got["pciBusID"] != "0000:18:02.1" || !strings.Contains(err.Error(), "0000:18:02.1") {
		t.Errorf("host-device got pciBusID %v and ADD failed with %q; want the kubelet's 0000:18:02.1 in both", got["pciBusID"], err)
	}
	if ls := links(t, p.netns); len(ls) != 0 {
		t.Errorf("interfaces left in the pod: %v", keys(ls))
	}
}

// lastCall is the last of calls that match, nil when none does.
func lastCall(calls []execCall, match func(execCall) bool) *execCall {
	var got *execCall
	for i := range calls {
		if match(calls[i]) {
			got = &calls[i]
		}
	}
	return got
}
