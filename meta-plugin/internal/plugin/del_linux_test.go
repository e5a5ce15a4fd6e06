package plugin

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/selection"
)

// delCalls returns "COMMAND plugin ifName" of the delegates that ran since the last call.
func (r *rig) delCalls() []string {
	var out []string
	for _, c := range mustCalls(r) {
		out = append(out, c.command+" "+c.plugin+" "+c.ifName)
	}
	return out
}

// clusterDir moves the cluster network's conf into a directory of its own and points braid's conf at it; it
// returns the conf's new path.
func (r *rig) clusterDir() string {
	r.t.Helper()
	dir := filepath.Join(r.dir, "cluster.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Fatal(err)
	}
	b, err := os.ReadFile(r.confPath)
	if err != nil {
		r.t.Fatal(err)
	}
	conf := filepath.Join(dir, "10-cbr0.conflist")
	r.writeFile(conf, string(b))
	r.setConf(map[string]any{"clusterNetwork": dir})
	return conf
}

// TestDelRebuiltWithoutTheClusterNetworksConf: braid's record is unreadable and the cluster network's conf is
// gone from its directory, so DEL rebuilds the extras from the pod and takes eth0 from libcni's cache alone.
// Every attachment is deleted exactly once, in reverse order, eth0 included.
func TestDelRebuiltWithoutTheClusterNetworksConf(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.standardNADs()
	conf := r.clusterDir()
	p := r.pod("rebuilt", map[string]string{selection.NetworksAnnotation: "net-a,disk-net,net-a"})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r.writeFile(filepath.Join(r.dir, "cni", "attachments", p.containerID+".json"), "{garbage")
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	r.exec.reset()
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	want := []string{"DEL macvlan net3", "DEL macvlan net2", "DEL macvlan net1", "DEL bridge eth0"}
	if diff := cmp.Diff(want, r.delCalls()); diff != "" {
		t.Errorf("DEL's delegate calls (-want +got):\n%s", diff)
	}
	r.assertGone(p)
}

// TestGCRemovesACorruptRecord: a container's record is garbage and the runtime no longer lists the container.
// GC tears the container down as DEL does without a record (from libcni's cache, which also gives its netns and
// CNI_ARGS, and the pod) and removes the record, so the next GC has nothing left to complain about.
func TestGCRemovesACorruptRecord(t *testing.T) {
	r := newRig(t, "1.1.0") // GC exists from CNI 1.1 on
	r.standardNADs()
	p := r.pod("corrupt", map[string]string{selection.NetworksAnnotation: "net-a,disk-net"})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	record := filepath.Join(r.dir, "cni", "attachments", p.containerID+".json")
	r.writeFile(record, "{garbage")
	for i := range 2 {
		if err := r.gc(); err != nil {
			t.Fatalf("GC %d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("corrupt record survived GC: %v", err)
	}
	r.assertGone(p)
}

// TestDelFromLibcnisCacheAloneRemovesDeviceInfo: braid's record is gone and so is the pod, so DEL knows the
// SR-IOV network only from libcni's cache. The device-info copy braid made for it goes too (its path is in the
// cached runtimeConfig). Before, DEL removed the interface and left the copy behind for good.
func TestDelFromLibcnisCacheAloneRemovesDeviceInfo(t *testing.T) {
	r := newRig(t, "1.0.0")
	p, copies := addVFAndLoseTheRecord(t, r, "vf-cached")
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: r.ns}}
	if err := suiteEnv.Client.Delete(t.Context(), obj, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if left := copies(); len(left) != 0 {
		t.Errorf("device-info copies left after DEL: %v", left)
	}
	r.assertGone(p)
}

// TestDelRebuiltFromThePodKeepsItsCNIArgsAndDevice: braid's record and libcni's cache are gone, so DEL rebuilds
// the network from the pod. Its delegates get the config ADD gave them: the pod's cni-args in "args", and the
// device the pod names in "deviceID" and "pciBusID" (host-device finds the device to give back only there).
// Before, DEL ran the NAD's bare config, without either.
func TestDelRebuiltFromThePodKeepsItsCNIArgsAndDevice(t *testing.T) {
	r := newRig(t, "1.0.0")
	r.standardNADs()
	p := r.pod("cniargs", map[string]string{selection.NetworksAnnotation: `[{"name":"net-a","cni-args":{"role":"probe"},"deviceID":"0000:18:02.5"}]`})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(r.dir, "cni")); err != nil {
		t.Fatal(err)
	}
	r.exec.reset()
	if err := r.del(p); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	calls, _ := r.exec.reset()
	var got map[string]any
	for _, c := range calls {
		if c.plugin == "macvlan" && c.command == "DEL" {
			got = c.stdin
		}
	}
	args, _ := got["args"].(map[string]any)
	cni, _ := args["cni"].(map[string]any)
	if cni["role"] != "probe" || got["deviceID"] != "0000:18:02.5" || got["pciBusID"] != "0000:18:02.5" {
		t.Errorf("macvlan's DEL got args %v, deviceID %v, pciBusID %v; want the pod's cni-args and device as ADD had them",
			got["args"], got["deviceID"], got["pciBusID"])
	}
	r.assertGone(p)
}

// addVFAndLoseTheRecord adds a pod with an SR-IOV network, checks that braid copied its device-info file, and
// deletes braid's record of the container, so that only libcni's cache knows the attachments. copies lists the
// device-info copies.
func addVFAndLoseTheRecord(t *testing.T, r *rig, name string) (p *pod, copies func() []string) {
	t.Helper()
	r.sriovNetwork(name)
	p = r.pod(name, map[string]string{selection.NetworksAnnotation: "sriov-a"})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	copies = func() []string {
		m, _ := filepath.Glob(filepath.Join(r.dir, "devinfo", "cni", "*"))
		return m
	}
	if len(copies()) != 1 {
		t.Fatalf("device-info copies after ADD: %v, want one", copies())
	}
	if err := os.Remove(filepath.Join(r.dir, "cni", "attachments", p.containerID+".json")); err != nil {
		t.Fatal(err)
	}
	return p, copies
}
