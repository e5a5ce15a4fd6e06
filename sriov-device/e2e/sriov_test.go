package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
	"github.com/braid-cni/braid/deploy/local/demo"
	"github.com/braid-cni/braid/deploy/local/localcluster"
	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
)

const (
	// lockFile is the local cluster's lock (see the Makefile's CLUSTER_LOCK).
	lockFile = "/tmp/braid-cluster.lock"
	// braidImage is built by deploy/local/images.sh (cluster-up.sh runs it) and carries /usr/bin/pause.
	braidImage = "localhost/braid:dev"
	testNS     = "braid-e2e-sriov"
	podName    = "vf-user"

	// The resource the test configures: the fixture's X710 VFs that run iavf.
	resourcePrefix = "braid.dev"
	resourceName   = "x710_iavf"
	// envName is what the upstream SR-IOV device plugin would call the variable of that resource.
	envName = "PCIDEVICE_BRAID_DEV_X710_IAVF"
	// socketName is the plugin's socket in the kubelet's directory (sriov-device/README.md).
	socketName = "braid-sriov-braid.dev_x710_iavf.sock"

	upTimeout   = 15 * time.Minute // a first cluster-up builds Kubernetes from source
	downTimeout = 3 * time.Minute
	// nodeTimeout bounds a wait for the node's status: the kubelet posts it every 10s (nodeStatusUpdateFrequency).
	nodeTimeout = 2 * time.Minute
	podTimeout  = 3 * time.Minute
	poll        = 500 * time.Millisecond
)

// fullResource is the extended resource the node offers.
const fullResource = corev1.ResourceName(resourcePrefix + "/" + resourceName)

// config selects the X710 VFs bound to iavf, written as users of the upstream plugin write it.
const config = `{
  "resourceList": [{
    "resourceName": "` + resourceName + `",
    "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["iavf"]}
  }]
}`

// env mirrors deploy/local/env.sh.
type env struct {
	repo, bin, state string
	node             string
	// work is the test's own temporary directory (the plugin binary, the fake tree, config, logs).
	work string
}

func (e env) kubeconfig() string { return filepath.Join(e.state, "admin.kubeconfig") }

// podResourcesSocket is the kubelet's PodResources API, under its --root-dir.
func (e env) podResourcesSocket() string {
	return filepath.Join(e.state, "kubelet", "pod-resources", "kubelet.sock")
}

// crictl runs crictl against the cluster's containerd.
func (e env) crictl(ctx context.Context, args ...string) ([]byte, error) {
	args = append([]string{"--config", filepath.Join(e.state, "crictl.yaml")}, args...)
	out, err := exec.CommandContext(ctx, filepath.Join(e.bin, "crictl"), args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("crictl %s: %w: %s", strings.Join(args[2:], " "), err, ee.Stderr)
		}
		return nil, fmt.Errorf("crictl %s: %w", strings.Join(args[2:], " "), err)
	}
	return out, nil
}

// TestDevicePluginOnKubelet runs braid-sriov-dp on a fake PCI tree against the local cluster's kubelet: the node
// offers the tree's VFs, a pod that asks for one gets it (environment, kubelet's record, device-info file), a PF
// link going down makes the VFs unhealthy for the kubelet and back, and stopping the plugin withdraws them.
func TestDevicePluginOnKubelet(t *testing.T) {
	e := requireE2E(t)
	ctx, cancel := testContext(t)
	defer cancel()
	holdClusterLock(ctx, t)

	// Everything on the plugin's side first: a failure here costs no cluster start.
	dp := buildPlugin(ctx, t, e)
	tree, err := pcitree.Standard(filepath.Join(e.work, "pci"))
	if err != nil {
		t.Fatalf("writing the fake PCI tree: %v", err)
	}
	vfs := iavfVFs(t, tree)
	t.Logf("fake PCI tree under %s: the X710 PF %s has iavf VFs %v", tree.Root, pcitree.X710PF, vfs)
	cfgPath := filepath.Join(e.work, "config.json")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	devinfoDir := filepath.Join(e.work, "devinfo")

	clusterUp(ctx, t, e)
	c := newClient(t, e)
	clearStaleOffer(ctx, t, c, e.node)
	ensureNamespace(ctx, t, c)

	p := startPlugin(t, e, dp, tree.Root, cfgPath, devinfoDir)
	n := int64(len(vfs))
	var addr string // the VF the pod got

	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"node offers the fixture's VFs", func(t *testing.T) {
			socket := filepath.Join(pluginapi.DevicePluginPath, socketName)
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
				_, err := os.Stat(socket)
				return err == nil, nil
			})
			if err != nil {
				t.Fatalf("the plugin's socket %s never appeared: %v", socket, err)
			}
			o := waitOffer(ctx, t, c, e.node, fmt.Sprintf("offering %d %s", n, fullResource),
				func(o offer) bool { return o.capacity == n && o.allocatable == n })
			t.Logf("node %s: %s capacity %d, allocatable %d", e.node, fullResource, o.capacity, o.allocatable)
		}},
		{"a pod that asks for one VF gets it", func(t *testing.T) {
			addr = testPod(ctx, t, e, c, vfs, devinfoDir)
		}},
		{"PF link down makes the VFs unhealthy, up makes them healthy", func(t *testing.T) {
			testLinkState(ctx, t, e, c, tree, addr, n)
		}},
		{"pod deleted and plugin stopped: the kubelet withdraws the VFs", func(t *testing.T) {
			testStop(ctx, t, e, c, p, n)
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			return // each step builds on the one before
		}
	}
}

// requireE2E skips unless the e2e suite is enabled and can work.
func requireE2E(t *testing.T) env {
	t.Helper()
	p := localcluster.Require(t, "BRAID_E2E", "end-to-end test of braid-sriov-dp against the local cluster's kubelet")
	node := os.Getenv("NODE_NAME")
	if node == "" {
		node = "braid-node"
	}
	return env{repo: p.Repo, bin: p.Bin, state: p.State, node: node,
		work: t.TempDir()}
}

// testContext bounds the test by upTimeout and, if `go test -timeout` is sooner, ends it early enough for
// cluster-down to run: a test binary killed by its timeout runs no Cleanup.
func testContext(t *testing.T) (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(upTimeout)
	if d, ok := t.Deadline(); ok && d.Add(-downTimeout).Before(deadline) {
		deadline = d.Add(-downTimeout)
	}
	return context.WithDeadline(t.Context(), deadline)
}

// holdClusterLock makes sure the test runs under the cluster lock. `make test-e2e` and the manual
// `flock /tmp/braid-cluster.lock go test ...` hold it in an ancestor process, which is enough; when nobody
// holds it the test takes it until it ends; when another process holds it (another run's cluster) the test
// waits for it.
func holdClusterLock(ctx context.Context, t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("cluster lock: %v", err)
	}
	holders, err := lockHolders(f)
	if err != nil {
		_ = f.Close()
		t.Fatalf("cluster lock: %v", err)
	}
	ancestors := ancestorPIDs()
	for _, pid := range holders {
		if ancestors[pid] {
			_ = f.Close()
			t.Logf("cluster lock %s is held by pid %d, an ancestor of this test", lockFile, pid)
			return
		}
	}
	if len(holders) > 0 {
		t.Logf("cluster lock %s is held by pid %v: waiting for it", lockFile, holders)
	}
	err = wait.PollUntilContextCancel(ctx, 2*time.Second, true, func(context.Context) (bool, error) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		_ = f.Close()
		t.Fatalf("cluster lock %s: %v", lockFile, err)
	}
	// Registered before the cluster's own cleanups, so it runs after them: the lock outlives cluster-down.
	t.Cleanup(func() { _ = f.Close() })
}

// lockHolders returns the processes holding a flock(2) on f, from /proc/locks.
func lockHolders(f *os.File) ([]int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	dev := uint64(st.Dev) //nolint:unconvert // Dev is not uint64 on every architecture
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), st.Ino)
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil, err
	}
	var pids []int
	for line := range strings.Lines(string(locks)) {
		// "1: FLOCK  ADVISORY  WRITE 32099 fe:00:9978889 0 EOF"; waiters have "->" after the number.
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != id {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// ancestorPIDs returns the PIDs of this process's parent, its parent, and so on.
func ancestorPIDs() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getppid(); pid > 1 && !out[pid]; {
		out[pid] = true
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so read after the last ')'.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 {
			break
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			break
		}
	}
	return out
}

// runScript runs deploy/local/NAME and logs its output.
func runScript(ctx context.Context, t *testing.T, e env, name string) error {
	t.Helper()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(e.repo, "deploy", "local", name))
	cmd.Dir = e.repo
	// The cluster's components are detached from the script's output; this only guards against a stray one.
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	out, err := cmd.CombinedOutput()
	for line := range strings.Lines(string(out)) {
		t.Log(name + ": " + strings.TrimRight(line, "\n"))
	}
	if err != nil {
		return fmt.Errorf("%s failed after %s: %w", name, time.Since(start).Round(time.Millisecond), err)
	}
	t.Logf("%s done in %s", name, time.Since(start).Round(time.Millisecond))
	return nil
}

// clusterUp starts the local cluster (which builds and imports braid's image) and stops it when the test ends.
func clusterUp(ctx context.Context, t *testing.T, e env) {
	t.Helper()
	t.Cleanup(func() {
		// The test's context has ended by the time cleanups run.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), downTimeout)
		defer cancel()
		if err := runScript(ctx, t, e, "cluster-down.sh"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := runScript(ctx, t, e, "cluster-up.sh"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.crictl(ctx, "inspecti", braidImage); err != nil {
		t.Fatalf("image %s is not in the cluster's containerd (deploy/local/images.sh builds it): %v", braidImage, err)
	}
}

// buildPlugin compiles braid-sriov-dp from this checkout.
func buildPlugin(ctx context.Context, t *testing.T, e env) string {
	t.Helper()
	if err := testenv.Build(ctx, e.work, "./sriov-device/cmd/braid-sriov-dp"); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(e.work, "braid-sriov-dp")
}

// iavfVFs returns the X710 VFs of the tree that are bound to iavf, read from the tree as discovery reads it.
func iavfVFs(t *testing.T, tree *pcitree.Tree) []string {
	t.Helper()
	var out []string
	for _, addr := range pcitree.X710VFs() {
		dir, err := tree.DeviceDir(addr)
		if err != nil {
			t.Fatal(err)
		}
		drv, err := os.Readlink(filepath.Join(dir, "driver"))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(drv) == "iavf" {
			out = append(out, addr)
		}
	}
	if len(out) == 0 {
		t.Fatal("the fixture has no X710 VF on iavf")
	}
	return out
}

// plugin is a running braid-sriov-dp.
type plugin struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited; then err is its exit status
	err  error
	log  string
}

// startPlugin runs braid-sriov-dp as a host process in the kubelet's device-plugin directory (the kubelet
// hard-codes it) on the fake tree. The resync period is short because the tree's files change without the
// kernel events a real host sends. It is stopped, if still running, when the test ends.
func startPlugin(t *testing.T, e env, bin, root, cfg, devinfoDir string) *plugin {
	t.Helper()
	p := &plugin{log: filepath.Join(e.work, "braid-sriov-dp.log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	// Not CommandContext: the test stops it with SIGTERM, as a kubelet or DaemonSet would, and checks how it ends.
	p.cmd = exec.Command(bin, "--root", root, "--config", cfg, "--plugin-dir", pluginapi.DevicePluginPath,
		"--devinfo-dir", devinfoDir, "--resync", "1s", "--log-level", "debug")
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// If the test binary dies, the plugin must not serve on.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("starting braid-sriov-dp: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		_ = logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if err := p.stop(30 * time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		// A few lines: what it served, its registrations, the health changes it saw.
		if b, err := os.ReadFile(p.log); err == nil {
			t.Logf("braid-sriov-dp log:\n%s", b)
		}
	})
	t.Logf("braid-sriov-dp running (pid %d), log %s", p.cmd.Process.Pid, p.log)
	return p
}

// stop sends SIGTERM and waits for the exit, killing the process after timeout. It fails when the plugin
// had to be killed or did not exit with status 0; stopping an exited plugin reports how it ended.
func (p *plugin) stop(timeout time.Duration) error {
	select {
	case <-p.done:
	default:
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("SIGTERM to braid-sriov-dp: %w", err)
		}
		select {
		case <-p.done:
		case <-time.After(timeout):
			_ = p.cmd.Process.Kill()
			<-p.done
			return fmt.Errorf("braid-sriov-dp did not exit within %s of SIGTERM: killed", timeout)
		}
	}
	if p.err != nil {
		return fmt.Errorf("braid-sriov-dp exited with %w, want status 0", p.err)
	}
	return nil
}

func newClient(t *testing.T, e env) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", e.kubeconfig())
	if err != nil {
		t.Fatalf("loading %s: %v", e.kubeconfig(), err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("client for %s: %v", cfg.Host, err)
	}
	return c
}

// ensureNamespace creates the test's namespace, waits for its default ServiceAccount (pods are refused
// before it exists) and deletes the namespace when the test ends.
func ensureNamespace(ctx context.Context, t *testing.T, c client.Client) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", testNS, err)
	}
	// Leave nothing in etcd: the cluster's state survives cluster-down, and a later cluster-up would restart
	// the pod. Runs before cluster-down (cleanups run last-registered first).
	t.Cleanup(func() {
		// The test's context has ended by the time cleanups run.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := c.Delete(ctx, ns); client.IgnoreNotFound(err) != nil {
			t.Errorf("cleanup: deleting namespace %s: %v", testNS, err)
			return
		}
		err := wait.PollUntilContextCancel(ctx, poll, true, func(ctx context.Context) (bool, error) {
			err := c.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Errorf("cleanup: namespace %s not gone: %v", testNS, err)
		}
	})
	err := wait.PollUntilContextTimeout(ctx, poll, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Fatalf("namespace %s has no default ServiceAccount: %v", testNS, err)
	}
}

// offer is what the node's status says of the resource; a resource the node does not list counts as 0.
type offer struct {
	capacity, allocatable int64
	listed                bool
}

func nodeOffer(ctx context.Context, c client.Client, node string) (offer, error) {
	var n corev1.Node
	if err := c.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
		return offer{}, err
	}
	return offerOf(&n), nil
}

func offerOf(n *corev1.Node) offer {
	var o offer
	if q, ok := n.Status.Capacity[fullResource]; ok {
		o.capacity, o.listed = q.Value(), true
	}
	if q, ok := n.Status.Allocatable[fullResource]; ok {
		o.allocatable, o.listed = q.Value(), true
	}
	return o
}

// waitOffer waits until the node's status satisfies cond and returns it.
func waitOffer(ctx context.Context, t *testing.T, c client.Client, node, what string, cond func(offer) bool) offer {
	t.Helper()
	var last offer
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, poll, nodeTimeout, true, func(ctx context.Context) (bool, error) {
		o, err := nodeOffer(ctx, c, node)
		if err != nil {
			lastErr = err // the API server may blink; the timeout reports it
			return false, nil
		}
		last = o
		return cond(o), nil
	})
	if err != nil {
		t.Fatalf("node %s not %s: %v; last seen %s: listed %v, capacity %d, allocatable %d (last error: %v)",
			node, what, err, fullResource, last.listed, last.capacity, last.allocatable, lastErr)
	}
	return last
}

// clearStaleOffer removes what an earlier run left of the resource in the node's status, so that this run's
// values cannot be an earlier run's. The Node object outlives cluster-down (etcd's data stays in .cache/cluster),
// and a restarted kubelet does not zero it: it would only when it finds no checkpoint in its device-plugin
// directory, but it counts every file there, its own kubelet.sock included. So the node keeps the last capacity and, as the kubelet derives
// allocatable from capacity for a resource no plugin has registered, as many allocatable devices that no plugin
// serves. The resource is removed as Kubernetes documents for extended resources (a JSON patch of the status);
// a kubelet that serves the resource (a plugin still running from elsewhere) would add it back, and the wait
// fails.
func clearStaleOffer(ctx context.Context, t *testing.T, c client.Client, node string) {
	t.Helper()
	key := strings.ReplaceAll(string(fullResource), "/", "~1") // JSON pointer escaping
	var last offer
	err := wait.PollUntilContextTimeout(ctx, poll, nodeTimeout, true, func(ctx context.Context) (bool, error) {
		var n corev1.Node
		if err := c.Get(ctx, client.ObjectKey{Name: node}, &n); err != nil {
			return false, nil // the API server may blink; the timeout reports it
		}
		var ops []string
		for field, list := range map[string]corev1.ResourceList{"capacity": n.Status.Capacity, "allocatable": n.Status.Allocatable} {
			if q, ok := list[fullResource]; ok {
				ops = append(ops, fmt.Sprintf(`{"op":"remove","path":"/status/%s/%s"}`, field, key))
				t.Logf("node %s: removing %s %s=%s left by an earlier run", node, field, fullResource, q.String())
			}
		}
		if len(ops) == 0 {
			return true, nil
		}
		last = offerOf(&n)
		patch := client.RawPatch(types.JSONPatchType, []byte("["+strings.Join(ops, ",")+"]"))
		if err := c.Status().Patch(ctx, &n, patch); err != nil {
			t.Logf("node %s: removing %s: %v", node, fullResource, err)
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("node %s keeps offering %s before the plugin runs (capacity %d, allocatable %d): %v",
			node, fullResource, last.capacity, last.allocatable, err)
	}
}

// vfPod is a pod whose container asks for one VF of the resource.
func vfPod() *corev1.Pod {
	one := resource.MustParse("1")
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: podName},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64(1)),
			EnableServiceLinks:            new(false),
			Containers: []corev1.Container{{
				Name:            "pause",
				Image:           braidImage,
				Command:         []string{"/usr/bin/pause"},
				ImagePullPolicy: corev1.PullNever,
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{fullResource: one},
				},
			}},
		},
	}
}

// testPod runs a pod that asks for one VF and checks what it got: the environment of the container's
// process, the kubelet's own record of the allocation (PodResources API, what braid's meta-plugin reads) and
// the device-info file. It returns the VF's PCI address.
func testPod(ctx context.Context, t *testing.T, e env, c client.Client, vfs []string, devinfoDir string) string {
	pod := vfPod()
	if err := c.Create(ctx, pod); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, poll, podTimeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		return demo.PodReady(pod), nil
	})
	if err != nil {
		status, _ := json.Marshal(pod.Status)
		t.Fatalf("pod %s/%s not Ready: %v; status: %s", testNS, podName, err, status)
	}
	t.Logf("pod %s/%s Ready on %s", testNS, podName, pod.Spec.NodeName)

	environ := containerEnv(ctx, t, e, pod)
	addr, ok := environ[envName]
	if !ok {
		t.Fatalf("the container's environment has no %s: %v", envName, environ)
	}
	if !slices.Contains(vfs, addr) {
		t.Fatalf("%s=%q: want one of the fixture's iavf VFs %v", envName, addr, vfs)
	}
	var info map[string]map[string]map[string]string
	if err := json.Unmarshal([]byte(environ[envName+"_INFO"]), &info); err != nil {
		t.Fatalf("%s_INFO=%q: %v", envName, environ[envName+"_INFO"], err)
	}
	wantInfo := map[string]map[string]map[string]string{addr: {"generic": {"deviceID": addr}}}
	if diff := cmp.Diff(wantInfo, info); diff != "" {
		t.Errorf("%s_INFO (-want +got):\n%s", envName, diff)
	}
	t.Logf("container environment: %s=%s %s_INFO=%s", envName, addr, envName, environ[envName+"_INFO"])

	got, err := podDevices(ctx, e, pod)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string][]string{string(fullResource): {addr}}, got); diff != "" {
		t.Errorf("kubelet PodResources of container %s (-want +got):\n%s", pod.Spec.Containers[0].Name, diff)
	}

	// The device-info file, named and written as the NPWG device-info spec says, where a meta-plugin looks.
	name := strings.ReplaceAll(string(fullResource), "/", "-") + "-" + addr + "-device.json"
	data, err := os.ReadFile(filepath.Join(devinfoDir, name))
	if err != nil {
		t.Fatalf("device-info file: %v", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("device-info file %s: %v\n%s", name, err, data)
	}
	wantDoc := map[string]any{"type": "pci", "version": "1.1.0",
		"pci": map[string]any{"pci-address": addr, "pf-pci-address": pcitree.X710PF}}
	if diff := cmp.Diff(wantDoc, doc); diff != "" {
		t.Errorf("device-info file %s (-want +got):\n%s", name, diff)
	}
	entries, err := os.ReadDir(devinfoDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range entries {
		names = append(names, de.Name())
	}
	if diff := cmp.Diff([]string{name}, names); diff != "" {
		t.Errorf("device-info dir %s holds (-want +got):\n%s", devinfoDir, diff)
	}
	t.Logf("device-info file %s: %s", name, data)
	return addr
}

// containerEnv reads the environment of the pod's container as its process has it: CRI names the process
// (crictl inspect), and its /proc/<pid>/environ is the container's /proc/1/environ seen from the host.
func containerEnv(ctx context.Context, t *testing.T, e env, pod *corev1.Pod) map[string]string {
	t.Helper()
	if len(pod.Status.ContainerStatuses) != 1 {
		t.Fatalf("pod has %d container statuses, want 1", len(pod.Status.ContainerStatuses))
	}
	cs := pod.Status.ContainerStatuses[0]
	_, id, ok := strings.Cut(cs.ContainerID, "://")
	if !ok {
		t.Fatalf("container %s has no container ID (%q)", cs.Name, cs.ContainerID)
	}
	out, err := e.crictl(ctx, "inspect", "-o", "json", id)
	if err != nil {
		t.Fatal(err)
	}
	var inspect struct {
		Info struct {
			PID int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal(out, &inspect); err != nil || inspect.Info.PID <= 0 {
		t.Fatalf("crictl inspect %s: no process ID (%v):\n%s", id, err, out)
	}
	pid := inspect.Info.PID
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || filepath.Base(exe) != "pause" {
		t.Fatalf("process %d of container %s runs %q (%v), want /usr/bin/pause", pid, id, exe, err)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("environment of container %s: %v", id, err)
	}
	environ := map[string]string{}
	for kv := range strings.SplitSeq(strings.TrimRight(string(raw), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		environ[k] = v
	}
	return environ
}

// podDevices asks the kubelet's PodResources API which devices the pod's container holds, by resource.
func podDevices(ctx context.Context, e env, pod *corev1.Pod) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+e.podResourcesSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("pod resources API: %w", err)
	}
	defer func() { _ = conn.Close() }()
	resp, err := podresourcesapi.NewPodResourcesListerClient(conn).List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("pod resources API: List: %w", err)
	}
	for _, pr := range resp.GetPodResources() {
		if pr.GetNamespace() != pod.Namespace || pr.GetName() != pod.Name {
			continue
		}
		out := map[string][]string{}
		for _, cr := range pr.GetContainers() {
			if cr.GetName() != pod.Spec.Containers[0].Name {
				continue
			}
			for _, d := range cr.GetDevices() {
				out[d.GetResourceName()] = append(out[d.GetResourceName()], d.GetDeviceIds()...)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("pod resources API: no pod %s/%s", pod.Namespace, pod.Name)
}

// testLinkState takes the PF's link down in the fake tree, as a pulled cable would (administratively up, no
// carrier, operstate down), then back up. The plugin's resync sees it; the kubelet must then count the VFs as
// unhealthy (allocatable drops, capacity stays) and report the pod's VF unhealthy in the container's
// allocatedResourcesStatus (ResourceHealthStatus, beta and on by default since Kubernetes 1.36).
func testLinkState(ctx context.Context, t *testing.T, e env, c client.Client, tree *pcitree.Tree, addr string, n int64) {
	if err := tree.SetLink(pcitree.X710PF, pcitree.X710PFNet, true, false); err != nil {
		t.Fatal(err)
	}
	// Leave the tree as it was even if a wait below fails.
	up := false
	t.Cleanup(func() {
		if !up {
			_ = tree.SetLink(pcitree.X710PF, pcitree.X710PFNet, true, true)
		}
	})
	o := waitOffer(ctx, t, c, e.node, "counting the VFs unhealthy after the PF link went down",
		func(o offer) bool { return o.allocatable == 0 && o.capacity == n })
	t.Logf("PF %s down: %s capacity %d, allocatable %d", pcitree.X710PFNet, fullResource, o.capacity, o.allocatable)
	waitPodDeviceHealth(ctx, t, c, addr, corev1.ResourceHealthStatusUnhealthy)

	if err := tree.SetLink(pcitree.X710PF, pcitree.X710PFNet, true, true); err != nil {
		t.Fatal(err)
	}
	up = true
	o = waitOffer(ctx, t, c, e.node, "counting the VFs healthy after the PF link came back",
		func(o offer) bool { return o.allocatable == n && o.capacity == n })
	t.Logf("PF %s up: %s capacity %d, allocatable %d", pcitree.X710PFNet, fullResource, o.capacity, o.allocatable)
	waitPodDeviceHealth(ctx, t, c, addr, corev1.ResourceHealthStatusHealthy)
}

// waitPodDeviceHealth waits until the pod's container status reports its VF with the given health.
func waitPodDeviceHealth(ctx context.Context, t *testing.T, c client.Client, addr string, want corev1.ResourceHealthStatus) {
	t.Helper()
	var last []corev1.ResourceStatus
	err := wait.PollUntilContextTimeout(ctx, poll, nodeTimeout, true, func(ctx context.Context) (bool, error) {
		var pod corev1.Pod
		if err := c.Get(ctx, client.ObjectKey{Namespace: testNS, Name: podName}, &pod); err != nil {
			return false, err
		}
		if len(pod.Status.ContainerStatuses) != 1 {
			return false, nil
		}
		last = pod.Status.ContainerStatuses[0].AllocatedResourcesStatus
		for _, rs := range last {
			if rs.Name != fullResource {
				continue
			}
			for _, h := range rs.Resources {
				if string(h.ResourceID) == addr {
					return h.Health == want, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod's VF %s not %s in allocatedResourcesStatus: %v; last: %+v", addr, want, err, last)
	}
	t.Logf("pod %s/%s: allocatedResourcesStatus says VF %s is %s", testNS, podName, addr, want)
}

// testStop deletes the pod, then stops the plugin as a DaemonSet rollout would (SIGTERM). The plugin must exit
// cleanly and remove its socket; the kubelet, whose ListAndWatch stream ends, marks every device of the
// resource unhealthy: allocatable drops to 0 at once while capacity keeps the devices until the kubelet's
// endpointStopGracePeriod (5 minutes) passes without the plugin coming back, then drops to 0 too.
func testStop(ctx context.Context, t *testing.T, e env, c client.Client, p *plugin, n int64) {
	pod := vfPod()
	if err := c.Delete(ctx, pod); err != nil {
		t.Fatalf("deleting pod: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, poll, podTimeout, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Fatalf("pod %s/%s not gone: %v", testNS, podName, err)
	}
	// The VF is free again, still healthy.
	waitOffer(ctx, t, c, e.node, fmt.Sprintf("offering %d %s after the pod left", n, fullResource),
		func(o offer) bool { return o.capacity == n && o.allocatable == n })

	if err := p.stop(30 * time.Second); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(pluginapi.DevicePluginPath, socketName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the plugin's socket after it stopped: want it removed, stat says %v", err)
	}
	o := waitOffer(ctx, t, c, e.node, "withdrawing the VFs after the plugin stopped",
		func(o offer) bool { return o.allocatable == 0 })
	if o.capacity != n {
		t.Errorf("capacity of %s right after the plugin stopped: %d, want %d (the kubelet keeps unhealthy devices for its grace period)",
			fullResource, o.capacity, n)
	}
	t.Logf("plugin stopped: %s capacity %d, allocatable %d", fullResource, o.capacity, o.allocatable)
}
