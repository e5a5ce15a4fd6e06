package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/meta-plugin/internal/cache"
)

// TestGCSparesContainersAttachedBeforeBraid: a pod that Multus attached before braid replaced it (its own
// libcni cache, no braid record) keeps running, and the runtime lists it as valid. braid's GC must not tell
// the cluster network's plugins, or a NAD's, that its attachments are stale: a plugin that implements GC (the
// reference plugins do not yet) would free its addresses while the pod uses them. Before, the cluster
// network's GC listed only the containers braid has records of, and net-a's too.
// The cluster network's GC now lists every attachment the runtime gave (braid attaches it on the runtime's
// interface); a NAD's network, whose attachments of that pod braid cannot know, gets no plugin GC.
func TestGCSparesContainersAttachedBeforeBraid(t *testing.T) {
	r := newRig(t, "1.1.0")
	r.standardNADs()
	own := r.pod("by-braid", map[string]string{selection.NetworksAnnotation: "net-a"})
	if _, err := r.add(own); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	foreign := r.pod("by-multus", map[string]string{selection.NetworksAnnotation: "net-a"})
	r.attachOutsideBraid(foreign)
	before := r.ipamFiles()
	if len(before) != 6 {
		t.Fatalf("%d addresses reserved before GC, want 6 (eth0 v4+v6 and net1 of each pod)", len(before))
	}

	r.exec.reset()
	if err := r.gc(own.containerID, foreign.containerID); err != nil {
		t.Fatalf("GC: %v", err)
	}
	calls, _ := r.exec.reset()
	var gcs []string
	for _, c := range calls {
		if c.command != "GC" {
			continue
		}
		gcs = append(gcs, c.plugin)
		valid, _ := json.Marshal(c.stdin["cni.dev/valid-attachments"])
		if c.plugin != "bridge" || !strings.Contains(string(valid), foreign.containerID) || !strings.Contains(string(valid), own.containerID) {
			t.Errorf("GC of %s (network %v) with valid attachments %s: want only the cluster network's, listing both pods", c.plugin, c.stdin["name"], valid)
		}
	}
	if !slices.Equal(gcs, []string{"bridge"}) {
		t.Errorf("plugins GC ran on: %v, want the cluster network's bridge", gcs)
	}
	if after := r.ipamFiles(); !slices.Equal(after, before) {
		t.Errorf("addresses reserved after GC: %v, want all of %v", after, before)
	}
	if got := keys(links(t, foreign.netns)); !slices.Equal(got, []string{"eth0", "net1"}) {
		t.Errorf("the pod braid did not attach has %v after GC, want eth0 net1", got)
	}
}

// attachOutsideBraid attaches the cluster network on eth0 and net-a on net1 to the pod the way Multus did before
// braid: the same delegates and network names, with libcni's cache in Multus' own directory.
func (r *rig) attachOutsideBraid(p *pod) {
	r.t.Helper()
	cni := libcni.NewCNIConfigWithCacheDir([]string{cniBinDir}, filepath.Join(r.dir, "multus-cache"), nil)
	master, err := libcni.ConfListFromFile(r.confPath)
	if err != nil {
		r.t.Fatal(err)
	}
	extra, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":"net-a","plugins":[%s]}`, r.version,
		r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"), ""))))
	if err != nil {
		r.t.Fatal(err)
	}
	err = r.hostNS.Do(func(ns.NetNS) error {
		for i, list := range []*libcni.NetworkConfigList{master, extra} {
			rt := &libcni.RuntimeConf{ContainerID: p.containerID, NetNS: p.netns.Path(), IfName: []string{"eth0", "net1"}[i]}
			if _, err := cni.AddNetworkList(context.Background(), list, rt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("attach %s outside braid: %v", p.name, err)
	}
}

// TestGCLeavesAContainerAddedMomentsAgo: the runtime's list of valid attachments is taken before GC runs, so a
// container whose ADD runs meanwhile is missing from it. GC leaves a container whose record is younger than
// gcGrace, and its cached attachments, for a later GC; an older one goes. Before, GC deleted the pod just
// added (after its ADD, with the daemon's per-container lock), and a temporary record left by an interrupted
// save stayed forever.
func TestGCLeavesAContainerAddedMomentsAgo(t *testing.T) {
	r := newRig(t, "1.1.0")
	r.standardNADs()
	p := r.pod("young", map[string]string{selection.NetworksAnnotation: "net-a"})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	leftover := filepath.Join(r.dir, "cni", "attachments", ".c0ffee.123456")
	r.writeFile(leftover, `{"containerID":"c0ffee"`)
	gc := func() {
		t.Helper()
		if err := r.gc(); err != nil {
			t.Fatalf("GC: %v", err)
		}
	}
	gc()
	if got := keys(links(t, p.netns)); !slices.Equal(got, []string{"eth0", "net1"}) {
		t.Fatalf("the container added moments ago has %v after GC, want eth0 net1", got)
	}
	if n := len(r.ipamFiles()); n != 3 {
		t.Errorf("%d addresses reserved after GC, want the young container's 3", n)
	}
	if _, err := os.Stat(leftover); err != nil {
		t.Errorf("a temporary record moments old: %v, want it left (its save may be running)", err)
	}

	ageFiles(t, filepath.Join(r.dir, "cni", "attachments", p.containerID+".json"), leftover)
	gc()
	r.assertGone(p)
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("an old temporary record survived GC: %v", err)
	}
}

// TestGCDeletesAStaleAttachmentWithItsOwnConf: two NADs whose confs carry the same network name (a copied
// conf) are one network to libcni's cache. A stale attachment braid has no record of (only libcni's cache
// knows it) is deleted with the conf it was added with, and each conf's plugins get the network's GC. Before,
// GC used the first cached conf of the name for every attachment of it: another NAD's plugins, with another
// NAD's IPAM, were told to delete it.
func TestGCDeletesAStaleAttachmentWithItsOwnConf(t *testing.T) {
	r := newRig(t, "1.1.0")
	named := func(subnet, first, last, gw string) string {
		return `{"name":"shared",` + r.macvlanConf(r.hostLocal(subnet, first, last, gw), "")[1:]
	}
	r.nad("red", named("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"), nil)
	blue := named("192.0.2.0/24", "192.0.2.10", "192.0.2.99", "192.0.2.1")
	p := r.pod("red-pod", map[string]string{selection.NetworksAnnotation: "red"})
	if _, err := r.add(p); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	// A leftover of blue's, sorting after the red pod's cache entry ("cz..." after "c<hex>").
	r.writeFile(filepath.Join(r.dir, "cni", "results", "shared-czz-net1"), `{"kind":"cniCacheV1","containerId":"czz","config":"`+
		encodeB64(blue)+`","ifName":"net1","networkName":"shared","result":{"cniVersion":"1.1.0"}}`)

	r.exec.reset()
	if err := r.gc(p.containerID); err != nil {
		t.Fatalf("GC: %v", err)
	}
	calls, _ := r.exec.reset()
	var dels, gcs []string
	for _, c := range calls {
		subnet := "?"
		if ipam, ok := c.stdin["ipam"].(map[string]any); ok {
			ranges, _ := json.Marshal(ipam["ranges"])
			subnet = string(ranges)
		}
		switch c.command {
		case "DEL":
			dels = append(dels, c.plugin+" "+c.ifName+" "+subnet)
		case "GC":
			if c.stdin["name"] == "shared" {
				gcs = append(gcs, subnet)
			}
		}
	}
	if len(dels) != 1 || !strings.Contains(dels[0], "192.0.2.0/24") {
		t.Errorf("DEL calls: %v, want one, of the stale attachment with blue's conf (192.0.2.0/24)", dels)
	}
	if len(gcs) != 2 || strings.Contains(gcs[0], "192.0.2.0") == strings.Contains(gcs[1], "192.0.2.0") {
		t.Errorf("GC calls of network shared: %v, want one with each conf", gcs)
	}
	if got := keys(links(t, p.netns)); !slices.Equal(got, []string{"eth0", "net1"}) {
		t.Errorf("the valid pod has %v after GC, want eth0 net1", got)
	}
}

// gc runs braid's GC from the host namespace, as the runtime does, with the containers' eth0 as the valid
// attachments (none: nothing is valid any more). The list stays in braid's conf.
func (r *rig) gc(valid ...string) error {
	list := []map[string]string{}
	for _, id := range valid {
		list = append(list, map[string]string{"containerID": id, "ifname": "eth0"})
	}
	r.setConf(map[string]any{"cni.dev/valid-attachments": list})
	args := &skel.CmdArgs{StdinData: r.stdin, Path: cniBinDir}
	return r.hostNS.Do(func(ns.NetNS) error { return r.plugin.CmdGC(args) })
}

// TestGCLeavesAContainerAddedWhileItRuns: GC goes through braid's records first and reads libcni's cache
// after removing the stale containers, which takes a while. A container whose ADD ran in between (not in the
// runtime's list, no record when GC listed them) is as young as one GC finds a record of: it stays. Before, GC
// found only its cached attachments and deleted them as stale, under the running pod.
func TestGCLeavesAContainerAddedWhileItRuns(t *testing.T) {
	r := newRig(t, "1.1.0")
	r.standardNADs()
	stale := addStalePod(t, r)
	young := r.pod("young", map[string]string{selection.NetworksAnnotation: "net-a"})
	gcWhileAdding(t, r, stale.containerID, young)
	if ls := links(t, stale.netns); len(ls) != 0 {
		t.Errorf("the stale pod has %v after GC, want nothing", keys(ls))
	}
	expectAddedDuringGC(t, r, young)
}

// gcWhileAdding runs GC, and pod's ADD when GC's DEL of container reaches its first delegate: an ADD that runs
// while GC collects. Either failing fails the test.
func gcWhileAdding(t *testing.T, r *rig, container string, pod *pod) {
	t.Helper()
	var addErr error
	addOnce := sync.OnceFunc(func() { _, addErr = r.add(pod) })
	r.exec.setHook(func(_ context.Context, environ []string) error {
		if slices.Contains(environ, "CNI_COMMAND=DEL") && slices.Contains(environ, "CNI_CONTAINERID="+container) {
			addOnce()
		}
		return nil
	})
	defer r.exec.setHook(nil)
	if err := r.gc(); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if addErr != nil {
		t.Fatalf("ADD of %s during GC: %v", pod.name, addErr)
	}
}

// expectAddedDuringGC: the pod added while GC ran keeps its interfaces and its three addresses.
func expectAddedDuringGC(t *testing.T, r *rig, young *pod) {
	t.Helper()
	if got := keys(links(t, young.netns)); !slices.Equal(got, []string{"eth0", "net1"}) {
		t.Errorf("the pod added during GC has %v after it, want eth0 net1", got)
	}
	if n := len(r.ipamFiles()); n != 3 {
		t.Errorf("%d addresses reserved after GC, want the young pod's 3", n)
	}
}

// TestGCLeavesAContainerAddedWhileItCollects: a container whose ADD runs while GC deletes the stale attachments
// only libcni's cache knows (after GC read that cache) is as young as any GC leaves. Before, the networks' GC
// (libcni's GCNetworkList, which reads the cache again and deletes every attachment of the network not in the
// list it is given) deleted the young container's eth0 and net1 under the running pod, and freed their addresses.
func TestGCLeavesAContainerAddedWhileItCollects(t *testing.T) {
	r := newRig(t, "1.1.0")
	r.standardNADs()
	master, err := os.ReadFile(r.confPath)
	if err != nil {
		t.Fatal(err)
	}
	// A leftover of a container braid has no record of: only libcni's cache knows it.
	if err := os.MkdirAll(filepath.Join(r.dir, "cni", "results"), 0o700); err != nil {
		t.Fatal(err)
	}
	r.writeFile(filepath.Join(r.dir, "cni", "results", "cbr0-c0ffee-eth0"), `{"kind":"cniCacheV1","containerId":"c0ffee","config":"`+
		encodeB64(string(master))+`","ifName":"eth0","networkName":"cbr0","result":{"cniVersion":"1.1.0"}}`)
	young := r.pod("young", map[string]string{selection.NetworksAnnotation: "net-a"})
	gcWhileAdding(t, r, "c0ffee", young)
	expectAddedDuringGC(t, r, young)
	for _, f := range r.cacheFiles() {
		if strings.Contains(f, "c0ffee") {
			t.Errorf("the leftover's cache file %s survived GC", f)
		}
	}
}

// TestGCRemovesTheDeviceInfoOfAStaleAttachmentOnlyTheCacheKnows: a stale container whose record is gone is known
// to GC only from libcni's cache. GC deletes its SR-IOV attachment and the device-info copy braid made for it.
// Before, the interface went and the copy under devinfo/cni stayed for good.
func TestGCRemovesTheDeviceInfoOfAStaleAttachmentOnlyTheCacheKnows(t *testing.T) {
	r := newRig(t, "1.1.0")
	p, copies := addVFAndLoseTheRecord(t, r, "vf-stale")
	if err := r.gc(); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if left := copies(); len(left) != 0 {
		t.Errorf("device-info copies left after GC: %v", left)
	}
	r.assertGone(p)
}

// TestGCTellsThePluginsOfAContainerWhoseADDRuns: a container's ADD saves its record, then runs the cluster
// network's plugins; libcni caches the result only when they are done. A GC that reads libcni's cache in
// between, without the container in the runtime's list, must still list the container's attachment as valid
// to the cluster network's plugins, or a plugin that implements GC (an IPAM) frees what the ADD is setting up.
// Before, only records that existed when GC listed them, and cached attachments, counted.
func TestGCTellsThePluginsOfAContainerWhoseADDRuns(t *testing.T) {
	r := newRig(t, "1.1.0")
	r.standardNADs()
	stale := addStalePod(t, r)
	master, err := os.ReadFile(r.confPath)
	if err != nil {
		t.Fatal(err)
	}
	const young = "cadd1n9"
	saveOnce := sync.OnceFunc(func() {
		// What ADD saves before its first plugin runs.
		rec := &cache.Record{ContainerID: young, Attachments: []cache.Attachment{{Network: "cbr0", IfName: "eth0", Master: true, Config: master}}}
		if err := (cache.Store{Dir: filepath.Join(r.dir, "cni", "attachments")}).Save(rec); err != nil {
			t.Error(err)
		}
	})
	r.exec.setHook(func(_ context.Context, environ []string) error {
		if slices.Contains(environ, "CNI_COMMAND=DEL") && slices.Contains(environ, "CNI_CONTAINERID="+stale.containerID) {
			saveOnce() // the young container's ADD starts while GC removes the stale one
		}
		return nil
	})
	t.Cleanup(func() { r.exec.setHook(nil) })
	r.exec.reset()
	if err := r.gc(); err != nil {
		t.Fatalf("GC: %v", err)
	}
	calls, _ := r.exec.reset()
	var gcs int
	for _, c := range calls {
		if c.command != "GC" || c.plugin != "bridge" {
			continue
		}
		gcs++
		valid, _ := json.Marshal(c.stdin["cni.dev/valid-attachments"])
		if !strings.Contains(string(valid), young) {
			t.Errorf("the cluster network's GC got valid attachments %s, want the container whose ADD runs (%s)", valid, young)
		}
	}
	if gcs == 0 {
		t.Error("the cluster network's plugins got no GC")
	}
}

// addStalePod adds a pod on net-a whose record is older than GC's grace: GC may take it for a container the
// runtime no longer has.
func addStalePod(t *testing.T, r *rig) *pod {
	t.Helper()
	stale := r.pod("stale", map[string]string{selection.NetworksAnnotation: "net-a"})
	if _, err := r.add(stale); err != nil {
		t.Fatalf("ADD of the stale pod: %v", err)
	}
	ageFiles(t, filepath.Join(r.dir, "cni", "attachments", stale.containerID+".json"))
	return stale
}
