package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/deploy/local/demo"
	"github.com/braid-cni/braid/deploy/local/localcluster"
)

// What cluster-up.sh sets up; keep in sync with deploy/local/cluster-up.sh.
const (
	podSubnet   = "2001:db8:ff::/64" // the cluster network's host-local range (documentation prefix)
	bridgeName  = "braidclu0"        // the cluster network's bridge
	braidImage  = "localhost/braid:dev"
	testNS      = "braid-e2e-cluster"
	upTimeout   = 15 * time.Minute // first run builds Kubernetes from source
	downTimeout = 3 * time.Minute
)

// hostDirs are the runtime paths outside the repo that containerd and kubelet hard-code; cluster-down must
// remove those that did not exist before the cluster started.
var hostDirs = []string{"/run/containerd", "/var/lib/cni", "/var/lib/kubelet", "/var/log/pods", "/var/log/containers"}

// sysctls are the kernel tunables kubelet overwrites; cluster-down must restore them.
var sysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops"}

// bridgeVeth matches the host-side veth names the CNI bridge plugin chooses ("veth" + 8 hex digits).
var bridgeVeth = regexp.MustCompile(`^veth[0-9a-f]{8}$`)

// paths are the local cluster's (deploy/local/env.sh).
type paths struct{ localcluster.Paths }

func (p paths) netnsDir() string {
	return filepath.Join(p.State, "containerd", "state", "io.containerd.grpc.v1.cri", "netns")
}

// TestLocalCluster starts the local cluster, runs a pod and a Deployment on its real control plane, then
// stops it and proves that cluster-down left nothing behind on the host.
func TestLocalCluster(t *testing.T) {
	p := requireE2E(t)
	// Start from a stopped cluster, so that the snapshot below is the host without any of it (a cluster
	// left up by a developer would make kubelet's sysctls and iptables chains look like the baseline).
	stopCtx, stopCancel := context.WithTimeout(t.Context(), downTimeout)
	defer stopCancel()
	if err := runScript(stopCtx, t, p, "cluster-down.sh"); err != nil {
		t.Fatalf("stopping a cluster left up before the test: %v", err)
	}
	before := snapshotHost(t)
	ports := map[string]bool{} // host ends of pod veths seen on the cluster bridge

	downDone := false
	t.Cleanup(func() {
		if downDone {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		if err := runScript(ctx, t, p, "cluster-down.sh"); err != nil {
			t.Errorf("cleanup: cluster-down.sh: %v", err)
		}
	})

	ctx, cancel := testContext(t)
	defer cancel()
	if err := runScript(ctx, t, p, "cluster-up.sh"); err != nil {
		t.Fatalf("cluster-up.sh: %v", err)
	}
	c, _ := p.Client(t, nil)
	if err := ensureNamespace(ctx, c); err != nil {
		t.Fatalf("creating namespace %s: %v", testNS, err)
	}

	t.Run("pod gets an address of the cluster network on eth0", func(t *testing.T) {
		testPod(ctx, t, p, c, ports)
	})
	t.Run("deployment scales through controller-manager and scheduler", func(t *testing.T) {
		testDeployment(ctx, t, c, ports)
	})
	// Leave nothing in etcd either: a later cluster-up would otherwise restart these pods.
	if err := deleteNamespace(ctx, c); err != nil {
		t.Errorf("deleting namespace %s: %v", testNS, err)
	}

	t.Run("a supervised component is started again, and cluster-down stops an orphaned one", func(t *testing.T) {
		testSupervisor(t, p)
	})

	t.Run("cluster-down leaves nothing behind", func(t *testing.T) {
		downCtx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		downDone = true
		if err := runScript(downCtx, t, p, "cluster-down.sh"); err != nil {
			t.Fatalf("cluster-down.sh: %v", err)
		}
		checkNothingLeft(t, p, before, ports)
	})
}

// testContext bounds the test's work by upTimeout and, if `go test -timeout` is sooner, ends it early
// enough for cluster-down to run: a test binary killed by its timeout runs no Cleanup.
func testContext(t *testing.T) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(upTimeout)
	if d, ok := t.Deadline(); ok && d.Add(-downTimeout).Before(deadline) {
		deadline = d.Add(-downTimeout)
	}
	return context.WithDeadline(t.Context(), deadline)
}

// requireE2E skips unless the e2e suite is enabled and can work, and returns the repo's paths.
func requireE2E(t *testing.T) paths {
	t.Helper()
	return paths{localcluster.Require(t, "BRAID_E2E", "end-to-end test of the local cluster")}
}

// runScript runs deploy/local/NAME, streaming its output into the test log.
func runScript(ctx context.Context, t *testing.T, p paths, name string) error {
	t.Helper()
	t.Logf("running %s", name)
	cmd := exec.CommandContext(ctx, "bash", p.Script(name))
	cmd.Dir = p.Repo
	w := &lineLogger{t: t, prefix: name + ": "}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err := cmd.Run()
	w.flush()
	if err != nil {
		return fmt.Errorf("%s failed after %s: %w", name, time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("%s done in %s", name, time.Since(start).Round(time.Millisecond))
	return nil
}

// lineLogger writes each complete line it receives to the test log.
type lineLogger struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	for {
		line, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(line) // incomplete: keep for the next write
			return len(b), nil
		}
		l.t.Log(l.prefix + strings.TrimRight(line, "\n"))
	}
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 0 {
		l.t.Log(l.prefix + l.buf.String())
		l.buf.Reset()
	}
}

func ensureNamespace(ctx context.Context, c client.Client) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	// Pods are refused until the serviceaccount controller has created the namespace's default account.
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
}

func deleteNamespace(ctx context.Context, c client.Client) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}
	if err := c.Delete(ctx, ns); client.IgnoreNotFound(err) != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
}

// podSpec runs braid's image with the long-lived pause binary it carries.
func podSpec() corev1.PodSpec {
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: new(int64(1)),
		EnableServiceLinks:            new(false),
		Containers: []corev1.Container{{
			Name:            "pause",
			Image:           braidImage,
			Command:         []string{"/usr/bin/pause"},
			ImagePullPolicy: corev1.PullNever,
		}},
	}
}

func testPod(ctx context.Context, t *testing.T, p paths, c client.Client, ports map[string]bool) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "addr"}, Spec: podSpec()}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		return demo.PodReady(pod), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s not Ready: %v; status: %s", testNS, pod.Name, err, podStatus(pod))
	}

	ip, err := netip.ParseAddr(pod.Status.PodIP)
	if err != nil {
		t.Fatalf("pod has no valid status.podIP %q: %v", pod.Status.PodIP, err)
	}
	if subnet := netip.MustParsePrefix(podSubnet); !subnet.Contains(ip) {
		t.Fatalf("pod IP %s is outside the cluster network %s", ip, subnet)
	}
	t.Logf("pod %s/%s Ready with IP %s", testNS, pod.Name, ip)

	netns, err := p.PodNetNS(ctx, pod.Namespace, pod.Name)
	if err != nil {
		t.Fatalf("finding the pod's network namespace: %v", err)
	}
	out, err := exec.CommandContext(ctx, "nsenter", "--net="+netns, "ip", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter --net=%s ip addr show dev eth0: %v\n%s", netns, err, out)
	}
	if want := " inet6 " + ip.String() + "/"; !strings.Contains(string(out), want) {
		t.Fatalf("eth0 in %s does not carry %s:\n%s", netns, ip, out)
	}
	t.Logf("eth0 in %s carries %s", netns, ip)
	recordBridgePorts(ctx, t, ports)
}

func testDeployment(ctx context.Context, t *testing.T, c client.Client, ports map[string]bool) {
	labels := map[string]string{"app": "braid-e2e-scale"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: "scale"},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec()},
		},
	}
	if err := c.Create(ctx, dep); err != nil {
		t.Fatalf("creating deployment: %v", err)
	}
	if err := waitDeployment(ctx, c, dep, 3); err != nil {
		t.Fatalf("deployment never had 3 available replicas: %v; status: %+v; pods: %s",
			err, dep.Status, podsSummary(ctx, c, labels))
	}
	t.Logf("deployment %s/%s: 3 replicas available: %s", testNS, dep.Name, podsSummary(ctx, c, labels))
	recordBridgePorts(ctx, t, ports)

	patch := client.MergeFrom(dep.DeepCopy())
	dep.Spec.Replicas = new(int32(0))
	if err := c.Patch(ctx, dep, patch); err != nil {
		t.Fatalf("scaling to 0: %v", err)
	}
	if err := waitDeployment(ctx, c, dep, 0); err != nil {
		t.Fatalf("deployment did not scale to 0: %v; status: %+v; pods: %s", err, dep.Status, podsSummary(ctx, c, labels))
	}
	// Scaled to 0 means no pod object left at all, not just none available.
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(testNS), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		return len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("pods left after scaling to 0: %v: %s", err, podsSummary(ctx, c, labels))
	}
	t.Logf("deployment %s/%s scaled to 0", testNS, dep.Name)
}

// waitDeployment waits until the controller has observed the current spec and exactly want replicas
// exist, all available.
func waitDeployment(ctx context.Context, c client.Client, dep *appsv1.Deployment, want int32) error {
	return wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(dep), dep); err != nil {
			return false, err
		}
		s := dep.Status
		return s.ObservedGeneration >= dep.Generation && s.Replicas == want && s.AvailableReplicas == want &&
			s.UpdatedReplicas == want, nil
	})
}

func podStatus(pod *corev1.Pod) string {
	b, _ := json.Marshal(pod.Status)
	return string(b)
}

func podsSummary(ctx context.Context, c client.Client, labels map[string]string) string {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(testNS), client.MatchingLabels(labels)); err != nil {
		return "listing pods: " + err.Error()
	}
	var parts []string
	for _, pod := range pods.Items {
		parts = append(parts, fmt.Sprintf("%s(%s node=%q ip=%s ready=%v)", pod.Name, pod.Status.Phase,
			pod.Spec.NodeName, pod.Status.PodIP, demo.PodReady(&pod)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// ---------------------------------------------------------------------------------------------------
// host state: what the cluster may change, recorded before it starts and checked after it stops

type link struct {
	Name   string `json:"ifname"`
	Master string `json:"master"`
	Info   struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
}

type hostState struct {
	links    map[string]link // by name
	netns    []string        // `ip netns list`
	dirs     map[string]bool // hostDirs that exist
	sysctls  map[string]string
	kubeIPT  bool // any KUBE-* iptables chain exists
	cgroupsK []string
}

func snapshotHost(t *testing.T) hostState {
	t.Helper()
	links, err := hostLinks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	s := hostState{links: links, netns: netnsList(t.Context(), t), dirs: map[string]bool{}, sysctls: map[string]string{}}
	for _, d := range hostDirs {
		_, err := os.Stat(d)
		s.dirs[d] = err == nil
	}
	for _, k := range sysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			t.Fatal(err)
		}
		s.sysctls[k] = strings.TrimSpace(string(b))
	}
	s.kubeIPT = len(kubeChains(t.Context(), t)) > 0
	s.cgroupsK = clusterCgroups()
	return s
}

func hostLinks(ctx context.Context) (map[string]link, error) {
	out, err := exec.CommandContext(ctx, "ip", "-j", "-d", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("ip -j -d link show: %w", err)
	}
	var list []link
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("ip -j -d link show: %w", err)
	}
	links := map[string]link{}
	for _, l := range list {
		links[l.Name] = l
	}
	return links, nil
}

// recordBridgePorts remembers the host ends of the pods' veths (the ports of the cluster bridge), which
// cluster-down must remove.
func recordBridgePorts(ctx context.Context, t *testing.T, ports map[string]bool) {
	t.Helper()
	links, err := hostLinks(ctx)
	if err != nil {
		t.Error(err)
		return
	}
	for _, l := range links {
		if l.Master == bridgeName {
			ports[l.Name] = true
		}
	}
}

func netnsList(ctx context.Context, t *testing.T) []string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// kubeChains lists the KUBE-* chains of iptables and ip6tables (kubelet creates some).
func kubeChains(ctx context.Context, t *testing.T) []string {
	t.Helper()
	var chains []string
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.CommandContext(ctx, save).Output()
		if err != nil {
			t.Fatalf("%s: %v", save, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		table := ""
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "*") {
				table = line[1:]
			}
			if strings.HasPrefix(line, ":KUBE-") {
				chains = append(chains, fmt.Sprintf("%s/%s/%s", save, table, strings.Fields(line[1:])[0]))
			}
		}
	}
	return chains
}

func clusterCgroups() []string {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/kubepods", "/sys/fs/cgroup/*/k8s.io", "/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/k8s.io"} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	return dirs
}

// clusterProcesses lists live processes belonging to this cluster: any whose command line names the
// cluster's state dir (every component, containerd shims, crictl/kubectl run by the scripts) or that runs
// in a kubepods cgroup (container processes). Processes merely started from .cache/bin are not enough:
// envtest runs etcd and kube-apiserver from there too, independently of this cluster.
func clusterProcesses(p paths) []string {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := fmt.Sprint(os.Getpid())
	var found []string
	for _, dir := range procs {
		pid := filepath.Base(dir)
		if pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue // gone, or a kernel thread / zombie
		}
		cmd := strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		cgroups, _ := os.ReadFile(filepath.Join(dir, "cgroup"))
		if strings.Contains(cmd, p.State) || bytes.Contains(cgroups, []byte("/kubepods")) {
			exe, _ := os.Readlink(filepath.Join(dir, "exe"))
			found = append(found, fmt.Sprintf("pid %s exe=%s cmd=%q", pid, exe, cmd))
		}
	}
	return found
}

// mountsUnder lists the mount points at or under dir.
func mountsUnder(dir string) ([]string, error) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var found []string
	sc := bufio.NewScanner(bytes.NewReader(info))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := strings.ReplaceAll(f[4], `\040`, " ")
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp+" ("+sc.Text()+")")
		}
	}
	return found, sc.Err()
}

// checkNothingLeft compares the host after cluster-down with the state before cluster-up.
func checkNothingLeft(t *testing.T, p paths, before hostState, ports map[string]bool) {
	t.Helper()
	if procs := clusterProcesses(p); len(procs) > 0 {
		t.Errorf("processes of the cluster still running:\n  %s", strings.Join(procs, "\n  "))
	}
	if mounts, err := mountsUnder(p.Cache); err != nil {
		t.Error(err)
	} else if len(mounts) > 0 {
		t.Errorf("mounts left under %s:\n  %s", p.Cache, strings.Join(mounts, "\n  "))
	}

	// A pod's veth vanishes when the kernel frees its netns, which happens asynchronously: allow a moment.
	var leftLinks []string
	_ = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		links, err := hostLinks(ctx)
		if err != nil {
			return false, err
		}
		leftLinks = nil
		for name, l := range links {
			_, existed := before.links[name]
			switch {
			case name == bridgeName:
				leftLinks = append(leftLinks, name+" (the cluster bridge)")
			case ports[name]:
				leftLinks = append(leftLinks, name+" (a pod veth seen on "+bridgeName+")")
			case !existed && l.Info.Kind == "veth" && bridgeVeth.MatchString(name):
				leftLinks = append(leftLinks, name+" (a new veth named like the bridge plugin's)")
			}
		}
		return len(leftLinks) == 0, nil
	})
	if len(leftLinks) > 0 {
		sort.Strings(leftLinks)
		t.Errorf("network links left in the host netns:\n  %s", strings.Join(leftLinks, "\n  "))
	}
	if len(ports) == 0 {
		t.Errorf("no pod veth was ever seen on %s: the link check proved nothing", bridgeName)
	}

	if entries, err := os.ReadDir(p.netnsDir()); err == nil && len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("netns files left in %s: %v", p.netnsDir(), names)
	}
	// Only names containerd/CNI would create count: other tests on this host may add their own.
	for _, name := range netnsList(t.Context(), t) {
		if !slices.Contains(before.netns, name) {
			if strings.HasPrefix(name, "cni-") {
				t.Errorf("`ip netns list` has a new CNI netns: %s", name)
			} else {
				t.Logf("note: new netns %q is not named like the cluster's (another test's?)", name)
			}
		}
	}

	if len(before.cgroupsK) == 0 {
		if left := clusterCgroups(); len(left) > 0 {
			t.Errorf("cgroups left: %v", left)
		}
	}
	for _, d := range hostDirs {
		if _, err := os.Stat(d); err == nil && !before.dirs[d] {
			t.Errorf("%s did not exist before the cluster and is still there", d)
		}
	}
	for _, k := range sysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			t.Error(err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != before.sysctls[k] {
			t.Errorf("sysctl %s is %s, was %s before the cluster", k, got, before.sysctls[k])
		}
	}
	if !before.kubeIPT {
		if chains := kubeChains(t.Context(), t); len(chains) > 0 {
			t.Errorf("iptables chains left: %v", chains)
		}
	}
}
