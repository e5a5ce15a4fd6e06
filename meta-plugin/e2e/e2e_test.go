// Package e2e runs braid on the real single-node cluster of deploy/local: containerd calls braid, braid
// calls the cluster's bridge network and two macvlan NADs, and the kubelet reports the pod Ready.
//
// It needs root and BRAID_E2E=1. The local cluster is shared, so run it under the cluster lock, as
// `make test-e2e` does: `flock /tmp/braid-cluster.lock go test ./meta-plugin/e2e/`. It starts the cluster with
// cluster-up.sh and leaves it down (cluster-down.sh), even when it fails.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braid-cni/braid/crds/testenv"
	"github.com/braid-cni/braid/deploy/local/localcluster"
	"github.com/braid-cni/braid/meta-plugin/internal/daemon"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

const (
	// parent is the veth on the node that parents the test's macvlans (this kernel has no dummy links).
	parent = "braide2e0"
)

type cluster struct {
	t                                        *testing.T
	root, state, bin, cniBin, confDir, kconf string
}

func (c *cluster) run(ctx context.Context, name string, args ...string) (string, error) {
	c.t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.root
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

func (c *cluster) must(name string, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 5*time.Minute)
	defer cancel()
	out, err := c.run(ctx, name, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *cluster) kubectl(args ...string) string {
	c.t.Helper()
	return c.must(filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.kconf}, args...)...)
}

func (c *cluster) kubectlApply(yaml string) {
	c.t.Helper()
	cmd := exec.CommandContext(c.t.Context(), filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kconf, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(yaml)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, yaml)
	}
}

func TestPodWithTwoNetworks(t *testing.T) {
	p := localcluster.Require(t, "BRAID_E2E", "end-to-end test of braid on the local cluster")
	root := p.Repo
	c := &cluster{t: t, root: root, state: p.State, bin: p.Bin, cniBin: p.CNIBin}
	c.confDir = filepath.Join(c.state, "cni", "net.d")
	c.kconf = p.AdminKubeconfig()

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if out, err := c.run(ctx, filepath.Join(root, "deploy/local/cluster-down.sh")); err != nil {
			t.Errorf("cluster-down: %v\n%s", err, out)
		}
	})
	c.must(filepath.Join(root, "deploy/local/cluster-up.sh"))

	// braid's binaries go where containerd finds CNI plugins; the node's macvlan parent is a veth.
	work := t.TempDir()
	if err := testenv.Build(t.Context(), c.cniBin, "./meta-plugin/cmd/braid", "./meta-plugin/cmd/braid-shim"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(filepath.Join(c.cniBin, "braid"))
		_ = os.Remove(filepath.Join(c.cniBin, "braid-shim"))
	})
	c.must("ip", "link", "add", parent, "type", "veth", "peer", "name", parent+"p")
	t.Cleanup(func() { _, _ = c.run(context.Background(), "ip", "link", "del", parent) })
	c.must("ip", "link", "set", parent, "up")

	if _, err := c.run(t.Context(), filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kconf, "get", "crd",
		"network-attachment-definitions.k8s.cni.cncf.io"); err != nil {
		c.kubectl("apply", "-f", filepath.Join(root, "crds", "k8s.cni.cncf.io_network-attachment-definitions.yaml"))
		c.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/network-attachment-definitions.k8s.cni.cncf.io")
		t.Cleanup(func() {
			_, _ = c.run(context.Background(), filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kconf, "delete", "crd",
				"network-attachment-definitions.k8s.cni.cncf.io", "--wait=true", "--timeout=60s")
		})
	}
	ns := "braid-e2e"
	c.kubectl("create", "namespace", ns)
	t.Cleanup(func() {
		_, _ = c.run(context.Background(), filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kconf, "delete", "namespace", ns,
			"--wait=true", "--timeout=120s")
	})
	ipam := filepath.Join(work, "ipam")
	nad := func(name, subnet string) string {
		return fmt.Sprintf(`apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: %s, namespace: %s}
spec:
  config: '{"cniVersion":"1.0.0","type":"macvlan","master":"%s","mode":"bridge",
    "ipam":{"type":"host-local","dataDir":"%s","ranges":[[{"subnet":"%s"}]]}}'
`, name, ns, parent, ipam, subnet)
	}
	c.kubectlApply(nad("net-a", "198.51.100.0/24") + "---\n" + nad("net-b", "192.0.2.0/24"))

	// The same pod, once with braid run by containerd for each call (the plain plugin), once with containerd
	// running braid-shim and braid's node daemon doing the work.
	t.Run("plain", func(t *testing.T) {
		c.t = t
		c.install(t, work, `"type":"braid"`)
		c.podWithTwoNetworks(t, p, ns, "web", work, ipam)
	})
	t.Run("daemon", func(t *testing.T) {
		c.t = t
		socket := c.startDaemon(t, work)
		c.install(t, work, fmt.Sprintf(`"type":"braid-shim","daemonSocket":%q`, socket))
		c.podWithTwoNetworks(t, p, ns, "web-d", work, ipam)
		// A static pod, which the runtime names by the kubelet's UID and the API by its mirror's.
		c.staticPodWithTwoNetworks(t, p, ns, work, ipam)
	})
	c.t = t
}

// install writes braid's conf (of the given type keys) in front of the cluster network's.
func (c *cluster) install(t *testing.T, work, typeKeys string) {
	braidConf := filepath.Join(c.confDir, "00-braid.conflist")
	conf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"braid-e2e","plugins":[{%s,"clusterNetwork":%q,
		"kubeconfig":%q,"cniDir":%q,"logFile":%q,"logLevel":"debug"}]}`, typeKeys,
		filepath.Join(c.confDir, "10-cluster.conflist"), c.kconf, filepath.Join(work, "cni"), filepath.Join(work, "braid.log"))
	if err := os.WriteFile(braidConf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(braidConf)
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(work, "braid.log")); err == nil {
				t.Logf("braid.log:\n%s", b)
			}
		}
	})
}

// startDaemon builds braid and runs `braid daemon` for the cluster's node, with its socket and state under
// work, until the test ends; it returns the socket.
func (c *cluster) startDaemon(t *testing.T, work string) string {
	node := strings.TrimPrefix(strings.TrimSpace(c.kubectl("get", "nodes", "-o", "name")), "node/")
	if err := testenv.Build(t.Context(), work, "./meta-plugin/cmd/braid"); err != nil {
		t.Fatal(err)
	}
	return testenv.StartBraidDaemon(t, filepath.Join(work, "braid"), work, node, c.kconf)
}

// twoNetworksPod is a pod asking for net-a and net-b.
func twoNetworksPod(ns, name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  annotations: {k8s.v1.cni.cncf.io/networks: "net-a,net-b"}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: pause, image: "registry.k8s.io/pause:3.10", imagePullPolicy: Never}
`, name, ns)
}

// podWithTwoNetworks creates a pod asking for net-a and net-b, checks its interfaces and network-status once
// the kubelet reports it Ready, deletes it and checks that nothing is left.
func (c *cluster) podWithTwoNetworks(t *testing.T, p localcluster.Paths, ns, name, work, ipam string) {
	c.kubectlApply(twoNetworksPod(ns, name))
	c.kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/"+name, "--timeout=180s")
	c.checkTwoNetworks(t, p, ns, name)

	// Deleting the pod leaves no link, no cache file and no address behind.
	c.kubectl("-n", ns, "delete", "pod", name, "--wait=true", "--timeout=120s")
	c.nothingLeft(t, work, ipam)
}

// staticPodWithTwoNetworks runs the pod of podWithTwoNetworks as a static pod of the node: the kubelet starts
// it from a manifest, and braid finds it in the API through its mirror (another UID than the kubelet's, which
// the mirror keeps in kubernetes.io/config.mirror). Removing the manifest removes the pod, and nothing is left.
func (c *cluster) staticPodWithTwoNetworks(t *testing.T, p localcluster.Paths, ns, work, ipam string) {
	manifest := filepath.Join(p.StaticPods(), "braid-static.yaml")
	if err := os.WriteFile(manifest, []byte(twoNetworksPod(ns, "static")), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(manifest) })
	node := strings.TrimPrefix(strings.TrimSpace(c.kubectl("get", "nodes", "-o", "name")), "node/")
	mirror := "static-" + node // the kubelet names a static pod after its node
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, _ := c.run(t.Context(), filepath.Join(c.bin, "kubectl"), "--kubeconfig", c.kconf, "-n", ns, "get", "pod", mirror,
			"-o", `jsonpath={.metadata.annotations.kubernetes\.io/config\.mirror} {.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}`)
		if f := strings.Fields(out); len(f) == 3 && f[2] == "True" {
			if f[0] == f[1] {
				t.Fatalf("mirror %s has the static pod's UID %s: this shows nothing", mirror, f[0])
			}
			t.Logf("static pod %s (UID %s) Ready through its mirror (UID %s)", mirror, f[0], f[1])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("static pod's mirror %s/%s not Ready within 3m: %q", ns, mirror, out)
		}
		time.Sleep(time.Second)
	}
	c.checkTwoNetworks(t, p, ns, mirror)

	if err := os.Remove(manifest); err != nil {
		t.Fatal(err)
	}
	c.nothingLeft(t, work, ipam)
}

// checkTwoNetworks checks the interfaces and network-status of a Ready pod of twoNetworksPod.
func (c *cluster) checkTwoNetworks(t *testing.T, p localcluster.Paths, ns, name string) {
	// The pod's network namespace has the three interfaces, and network-status says so.
	netns, err := p.PodNetNS(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	var ifs []string
	for _, line := range strings.Split(c.must("nsenter", "--net="+netns, "ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			ifs = append(ifs, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	slices.Sort(ifs)
	if !slices.Equal(ifs, []string{"eth0", "lo", "net1", "net2"}) {
		t.Fatalf("pod interfaces = %v, want eth0 lo net1 net2", ifs)
	}
	// The daemon writes network-status just after the ADD: give it a moment.
	var sts []netstatus.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		sts, err = netstatus.Decode(c.kubectl("-n", ns, "get", "pod", name, "-o", `jsonpath={.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}`))
		if err == nil && len(sts) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || len(sts) != 3 || !sts[0].Default || sts[1].Name != ns+"/net-a" || sts[2].Interface != "net2" {
		t.Fatalf("network-status = %+v, %v", sts, err)
	}
}

// nothingLeft waits until a deleted pod of twoNetworksPod has left no link, cache file or address behind.
func (c *cluster) nothingLeft(t *testing.T, work, ipam string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		left := leftovers(t, work, ipam)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("left after the pod was deleted: %v", left)
		}
		time.Sleep(time.Second)
	}
	if out := c.must("ip", "-o", "link", "show", "type", "macvlan"); strings.TrimSpace(out) != "" {
		t.Errorf("macvlan links left on the node: %s", out)
	}
}

// leftovers lists braid's records, libcni's cached results, the daemon's unwritten statuses and reserved
// addresses of the test's networks.
func leftovers(t *testing.T, work, ipam string) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{filepath.Join(work, "cni", "attachments"), filepath.Join(work, "cni", "results")} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	queue := filepath.Join(work, "status-queue")
	unwritten, _ := daemon.Leftovers(queue) // the plain plugin's run has no daemon, and no queue
	for _, name := range unwritten {
		out = append(out, filepath.Join(queue, name))
	}
	_ = filepath.WalkDir(ipam, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "last_reserved_ip") && d.Name() != "lock" {
			out = append(out, p)
		}
		return nil
	})
	return out
}
