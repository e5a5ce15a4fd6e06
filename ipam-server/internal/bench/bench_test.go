package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

const (
	nodes   = 10
	perNode = 1 // pods a simulated kubelet starts at once
)

// harness is shared by braid and whereabouts runs.
type harness struct {
	k8s        client.Client
	clientset  kubernetes.Interface
	kubeconfig string
	binDir     string
	wbConf     string
	// sockets are the simulated nodes' braid daemon sockets, by node name: on real nodes every daemon listens
	// on /run/braid/braid.sock; here the nodes share one filesystem.
	sockets map[string]string
}

// scenario is one measured run.
type scenario struct {
	label          string
	pods, networks int
	plugin         string // braid-ipam or whereabouts
	nadConf        func(network int) string
	ipamCNI        func(network int, node string) string // the ipam section the runtime of node hands the plugin
}

// TestBenchIPAM is `make bench-ipam`: whereabouts, then braid-ipam on nodes without braid's daemon
// (BENCH-INFO ipam-nodaemon: it reads and watches the API server itself), then braid as deploy/ installs it,
// with `braid daemon` running for every simulated node (BENCH ipam-multinic, and BENCH ipam last). Every ADD
// runs the real plugin binary as a runtime does, right after the pod's creation. Each scenario also prints
// the API writes it caused by resource, its latency split (BENCH-INFO ... latency_ms: the create request alone,
// and from the create's answer to the last ADD's), and the CPU each process spent per pod (... cpu_ms_per_pod):
// on this 2-core machine the latency follows the throughput, and the throughput the CPU per pod.
func TestBenchIPAM(t *testing.T) {
	if os.Getenv("BRAID_BENCH") == "" {
		t.Skip("benchmark: run with make bench-ipam")
	}
	ctrl.SetLogger(logr.Discard())
	env := testenv.Start(t)
	h := setup(t, env)

	mgr, err := server.New(env.TokenConfig(), server.Options{MetricsAddr: "0", ProbeAddr: "0", Registry: prometheus.NewRegistry(), Workers: 16})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	var lines []string
	if os.Getenv("BRAID_BENCH_SKIP_PEER") == "" { // for quick iterations on braid alone
		lines = append(lines, h.run(t, h.whereabouts("ipam-whereabouts", 1000, 1, 0xa0)))
		lines = append(lines, h.run(t, h.whereabouts("ipam-whereabouts-multinic", 128, 16, 0xb0)))
	}
	// braid-ipam on nodes without braid's daemon (deploy/base): it reads and watches the API server itself.
	lines = append(lines, strings.Replace(h.run(t, h.braid(t, "ipam-nodaemon", 1000, 1, 0x30, false)), "BENCH", "BENCH-INFO", 1))
	// braid as deploy/ installs it: every node runs braid's daemon, which braid-ipam asks first.
	h.startDaemons(t)
	lines = append(lines, h.run(t, h.braid(t, "ipam-multinic", 128, 16, 0x20, true)))
	lines = append(lines, h.run(t, h.braid(t, "ipam", 1000, 1, 0x10, true)))
	for _, l := range lines {
		fmt.Println(l)
	}
}

func setup(t *testing.T, env *testenv.Env) *harness {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &harness{binDir: filepath.Join(dir, "bin"), kubeconfig: filepath.Join(dir, "kubeconfig"), wbConf: filepath.Join(dir, "whereabouts.conf")}
	if err := testenv.Build(t.Context(), h.binDir, "./ipam-server/cmd/braid-ipam", "./ipam-server/cmd/braid-ipam-api", "./meta-plugin/cmd/braid"); err != nil {
		t.Fatal(err)
	}
	wb := filepath.Join(root, ".cache", "cni-bin", "whereabouts")
	if err := os.Symlink(wb, filepath.Join(h.binDir, "whereabouts")); err != nil {
		t.Fatal(err)
	}
	// whereabouts' CRDs, from the module its tools module pins.
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/k8snetworkplumbingwg/whereabouts")
	cmd.Dir = filepath.Join(root, "deploy", "local", "tools", "whereabouts")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("find whereabouts module (run deploy/local/build-tools.sh whereabouts): %v", err)
	}
	crds := filepath.Join(strings.TrimSpace(string(out)), "doc", "crds")
	var paths []string
	for _, f := range []string{"whereabouts.cni.cncf.io_ippools.yaml", "whereabouts.cni.cncf.io_overlappingrangeipreservations.yaml", "whereabouts.cni.cncf.io_nodeslicepools.yaml"} {
		paths = append(paths, filepath.Join(crds, f))
	}
	if _, err := envtest.InstallCRDs(env.Config, envtest.CRDInstallOptions{Paths: paths, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	// Every client authenticates with a bearer token, as braid-ipam-server and braid-ipam (and whereabouts)
	// do in a cluster with ServiceAccount tokens.
	if err := env.WriteTokenKubeconfig(h.kubeconfig); err != nil {
		t.Fatal(err)
	}
	wbConf := fmt.Sprintf(`{"datastore":"kubernetes","kubernetes":{"kubeconfig":%q},"log_level":"error"}`, h.kubeconfig)
	if err := os.WriteFile(h.wbConf, []byte(wbConf), 0o600); err != nil {
		t.Fatal(err)
	}
	scheme, err := server.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	if h.k8s, err = client.New(env.TokenConfig(), client.Options{Scheme: scheme}); err != nil {
		t.Fatal(err)
	}
	// Pods are created in protobuf, as the controllers that create them in a cluster (ReplicaSet, Job,
	// StatefulSet) send them.
	podCfg := env.TokenConfig()
	podCfg.ContentType = runtime.ContentTypeProtobuf
	if h.clientset, err = kubernetes.NewForConfig(podCfg); err != nil {
		t.Fatal(err)
	}
	return h
}

// braid makes pools (one IPv6 /64 per network: the documentation IPv4 ranges are too small for 1000 pods)
// and NADs whose IPAM is braid-ipam; with daemons, each node's braid-ipam asks its node's braid daemon.
func (h *harness) braid(t *testing.T, label string, pods, networks, tag int, daemons bool) scenario {
	t.Helper()
	for n := range networks {
		p := &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%x-%d", tag, n)},
			Spec: braidv1.IPPoolSpec{CIDR: fmt.Sprintf("2001:db8:%x%02x::/64", tag, n), ReuseCooldown: &metav1.Duration{}}}
		if err := h.k8s.Create(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	ipam := func(n int, extra string) string {
		return fmt.Sprintf(`{"type":"braid-ipam","pools":["bench-%x-%d"],"kubeconfig":%q,"timeout":"30s"%s}`, tag, n, h.kubeconfig, extra)
	}
	onNode := func(n int, node string) string {
		socket := filepath.Join(h.binDir, "no-daemon-here.sock")
		if daemons {
			socket = h.sockets[node]
		}
		return ipam(n, fmt.Sprintf(`,"daemonSocket":%q`, socket))
	}
	return scenario{label: label, pods: pods, networks: networks, plugin: "braid-ipam",
		nadConf: func(n int) string { return netConf(n, ipam(n, "")) }, ipamCNI: onNode}
}

// whereabouts makes NADs whose IPAM is whereabouts, over ranges of the same size.
func (h *harness) whereabouts(label string, pods, networks, tag int) scenario {
	ipam := func(n int) string {
		return fmt.Sprintf(`{"type":"whereabouts","range":"2001:db8:%x%02x::/64","kubernetes":{"kubeconfig":%q},"configuration_path":%q}`,
			tag, n, h.kubeconfig, h.wbConf)
	}
	return scenario{label: label, pods: pods, networks: networks, plugin: "whereabouts",
		nadConf: func(n int) string { return netConf(n, ipam(n)) }, ipamCNI: func(n int, _ string) string { return ipam(n) }}
}

func netConf(n int, ipam string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":"net%d","type":"macvlan","master":"eth0","ipam":%s}`, n, ipam)
}

// run creates the scenario's NADs in a fresh namespace, then its pods, each immediately followed by the
// ADDs a runtime would run for it on its node; it reports wall time, throughput, per-pod latency from pod
// creation to the last ADD's return, and API writes per allocation (from the API server's own counters).
func (h *harness) run(t *testing.T, s scenario) string {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}
	if err := h.k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range s.networks {
		nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: fmt.Sprintf("net%d", n)},
			Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: s.nadConf(n)}}
		if err := h.k8s.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		names = append(names, nad.Name)
	}
	annotation := strings.Join(names, ",")
	// Let the server's cache see the NADs and pools, and the previous run's last pool status writes land,
	// before the clock starts: wait until the API server has seen no write for six seconds.
	writesBefore := h.quiet(t)
	cpuBefore, steal := takeCPU(), testenv.StartSteal()
	latencies := make(podLatencies, s.pods)
	var failures atomic.Int64
	var firstErr atomic.Value
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range nodes * perNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := h.startPod(ctx, s, ns.Name, i, annotation, latencies); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for i := range s.pods {
		work <- i
	}
	close(work)
	wg.Wait()
	total := time.Since(start)
	cpu, stolen := perPod(cpuBefore, takeCPU(), s.pods), steal.Percent()
	writes, breakdown := writesDuring(writesBefore, h.apiWrites(t))
	writes -= float64(s.pods) // minus the pod creations themselves
	if n := failures.Load(); n > 0 {
		t.Errorf("%s: %d pods failed; first: %v", s.label, n, firstErr.Load())
	}
	// The next scenario starts on a cluster without these pods, as this one started without the last one's:
	// deleted at once (no kubelet here confirms a graceful deletion), their addresses released before the
	// next scenario's quiet wait ends.
	if err := h.clientset.CoreV1().Pods(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	allocs := float64(s.pods * s.networks)
	add, create, afterCreate := latencies.split()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("BENCH-INFO %s writes %s\n", s.label, breakdown)
	fmt.Printf("BENCH-INFO %s latency_ms create_p50=%.1f create_p99=%.1f after_create_p50=%.1f after_create_p99=%.1f\n", s.label,
		ms(pct(create, 50)), ms(pct(create, 99)), ms(pct(afterCreate, 50)), ms(pct(afterCreate, 99)))
	fmt.Printf("BENCH-INFO %s cpu_ms_per_pod %s\n", s.label, cpu)
	return fmt.Sprintf("BENCH %s pods=%d nodes=%d networks=%d total_s=%.2f allocs_per_s=%.1f add_p50_ms=%.1f add_p99_ms=%.1f api_writes_per_alloc=%.2f failures=%d load=%s steal_pct=%.1f",
		s.label, s.pods, nodes, s.networks, total.Seconds(), allocs/total.Seconds(), ms(pct(add, 50)), ms(pct(add, 99)),
		writes/allocs, failures.Load(), strings.Fields(string(load))[0], stolen)
}

// startPod creates one pod bound to its node and runs its ADDs, one network after another like a meta-plugin.
func (h *harness) startPod(ctx context.Context, s scenario, ns string, i int, annotation string, latencies []podLatency) error {
	name := fmt.Sprintf("p%04d", i)
	node := fmt.Sprintf("node-%d", i%nodes)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": annotation}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
	begin := time.Now()
	created, err := h.clientset.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	createdAt := time.Now()
	for n := range s.networks {
		conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"net%d","ipam":%s}`, n, s.ipamCNI(n, node))
		cmd := exec.CommandContext(ctx, filepath.Join(h.binDir, s.plugin))
		cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID=c"+string(created.UID), "CNI_NETNS=/var/run/netns/"+name,
			fmt.Sprintf("CNI_IFNAME=net%d", n+1), "CNI_PATH="+h.binDir,
			fmt.Sprintf("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s;K8S_POD_INFRA_CONTAINER_ID=c%s", ns, name, created.UID, created.UID))
		cmd.Stdin = strings.NewReader(conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s ADD for %s net%d: %w: %s", s.plugin, name, n, err, out)
		}
	}
	latencies[i] = podLatency{begin: begin, created: createdAt, added: time.Now()}
	return nil
}

// startDaemons runs `braid daemon` for each simulated node, as deploy/ runs it on every node, until the test
// ends.
func (h *harness) startDaemons(t *testing.T) {
	t.Helper()
	h.sockets = map[string]string{}
	for i := range nodes {
		node := fmt.Sprintf("node-%d", i)
		h.sockets[node] = testenv.StartBraidDaemon(t, filepath.Join(h.binDir, "braid"), filepath.Join(h.binDir, "..", node), node, h.kubeconfig)
	}
}

// apiWrites returns the API server's counters of write requests, by resource (subresource) and verb.
func (h *harness) apiWrites(t *testing.T) map[string]float64 {
	t.Helper()
	raw, err := h.clientset.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(line[len("apiserver_request_total{"):strings.LastIndex(line, "}")], ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = strings.Trim(v, `"`)
		}
		switch labels["verb"] {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err != nil {
			continue
		}
		key := labels["resource"]
		if labels["subresource"] != "" {
			key += "/" + labels["subresource"]
		}
		out[key+" "+labels["verb"]] += v
	}
	return out
}

// quiet waits until the API server's write counters stay still for six seconds, and returns them: longer than
// braid-ipam-server spaces a pool's status writes (5s), so that the previous scenario's last ones are not
// counted in the next.
func (h *harness) quiet(t *testing.T) map[string]float64 {
	t.Helper()
	last := h.apiWrites(t)
	for still := 0; still < 12; {
		time.Sleep(500 * time.Millisecond)
		now := h.apiWrites(t)
		if n, _ := writesDuring(last, now); n == 0 {
			still++
		} else {
			still = 0
		}
		last = now
	}
	return last
}

// writesDuring is the difference of two apiWrites snapshots, in total and as "resource verb=count" words.
func writesDuring(before, after map[string]float64) (float64, string) {
	var total float64
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			total += d
			parts = append(parts, fmt.Sprintf("%s=%.0f", strings.ReplaceAll(k, " ", ":"), d))
		}
	}
	slices.Sort(parts)
	return total, strings.Join(parts, ",")
}

// podLatency is when a pod's creation was asked for, when the API server answered that it was created, and
// when its last ADD returned. add_p50/p99 count from the first (the create request is part of the pod's
// start, and braid's writes load the API server that serves it); the split shows how much of that is the
// create request itself, which under this load waits for the API server's CPU like every other write.
type podLatency struct{ begin, created, added time.Time }

type podLatencies []podLatency

// split returns, each sorted: creation asked to last ADD, the create request alone, and created to last ADD.
func (l podLatencies) split() (add, create, afterCreate []time.Duration) {
	for _, p := range l {
		add = append(add, p.added.Sub(p.begin))
		create = append(create, p.created.Sub(p.begin))
		afterCreate = append(afterCreate, p.added.Sub(p.created))
	}
	slices.Sort(add)
	slices.Sort(create)
	slices.Sort(afterCreate)
	return add, create, afterCreate
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[int(math.Ceil(p/100*float64(len(d))))-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
