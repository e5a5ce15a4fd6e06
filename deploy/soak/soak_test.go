package soak

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/deploy/local/demo"
	"github.com/braid-cni/braid/deploy/local/localcluster"
)

// What deploy/examples and deploy/local set up; keep in step with them.
const (
	demoNS   = "braid-demo"
	systemNS = "braid-system"
	// reservation is an admin reservation the soak makes in the mgmt pool (inside its range, so the
	// allocator must step over it) and expects to find untouched at the end.
	reservation   = "mgmt-192-0-2-150"
	reservationIP = "192.0.2.150"

	defaultDuration = 3 * time.Minute
	upTimeout       = 20 * time.Minute // a first run builds Kubernetes from source
	downTimeout     = 5 * time.Minute
	settleTimeout   = 6 * time.Minute
	// checkTimeout bounds how long the check is repeated until the cluster is consistent: released
	// addresses wait the pools' 10s cool-down, the kubelet stops sandboxes of deleted pods in its own time.
	checkTimeout = 2 * time.Minute
	poll         = time.Second
)

// env is the soak's handle on the local cluster.
type env struct {
	localcluster.Paths
	repo, bin, state string
	cfg              *rest.Config
	c                client.Client
	in               demo.Inspector
	node             Node
}

// result is what the last line reports; duplicates and leaks stay -1 unless the check ran.
type result struct {
	pods, faults      int
	duplicates, leaks int
	checked           bool
}

func (r *result) line() string {
	d, l := -1, -1
	if r.checked {
		d, l = r.duplicates, r.leaks
	}
	return fmt.Sprintf("SOAK pods=%d faults=%d duplicates=%d leaks=%d", r.pods, r.faults, d, l)
}

// TestSoak churns pods on the local cluster while faults hit braid and the control plane, then proves the
// cluster consistent. See the package comment.
func TestSoak(t *testing.T) {
	e := requireSoak(t)
	duration, seed := soakParams(t)
	res := &result{}
	ctx, cancel := context.WithTimeout(t.Context(), upTimeout+duration+settleTimeout+checkTimeout)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		if err := e.script(ctx, t, "down"); err != nil {
			t.Errorf("cleanup: demo.sh down: %v", err)
		}
		line := res.line()
		t.Log(line)
		fmt.Println(line)
	})
	msg := fmt.Sprintf("soak: duration %s, seed %d (SOAK_SEED=%d repeats the schedule of faults and churn actions; the cluster's timing still differs)",
		duration, seed, seed)
	t.Log(msg)
	fmt.Println(msg)

	if err := e.script(ctx, t); err != nil {
		t.Fatalf("demo.sh: %v", err)
	}
	e.connect(t)
	e.twoIPAMReplicas(ctx, t)
	e.reserve(ctx, t)

	// The churn and the faults run side by side for the soak's duration; each draws from its own stream of
	// the seeded generator, the same number of draws whatever the cluster does, so a seed repeats both.
	soakCtx, stopSoak := context.WithTimeout(ctx, duration)
	defer stopSoak()
	counter := e.countPods(ctx, t)
	var wg sync.WaitGroup
	var faults []fault
	var stats churnStats
	wg.Go(func() { faults = e.injectFaults(soakCtx, ctx, t, rand.New(rand.NewPCG(uint64(seed), 1))) })
	wg.Go(func() { stats = e.churn(soakCtx, t, rand.New(rand.NewPCG(uint64(seed), 2))) })
	wg.Wait()
	created, ready := counter()
	res.pods, res.faults = created, len(faults)
	t.Logf("soak over: %d pods created (%d became ready), churn %s, %d faults:", created, ready, stats, len(faults))
	for _, f := range faults {
		t.Logf("  %s", f)
		if f.err != nil {
			t.Errorf("fault %s did not recover: %v", f.kind, f.err)
		}
	}

	// Not failures: the local cluster restarts these as a kubelet would (kube-scheduler exits on purpose when
	// its cache disagrees with the API server), but a reader of the log should know they did.
	for _, c := range []string{"kube-scheduler", "kube-controller-manager", "kubelet"} {
		for _, l := range supervisorLines(filepath.Join(e.state, "logs", c+".log")) {
			t.Logf("  %s: %s", c, l)
		}
	}

	if err := e.settle(ctx, t); err != nil {
		t.Errorf("the cluster did not settle: %v", err)
	}
	f, checked := e.check(ctx, t)
	res.duplicates, res.leaks, res.checked = len(f.Duplicates), len(f.Leaks), checked
	for _, d := range f.Duplicates {
		t.Errorf("duplicate: %s", d)
	}
	for _, l := range f.Leaks {
		t.Errorf("leak: %s", l)
	}
}

func requireSoak(t *testing.T) *env {
	t.Helper()
	p := localcluster.Require(t, "BRAID_SOAK", "soak test (make soak)")
	e := &env{Paths: p, repo: p.Repo, bin: p.Bin, state: p.State}
	e.in = demo.Inspector{Run: demo.Exec, Crictl: filepath.Join(e.bin, "crictl"), CrictlConfig: filepath.Join(e.state, "crictl.yaml")}
	e.node = Node{Run: demo.Exec, Crictl: e.in.Crictl, CrictlConfig: e.in.CrictlConfig, State: e.state}
	return e
}

// soakParams reads SOAK_DURATION (default 3m) and SOAK_SEED (default: from the clock).
func soakParams(t *testing.T) (time.Duration, int64) {
	t.Helper()
	duration := defaultDuration
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK_DURATION=%q: want a positive Go duration such as 3m or 90s", v)
		}
		duration = d
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("SOAK_SEED"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED=%q: want an integer (the seed a previous run printed)", v)
		}
		seed = s
	}
	return duration, seed
}

// script runs deploy/local/demo.sh with args, its output in the test log.
func (e *env) script(ctx context.Context, t *testing.T, args ...string) error {
	t.Helper()
	return e.Run(ctx, t, "demo.sh", e.Script("demo.sh"), args...)
}

// connect makes the API client. Its timeout keeps a call from hanging while kube-apiserver restarts.
func (e *env) connect(t *testing.T) {
	t.Helper()
	e.c, e.cfg = e.Client(t, func(cfg *rest.Config) { cfg.Timeout, cfg.QPS, cfg.Burst = 20*time.Second, 50, 100 })
}

// reserve makes the admin reservation: a FloatingIP for nobody, named as braid-ipam-server names them.
func (e *env) reserve(ctx context.Context, t *testing.T) {
	t.Helper()
	f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: reservation},
		Spec: braidv1.FloatingIPSpec{IP: reservationIP, Pool: "mgmt"}}
	if err := e.c.Create(ctx, f); err != nil {
		t.Fatalf("admin reservation %s: %v", reservation, err)
	}
}

// countPods counts the pods of the demo namespace created from now on (and those that became Ready), with an
// informer, which relists after kube-apiserver restarts. The returned func stops it and returns the counts.
func (e *env) countPods(ctx context.Context, t *testing.T) func() (created, ready int) {
	t.Helper()
	var mu sync.Mutex
	before := map[string]bool{}
	var existing corev1.PodList
	if err := e.c.List(ctx, &existing, client.InNamespace(demoNS)); err != nil {
		t.Fatal(err)
	}
	for _, p := range existing.Items {
		before[string(p.UID)] = true
	}
	created, ready := map[string]bool{}, map[string]bool{}
	seen := func(o any) {
		p, ok := o.(*corev1.Pod)
		if !ok || before[string(p.UID)] {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		created[string(p.UID)] = true
		if Ready(p) {
			ready[string(p.UID)] = true
		}
	}
	cs, err := kubernetes.NewForConfig(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	inf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(demoNS)).Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: seen, UpdateFunc: func(_, o any) { seen(o) }}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	go inf.Run(stop)
	if !toolscache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("pod informer did not sync")
	}
	return func() (int, int) {
		close(stop)
		mu.Lock()
		defer mu.Unlock()
		return len(created), len(ready)
	}
}

// supervisorLines returns what cluster-up.sh's restart loop wrote in a component's log: one line per exit.
func supervisorLines(log string) []string {
	raw, err := os.ReadFile(log)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "==> supervisor:") {
			out = append(out, l)
		}
	}
	return out
}

func TestSupervisorLines(t *testing.T) {
	log := filepath.Join(t.TempDir(), "kube-scheduler.log")
	if err := os.WriteFile(log, []byte("E1122 cache.go:568] Scheduler cache is corrupted\n"+
		"==> supervisor: kube-scheduler exited with status 1; starting it again in 1s\nI1122 starting\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := supervisorLines(log)
	if len(got) != 1 || !strings.Contains(got[0], "exited with status 1") {
		t.Errorf("supervisorLines = %q, want the one restart", got)
	}
	if got := supervisorLines(filepath.Join(t.TempDir(), "missing.log")); got != nil {
		t.Errorf("a missing log gave %q", got)
	}
}
