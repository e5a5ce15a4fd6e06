package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/deploy/local/demo"
	"github.com/braid-cni/braid/deploy/local/localcluster"
)

// What deploy/examples and deploy/local/overlay set up; keep in step with them.
const (
	demoNS   = "braid-demo"
	systemNS = "braid-system"
	mgmt     = demoNS + "/mgmt"
	control  = demoNS + "/control"
	data     = demoNS + "/data"
	// ipamServerReplicas is the local overlay's replica count.
	ipamServerReplicas = 1

	upTimeout   = 20 * time.Minute // a first run builds Kubernetes from source
	downTimeout = 5 * time.Minute
	podTimeout  = 4 * time.Minute
	poll        = time.Second
)

// pools are the example pools and the network each serves.
var pools = map[string]string{"mgmt": mgmt, "control-v4": control, "control-v6": control, "data": data}

// wantNetworks are the NADs each example workload attaches to, in order.
var wantNetworks = map[string][]string{"db": {mgmt, control, data}, "web": {mgmt, control}}

// env mirrors deploy/local/env.sh.
type env struct {
	localcluster.Paths
	repo, bin, state string
	c                client.Client
	in               demo.Inspector
	under            demo.Underlay
}

// TestBraidFromDeploy runs `make demo`'s script and then checks, on the cluster it leaves running, what the
// demo shows and what users rely on across restarts, outages and scaling. It leaves the cluster down.
func TestBraidFromDeploy(t *testing.T) {
	e := requireE2E(t)
	ctx, cancel := context.WithTimeout(t.Context(), upTimeout)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		if err := e.script(ctx, t, "down"); err != nil {
			t.Errorf("cleanup: demo.sh down: %v", err)
		}
	})
	// The demo's own proofs (pings on every network, switch counters) make it exit non-zero when they fail.
	if err := e.script(ctx, t); err != nil {
		t.Fatalf("demo.sh: %v", err)
	}
	e.c, _ = e.Client(t, nil)

	steps := []struct {
		name string
		fn   func(context.Context, *testing.T, *env)
	}{
		{"every example pod has its networks, reaches their peers, and no network's traffic crosses another", testDemo},
		{"a StatefulSet pod deleted comes back with the same addresses", testStatefulSetKeeps},
		{"a Deployment scaled 0 -> 20 -> 0 hands out 20 distinct addresses and takes every one back", testScale},
		{"while braid-ipam-server is down new pods wait, running pods are unaffected; then they start", testIPAMOutage},
		{"braid's DaemonSet pod restarted: running pods unaffected, new pods still attach", testDaemonSetRestart},
		{"everything scaled to 0: no FloatingIP left, every pool empty, every VF back on the node", testNoLeak},
	}
	for _, s := range steps {
		start := time.Now()
		ok := t.Run(s.name, func(t *testing.T) { s.fn(ctx, t, e) })
		t.Logf("%s: %s", s.name, time.Since(start).Round(time.Second))
		if !ok {
			return // each step starts from where the one before left the cluster
		}
	}

	t.Run("demo.sh down leaves no underlay, link or file behind", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		if err := e.script(ctx, t, "down"); err != nil {
			t.Fatal(err)
		}
		checkDemoGone(ctx, t, e)
	})
}

func requireE2E(t *testing.T) *env {
	t.Helper()
	p := localcluster.Require(t, "BRAID_E2E", "end-to-end test of braid installed from deploy/")
	e := &env{Paths: p, repo: p.Repo, bin: p.Bin, state: p.State}
	e.in = demo.Inspector{Run: demo.Exec, Crictl: filepath.Join(e.bin, "crictl"), CrictlConfig: filepath.Join(e.state, "crictl.yaml")}
	e.under = demo.Underlay{Nets: demo.Networks, Run: demo.Exec}
	return e
}

// script runs deploy/local/demo.sh with args, its output in the test log.
func (e *env) script(ctx context.Context, t *testing.T, args ...string) error {
	t.Helper()
	return e.Run(ctx, t, "demo.sh", e.Script("demo.sh"), args...)
}

// ---------------------------------------------------------------------------------------------------
// steps

func testDemo(ctx context.Context, t *testing.T, e *env) {
	pods := e.inspectApp(ctx, t, "db", 2)
	pods = append(pods, e.inspectApp(ctx, t, "web", 2)...)
	e.checkAttached(t, pods)
	e.checkPings(ctx, t, pods)
	counts, err := e.under.Counters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.CheckSeparation(counts, demo.Networks); err != nil {
		t.Errorf("networks not kept apart: %v (counters %v)", err, counts)
	}
	// Each db pod holds a VF of its own, and the node offers them all.
	vfs := map[string]bool{}
	for _, p := range pods {
		if a, ok := p.Attachment(data); ok {
			if vfs[a.PCIAddress] {
				t.Errorf("VF %s handed to two pods", a.PCIAddress)
			}
			vfs[a.PCIAddress] = true
		}
	}
	if len(vfs) != 2 {
		t.Errorf("db pods hold VFs %v, want 2 distinct", vfs)
	}

	// The server leads through its Lease and reports its pools on the metrics port (on the host's network,
	// port 18080, in the local overlay).
	var servers corev1.PodList
	if err := e.c.List(ctx, &servers, client.InNamespace(systemNS), client.MatchingLabels{"app.kubernetes.io/name": "braid-ipam-server"}); err != nil || len(servers.Items) != 1 {
		t.Fatalf("braid-ipam-server pods: %d, %v", len(servers.Items), err)
	}
	lease := &coordinationv1.Lease{}
	if err := e.c.Get(ctx, client.ObjectKey{Namespace: systemNS, Name: "braid-ipam-server"}, lease); err != nil {
		t.Errorf("leader Lease: %v", err)
	} else if h, r := lease.Spec.HolderIdentity, lease.Spec.RenewTime; h == nil || *h == "" || r == nil || time.Since(r.Time) > time.Minute {
		// (The holder is named after the pod's hostname, which is the node's on the host network.)
		t.Errorf("leader Lease not held and renewed: holder %v, renewed %v", h, r)
	}
	metrics, err := httpGet(ctx, "http://[::1]:18080/metrics")
	if err != nil {
		t.Errorf("braid-ipam-server metrics: %v", err)
	} else if !strings.Contains(metrics, `braid_ipam_pool_used{pool="data"} 2`) {
		t.Errorf("braid-ipam-server metrics do not count the data pool's 2 addresses:\n%s", metrics)
	}
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

func testStatefulSetKeeps(ctx context.Context, t *testing.T, e *env) {
	before := e.inspectPod(ctx, t, "db-0")
	old := &corev1.Pod{}
	if err := e.c.Get(ctx, client.ObjectKey{Namespace: demoNS, Name: "db-0"}, old); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	e.waitFor(ctx, t, podTimeout, "db-0 to come back as a new pod", func(ctx context.Context) (bool, error) {
		p := &corev1.Pod{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: demoNS, Name: "db-0"}, p); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return p.UID != old.UID && demo.PodReady(p), nil
	})
	after := e.inspectPod(ctx, t, "db-0")
	for _, nad := range wantNetworks["db"] {
		b, _ := before.Attachment(nad)
		a, ok := after.Attachment(nad)
		if !ok || !slices.Equal(sortedAddrs(a), sortedAddrs(b)) {
			t.Errorf("db-0 on %s: addresses %v before, %v after the restart", nad, sortedAddrs(b), sortedAddrs(a))
		}
	}
	e.checkPings(ctx, t, []demo.Pod{after})
}

func testScale(ctx context.Context, t *testing.T, e *env) {
	e.scale(ctx, t, "deployment", "web", 0)
	e.waitNoPods(ctx, t, "web")
	base := e.waitFloatingIPs(ctx, t, "web", 0)

	e.scale(ctx, t, "deployment", "web", 20)
	pods := e.inspectApp(ctx, t, "web", 20)
	e.checkAttached(t, pods)
	seen := map[netip.Addr]string{}
	for _, p := range pods {
		for _, a := range p.Attachments {
			if a.Default {
				continue
			}
			for _, addr := range sortedAddrs(a) {
				if other, dup := seen[addr]; dup {
					t.Errorf("%s is held by both %s and %s", addr, other, p.Name)
				}
				seen[addr] = p.Name
			}
		}
	}
	if len(seen) != 20*3 {
		t.Errorf("20 web pods hold %d addresses, want 60 (mgmt, control v4 and v6)", len(seen))
	}
	// Pool status is written in bursts a few seconds apart: wait for it to count the 20 pods.
	more := map[string]int64{"mgmt": 20, "control-v4": 20, "control-v6": 20, "data": 0}
	var used map[string]int64
	err := wait.PollUntilContextTimeout(ctx, poll, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		used = e.poolsUsedErr(ctx)
		for pool, n := range more {
			if used[pool]-base[pool] != n {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("pools used with 20 web pods %v, without %v: want %v more", used, base, more)
	}

	e.scale(ctx, t, "deployment", "web", 0)
	e.waitNoPods(ctx, t, "web")
	// Released addresses wait the pools' reuseCooldown (10s), then their FloatingIPs go.
	after := e.waitFloatingIPs(ctx, t, "web", 0)
	for pool := range pools {
		if after[pool] != base[pool] {
			t.Errorf("pool %s: used %d after scaling web back to 0, %d before scaling up", pool, after[pool], base[pool])
		}
	}
	e.scale(ctx, t, "deployment", "web", 2)
	e.inspectApp(ctx, t, "web", 2)
}

func testIPAMOutage(ctx context.Context, t *testing.T, e *env) {
	running := e.inspectApp(ctx, t, "web", 2)
	running = append(running, e.inspectApp(ctx, t, "db", 2)...)

	// The server is killed and stays away: no replica, its pods gone at once.
	e.scale(ctx, t, "deployment", "braid-ipam-server", 0)
	var servers corev1.PodList
	if err := e.c.List(ctx, &servers, client.InNamespace(systemNS), client.MatchingLabels{"app.kubernetes.io/name": "braid-ipam-server"}); err != nil {
		t.Fatal(err)
	}
	for i := range servers.Items {
		if err := e.c.Delete(ctx, &servers.Items[i], client.GracePeriodSeconds(0)); client.IgnoreNotFound(err) != nil {
			t.Fatal(err)
		}
	}
	e.waitFor(ctx, t, time.Minute, "braid-ipam-server's pods to be gone", func(ctx context.Context) (bool, error) {
		var l corev1.PodList
		err := e.c.List(ctx, &l, client.InNamespace(systemNS), client.MatchingLabels{"app.kubernetes.io/name": "braid-ipam-server"})
		return len(l.Items) == 0, err
	})

	e.scale(ctx, t, "deployment", "web", 3)
	var waiting *corev1.Pod
	e.waitFor(ctx, t, time.Minute, "the new web pod's sandbox to fail on braid-ipam", func(ctx context.Context) (bool, error) {
		p, err := e.newestPod(ctx, "web")
		if err != nil || p == nil {
			return false, err
		}
		waiting = p
		return e.hasEvent(ctx, p, "braid-ipam"), nil
	})
	// It keeps waiting while the server is away.
	time.Sleep(15 * time.Second)
	if err := e.c.Get(ctx, client.ObjectKeyFromObject(waiting), waiting); err != nil {
		t.Fatal(err)
	}
	if demo.PodReady(waiting) {
		t.Fatalf("pod %s became ready without braid-ipam-server", waiting.Name)
	}
	t.Logf("pod %s waits: %s", waiting.Name, e.lastEvent(ctx, waiting))
	e.checkUnaffected(ctx, t, running)

	e.scale(ctx, t, "deployment", "braid-ipam-server", ipamServerReplicas)
	e.waitFor(ctx, t, podTimeout, "the waiting pod to start once braid-ipam-server is back", func(ctx context.Context) (bool, error) {
		p := &corev1.Pod{}
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(waiting), p); err != nil {
			return false, err
		}
		return demo.PodReady(p), nil
	})
	pods := e.inspectApp(ctx, t, "web", 3)
	e.checkAttached(t, pods)
	e.checkUnaffected(ctx, t, running)
	e.scale(ctx, t, "deployment", "web", 2)
	e.inspectApp(ctx, t, "web", 2)
}

func testDaemonSetRestart(ctx context.Context, t *testing.T, e *env) {
	running := e.inspectApp(ctx, t, "web", 2)
	running = append(running, e.inspectApp(ctx, t, "db", 2)...)
	var ds corev1.PodList
	if err := e.c.List(ctx, &ds, client.InNamespace(systemNS), client.MatchingLabels{"app.kubernetes.io/name": "braid"}); err != nil {
		t.Fatal(err)
	}
	if len(ds.Items) != 1 {
		t.Fatalf("want one braid DaemonSet pod, have %d", len(ds.Items))
	}
	old := ds.Items[0]
	if err := e.c.Delete(ctx, &old); err != nil {
		t.Fatal(err)
	}
	e.waitFor(ctx, t, podTimeout, "a new braid DaemonSet pod to run", func(ctx context.Context) (bool, error) {
		var l corev1.PodList
		if err := e.c.List(ctx, &l, client.InNamespace(systemNS), client.MatchingLabels{"app.kubernetes.io/name": "braid"}); err != nil {
			return false, err
		}
		return len(l.Items) == 1 && l.Items[0].UID != old.UID && demo.PodReady(&l.Items[0]), nil
	})
	conf := filepath.Join(e.state, "cni", "net.d", "00-braid.conflist")
	if _, err := os.Stat(conf); err != nil {
		t.Errorf("braid's conf after the restart: %v", err)
	}
	e.checkUnaffected(ctx, t, running)
	e.scale(ctx, t, "deployment", "web", 3)
	pods := e.inspectApp(ctx, t, "web", 3)
	e.checkAttached(t, pods)
	e.checkPings(ctx, t, pods)
	e.scale(ctx, t, "deployment", "web", 2)
	e.inspectApp(ctx, t, "web", 2)
}

func testNoLeak(ctx context.Context, t *testing.T, e *env) {
	e.scale(ctx, t, "deployment", "web", 0)
	e.scale(ctx, t, "statefulset", "db", 0)
	e.waitNoPods(ctx, t, "web")
	e.waitNoPods(ctx, t, "db")
	// Scaled down, the StatefulSet no longer wants its ordinals: KeepForStatefulSet releases them too.
	var left int
	var used map[string]int64
	err := wait.PollUntilContextTimeout(ctx, poll, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var fips braidv1.FloatingIPList
		if err := e.c.List(ctx, &fips); err != nil {
			return false, err
		}
		left, used = len(fips.Items), e.poolsUsedErr(ctx)
		for _, n := range used {
			if n != 0 {
				return false, nil
			}
		}
		return left == 0 && used != nil, nil
	})
	if err != nil {
		t.Fatalf("with no pod left: %d FloatingIPs, pools used %v: %v", left, used, err)
	}
	for _, vf := range demo.VFs {
		if _, err := demo.Exec(ctx, "ip", "link", "show", "dev", vf.Netdev); err != nil {
			t.Errorf("VF netdev %s is not back on the node: %v", vf.Netdev, err)
		}
	}
}

// checkDemoGone proves demo.sh down's promise: no switch, peer or node NIC of the underlay, no braid file on the
// node, no link for braid-ipam's kubeconfig.
func checkDemoGone(ctx context.Context, t *testing.T, e *env) {
	out, err := demo.Exec(ctx, "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range demo.Networks {
		if strings.Contains(string(out), n.Switch) || strings.Contains(string(out), n.Peer) {
			t.Errorf("network namespaces left: %s", out)
		}
		for _, nic := range n.NodeNICs {
			if _, err := demo.Exec(ctx, "ip", "link", "show", "dev", nic); err == nil {
				t.Errorf("node NIC %s left", nic)
			}
		}
	}
	for _, f := range []string{"/etc/cni/net.d/braid.d", filepath.Join(e.state, "cni", "net.d", "00-braid.conflist"),
		filepath.Join(e.state, "cni", "net.d", "braid.d"), filepath.Join(filepath.Dir(e.bin), "cni-bin", "braid")} {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left (%v)", f, err)
		}
	}
}

// ---------------------------------------------------------------------------------------------------
// helpers

func (e *env) waitFor(ctx context.Context, t *testing.T, timeout time.Duration, what string, cond wait.ConditionWithContextFunc) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(ctx, poll, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (e *env) scale(ctx context.Context, t *testing.T, kind, name string, n int) {
	t.Helper()
	ns := demoNS
	if strings.HasPrefix(name, "braid") {
		ns = systemNS
	}
	out, err := exec.CommandContext(ctx, filepath.Join(e.bin, "kubectl"), "--kubeconfig", filepath.Join(e.state, "admin.kubeconfig"),
		"-n", ns, "scale", kind+"/"+name, fmt.Sprintf("--replicas=%d", n)).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl scale %s/%s --replicas=%d: %v\n%s", kind, name, n, err, out)
	}
}

// appPods lists the pods of an example workload (label app=NAME) that are not being deleted.
func (e *env) appPods(ctx context.Context, app string) ([]corev1.Pod, error) {
	var l corev1.PodList
	if err := e.c.List(ctx, &l, client.InNamespace(demoNS), client.MatchingLabels{"app": app}); err != nil {
		return nil, err
	}
	pods := slices.DeleteFunc(l.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil })
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods, nil
}

// inspectApp waits for exactly n ready pods of the workload and reads them from inside.
func (e *env) inspectApp(ctx context.Context, t *testing.T, app string, n int) []demo.Pod {
	t.Helper()
	var pods []corev1.Pod
	e.waitFor(ctx, t, podTimeout, fmt.Sprintf("%d ready %s pods", n, app), func(ctx context.Context) (bool, error) {
		var err error
		if pods, err = e.appPods(ctx, app); err != nil {
			return false, err
		}
		all := true
		for i := range pods {
			all = all && demo.PodReady(&pods[i])
		}
		return len(pods) == n && all, nil
	})
	var out []demo.Pod
	for i := range pods {
		p, err := e.in.Inspect(ctx, &pods[i])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func (e *env) inspectPod(ctx context.Context, t *testing.T, name string) demo.Pod {
	t.Helper()
	pod := &corev1.Pod{}
	if err := e.c.Get(ctx, client.ObjectKey{Namespace: demoNS, Name: name}, pod); err != nil {
		t.Fatal(err)
	}
	p, err := e.in.Inspect(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (e *env) waitNoPods(ctx context.Context, t *testing.T, app string) {
	t.Helper()
	e.waitFor(ctx, t, podTimeout, "no "+app+" pod", func(ctx context.Context) (bool, error) {
		var l corev1.PodList
		err := e.c.List(ctx, &l, client.InNamespace(demoNS), client.MatchingLabels{"app": app})
		return len(l.Items) == 0, err
	})
}

// waitFloatingIPs waits until the workload's pods hold n FloatingIPs and returns the pools' used counts then,
// once they agree with the FloatingIPs that exist.
func (e *env) waitFloatingIPs(ctx context.Context, t *testing.T, app string, n int) map[string]int64 {
	t.Helper()
	var used map[string]int64
	e.waitFor(ctx, t, 2*time.Minute, fmt.Sprintf("%d FloatingIPs of %s pods and pool status to match", n, app), func(ctx context.Context) (bool, error) {
		var fips braidv1.FloatingIPList
		if err := e.c.List(ctx, &fips); err != nil {
			return false, err
		}
		perPool := map[string]int64{}
		held := 0
		for _, f := range fips.Items {
			perPool[f.Spec.Pool]++
			if strings.HasPrefix(f.Spec.Pod, demoNS+"/"+app+"-") {
				held++
			}
		}
		used = e.poolsUsedErr(ctx)
		for pool := range pools {
			if used[pool] != perPool[pool] {
				return false, nil
			}
		}
		return held == n, nil
	})
	return used
}

func (e *env) poolsUsedErr(ctx context.Context) map[string]int64 {
	var l braidv1.IPPoolList
	if err := e.c.List(ctx, &l); err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, p := range l.Items {
		out[p.Name] = p.Status.Used
	}
	return out
}

func (e *env) newestPod(ctx context.Context, app string) (*corev1.Pod, error) {
	pods, err := e.appPods(ctx, app)
	if err != nil || len(pods) == 0 {
		return nil, err
	}
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
	return &pods[len(pods)-1], nil
}

func (e *env) podEvents(ctx context.Context, p *corev1.Pod) []corev1.Event {
	var l corev1.EventList
	if err := e.c.List(ctx, &l, client.InNamespace(p.Namespace)); err != nil {
		return nil
	}
	return slices.DeleteFunc(l.Items, func(ev corev1.Event) bool { return ev.InvolvedObject.UID != p.UID })
}

func (e *env) hasEvent(ctx context.Context, p *corev1.Pod, substr string) bool {
	for _, ev := range e.podEvents(ctx, p) {
		if ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, substr) {
			return true
		}
	}
	return false
}

// lastEvent describes the pod's last failure to get its networks.
func (e *env) lastEvent(ctx context.Context, p *corev1.Pod) string {
	evs := slices.DeleteFunc(e.podEvents(ctx, p), func(ev corev1.Event) bool {
		return ev.Reason != "BraidAddFailed" && ev.Reason != "FailedCreatePodSandBox"
	})
	if len(evs) == 0 {
		return "(no event)"
	}
	slices.SortFunc(evs, func(a, b corev1.Event) int { return a.LastTimestamp.Compare(b.LastTimestamp.Time) })
	last := evs[len(evs)-1]
	return last.Reason + ": " + last.Message
}

// checkAttached asserts that every pod has exactly its workload's networks after eth0, with the addresses
// network-status reports, from the pools of that network, in both families where the network has both.
func (e *env) checkAttached(t *testing.T, pods []demo.Pod) {
	t.Helper()
	if err := demo.CheckAddresses(pods); err != nil {
		t.Error(err)
	}
	for _, p := range pods {
		app := p.Name[:strings.IndexByte(p.Name, '-')]
		var got []string
		for _, a := range p.Attachments {
			if !a.Default {
				got = append(got, a.Network)
			}
		}
		if !slices.Equal(got, wantNetworks[app]) {
			t.Errorf("%s is attached to %v, want %v", p.Name, got, wantNetworks[app])
			continue
		}
		for _, a := range p.Attachments {
			if a.Default {
				continue
			}
			families := map[bool]int{}
			for _, addr := range sortedAddrs(a) {
				n, ok := demo.NetworkOf(demo.Networks, addr)
				if !ok || demoNS+"/"+n.Name != a.Network {
					t.Errorf("%s %s (%s) has %s, not on that network's subnets", p.Name, a.Interface, a.Network, addr)
				}
				families[addr.Is4()]++
			}
			want := map[bool]int{true: 1}
			if a.Network == control {
				want[false] = 1
			}
			if families[true] != want[true] || families[false] != want[false] {
				t.Errorf("%s %s (%s): addresses %v, want one IPv4%s", p.Name, a.Interface, a.Network, sortedAddrs(a),
					map[bool]string{true: " and one IPv6", false: ""}[a.Network == control])
			}
			if (a.Network == data) != (a.PCIAddress != "") {
				t.Errorf("%s %s (%s): VF %q", p.Name, a.Interface, a.Network, a.PCIAddress)
			}
		}
	}
}

func (e *env) checkPings(ctx context.Context, t *testing.T, pods []demo.Pod) {
	t.Helper()
	pings := demo.Do(ctx, demo.Exec, pods, demo.Pings(pods, demo.Networks))
	if err := demo.PingErrors(pings); err != nil {
		t.Error(err)
	}
}

// checkUnaffected asserts that running pods kept their sandbox (same process), addresses, and reach.
func (e *env) checkUnaffected(ctx context.Context, t *testing.T, before []demo.Pod) {
	t.Helper()
	var now []demo.Pod
	for _, b := range before {
		pod := &corev1.Pod{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: b.Name}, pod); err != nil {
			t.Errorf("pod %s: %v", b.Key(), err)
			continue
		}
		if string(pod.UID) != b.UID || !demo.PodReady(pod) {
			t.Errorf("pod %s was replaced or is not ready", b.Key())
			continue
		}
		p, err := e.in.Inspect(ctx, pod)
		if err != nil {
			t.Error(err)
			continue
		}
		if p.SandboxPID != b.SandboxPID {
			t.Errorf("pod %s: sandbox process %d, was %d", b.Key(), p.SandboxPID, b.SandboxPID)
		}
		for _, a := range b.Attachments {
			got, _ := p.Attachment(a.Network)
			if !a.Default && !slices.Equal(sortedAddrs(got), sortedAddrs(a)) {
				t.Errorf("pod %s on %s: addresses %v, were %v", b.Key(), a.Network, sortedAddrs(got), sortedAddrs(a))
			}
		}
		now = append(now, p)
	}
	e.checkPings(ctx, t, now)
}

func sortedAddrs(a demo.Attachment) []netip.Addr {
	out := make([]netip.Addr, 0, len(a.Addrs))
	for _, p := range a.Addrs {
		out = append(out, p.Addr())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}
