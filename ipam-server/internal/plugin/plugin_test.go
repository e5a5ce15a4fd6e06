package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/go-logr/logr"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

var (
	env        *testenv.Env
	k8s        client.Client
	binDir     string // braid-ipam and braid-ipam-api (built here) and the reference plugins
	kubeconfig string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run()) // listing needs no API server
	}
	if os.Getenv("BRAID_TEST_LOG") == "" {
		ctrl.SetLogger(logr.Discard())
	} else {
		ctrl.SetLogger(zap.New())
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	var err error
	if env, err = testenv.New(); err != nil {
		return 0, err
	}
	defer func() { _ = env.Stop() }()
	scheme, err := server.Scheme()
	if err != nil {
		return 0, err
	}
	if k8s, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp("", "braid-ipam-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	binDir = filepath.Join(tmp, "bin")
	if err := testenv.Build(context.Background(), binDir, "./ipam-server/cmd/braid-ipam", "./ipam-server/cmd/braid-ipam-api"); err != nil {
		return 0, err
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		return 0, err
	}
	for _, p := range []string{"macvlan", "bridge"} {
		if err := os.Symlink(filepath.Join(root, ".cache", "cni-bin", p), filepath.Join(binDir, p)); err != nil {
			return 0, err
		}
	}
	kubeconfig = filepath.Join(tmp, "node.kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig, "system:node:node-1", "system:nodes", "system:masters"); err != nil {
		return 0, err
	}

	mgr, err := server.New(env.Config, server.Options{MetricsAddr: "0", ProbeAddr: "0", Registry: prometheus.NewRegistry()})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	return code, <-done
}

func mkPool(t *testing.T, spec braidv1.IPPoolSpec) string {
	t.Helper()
	p := &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{GenerateName: "p-"}, Spec: spec}
	if p.Spec.ReuseCooldown == nil {
		p.Spec.ReuseCooldown = &metav1.Duration{}
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = k8s.Delete(context.Background(), p)
		// The server's finalizer keeps a pool while FloatingIPs of it exist, and envtest keeps the test's pods:
		// a pool left deleting would refuse later tests' pools of the same addresses.
		_ = k8s.Patch(context.Background(), p, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
	})
	return p.Name
}

// netConf is the NAD config a user writes, pointing braid-ipam at the test API server. Its timeout only bounds
// calls that succeed (a test that waits for the deadline sets a short one), so it is long: on a loaded CI
// machine the server may take seconds to assign a pod made a moment before.
func netConf(cniVersion, name, parent string, pools ...string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":%q,"type":"macvlan","master":%q,"mode":"bridge",`+
		`"ipam":{"type":"braid-ipam","pools":["%s"],"kubeconfig":%q,"timeout":"15s","daemonSocket":"/nonexistent/braid.sock"}}`,
		cniVersion, name, parent, strings.Join(pools, `","`), kubeconfig)
}

func mkNAD(t *testing.T, ns, name, config string) {
	t.Helper()
	nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: config}}
	if err := k8s.Create(context.Background(), nad); err != nil {
		t.Fatal(err)
	}
}

func mkPodWithNAD(t *testing.T, ns, nadName, config string) *corev1.Pod {
	t.Helper()
	mkNAD(t, ns, nadName, config)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "pod-" + nadName, Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": nadName}},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
	}
	if err := k8s.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func runtimeConf(pod *corev1.Pod, netnsPath string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: "c-" + string(pod.UID)[:8], NetNS: netnsPath, IfName: "net1",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", pod.Namespace}, {"K8S_POD_NAME", pod.Name}, {"K8S_POD_UID", string(pod.UID)}},
	}
}

// TestMacvlanGetsAssignedAddresses runs a real macvlan delegate with braid-ipam through libcni in real network
// namespaces, for every CNI version braid-ipam speaks.
func TestMacvlanGetsAssignedAddresses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	v4 := mkPool(t, braidv1.IPPoolSpec{CIDR: "192.0.2.0/24", Gateway: "192.0.2.1",
		Routes: []braidv1.Route{{Dst: "203.0.113.0/24"}}, DNS: &braidv1.DNS{Nameservers: []string{"192.0.2.53"}, Search: []string{"mgmt.example"}}})
	v6 := mkPool(t, braidv1.IPPoolSpec{CIDR: "2001:db8:7::/64", Gateway: "2001:db8:7::1"})
	for _, ver := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		t.Run(ver, func(t *testing.T) {
			// The runtime runs CNI in the host network namespace, where the API server is reachable; the macvlan
			// parent is a veth made there for this test (no address, no traffic) and removed after it.
			parent := "bti" + strings.ReplaceAll(ver, ".", "")
			la := netlink.NewLinkAttrs()
			la.Name = parent
			must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: parent + "p"}))
			t.Cleanup(func() {
				if l, err := netlink.LinkByName(parent); err == nil {
					_ = netlink.LinkDel(l)
				}
			})
			link, err := netlink.LinkByName(parent)
			must(t, err)
			must(t, netlink.LinkSetUp(link))
			podNS, err := testutils.NewNS()
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = podNS.Close(); _ = testutils.UnmountNS(podNS) }()

			nadName := "mgmt-" + strings.ReplaceAll(ver, ".", "")
			config := netConf(ver, nadName, parent, v4, v6)
			pod := mkPodWithNAD(t, env.Namespace(t), nadName, config)
			cni := libcni.NewCNIConfig([]string{binDir}, &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}})
			netCfg, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, ver, nadName, config)))
			if err != nil {
				t.Fatal(err)
			}
			rt := runtimeConf(pod, podNS.Path())
			var res types.Result
			res, err = cni.AddNetworkList(context.Background(), netCfg, rt)
			must(t, err)
			if _, err := types100.NewResultFromResult(res); err != nil {
				t.Fatal(err)
			}
			// macvlan replaces the result's DNS with its own conf's (upstream behaviour), so ask braid-ipam
			// directly, as every delegate does through ipam.ExecAdd, for the DNS it hands over.
			ipamRes, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(binDir, "braid-ipam"), []byte(config),
				&invoke.Args{Command: "ADD", ContainerID: rt.ContainerID, NetNS: rt.NetNS, IfName: "net1", Path: binDir,
					PluginArgs: rt.Args}, nil)
			must(t, err)
			r100, err := types100.NewResultFromResult(ipamRes)
			must(t, err)
			if len(r100.DNS.Nameservers) != 1 || r100.DNS.Nameservers[0] != "192.0.2.53" || r100.DNS.Search[0] != "mgmt.example" {
				t.Errorf("braid-ipam DNS = %+v, want nameserver 192.0.2.53, search mgmt.example", r100.DNS)
			}
			a := currentAssignment(t, pod)
			var wantAddrs []string
			for _, addr := range a.Interfaces["net1"].Addresses {
				wantAddrs = append(wantAddrs, addr.CIDR)
			}
			if len(wantAddrs) != 2 {
				t.Fatalf("assignment %+v, want a v4 and a v6 address", a)
			}

			must(t, podNS.Do(func(ns.NetNS) error {
				link, err := netlink.LinkByName("net1")
				if err != nil {
					return err
				}
				addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
				if err != nil {
					return err
				}
				have := map[string]bool{}
				for _, ad := range addrs {
					have[ad.IPNet.String()] = true
				}
				for _, w := range wantAddrs {
					if !have[w] {
						return fmt.Errorf("net1 lacks %s; has %v", w, have)
					}
				}
				routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
				if err != nil {
					return err
				}
				for _, r := range routes {
					if r.Dst != nil && r.Dst.String() == "203.0.113.0/24" && r.Gw.Equal(net.ParseIP("192.0.2.1")) {
						return nil
					}
				}
				return fmt.Errorf("no route 203.0.113.0/24 via the pool gateway 192.0.2.1: %v", routes)
			}))

			must(t, cni.CheckNetworkList(context.Background(), netCfg, rt))
			must(t, cni.DelNetworkList(context.Background(), netCfg, rt))
			must(t, cni.DelNetworkList(context.Background(), netCfg, rt)) // idempotent
			must(t, podNS.Do(func(ns.NetNS) error {
				if _, err := netlink.LinkByName("net1"); err == nil {
					return errors.New("net1 still there after DEL")
				}
				return nil
			}))
		})
	}
}

// TestAddFailsWithTheServersReason: an exhausted pool makes ADD fail with code 11 and the recorded reason.
func TestAddFailsWithTheServersReason(t *testing.T) {
	full := mkPool(t, braidv1.IPPoolSpec{CIDR: "198.51.100.0/30"}) // 2 usable
	for _, ip := range []string{"198.51.100.1", "198.51.100.2"} {
		f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{GenerateName: "taken-"}, Spec: braidv1.FloatingIPSpec{IP: ip, Pool: full}}
		must(t, k8s.Create(context.Background(), f))
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), f) })
	}
	config := netConf("1.0.0", "full", "unused0", full)
	pod := mkPodWithNAD(t, env.Namespace(t), "full", config)
	ipamConf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"full","ipam":{"type":"braid-ipam","pools":[%q],"kubeconfig":%q,"timeout":"3s","daemonSocket":"/nonexistent/braid.sock"}}`, full, kubeconfig)
	env := os.Environ()
	env = append(env, "CNI_COMMAND=ADD", "CNI_CONTAINERID=x", "CNI_NETNS=/nonexistent", "CNI_IFNAME=net1", "CNI_PATH="+binDir,
		fmt.Sprintf("CNI_ARGS=K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_UID=%s", pod.Namespace, pod.Name, pod.UID))
	cmd := exec.Command(filepath.Join(binDir, "braid-ipam"))
	cmd.Env, cmd.Stdin = env, strings.NewReader(ipamConf)
	start := time.Now()
	out, err := cmd.Output()
	if err == nil {
		t.Fatalf("ADD succeeded on an exhausted pool: %s", out)
	}
	var cniErr types.Error
	if jerr := json.Unmarshal(out, &cniErr); jerr != nil {
		t.Fatalf("ADD printed no CNI error: %q (%v)", out, jerr)
	}
	if cniErr.Code != types.ErrTryAgainLater || !strings.Contains(cniErr.Msg, "pool exhausted") || !strings.Contains(cniErr.Msg, full) {
		t.Fatalf("error = %+v, want code 11 naming the exhausted pool", cniErr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("ADD took %s; the wait must be bounded by ipam.timeout (3s)", d)
	}
}

func TestBadConfNamesTheField(t *testing.T) {
	for _, tc := range []struct{ conf, field string }{
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local"}}`, "ipam.type"},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam"}}`, "ipam.pools"},
		{`{"cniVersion":"1.0.0","name":"n","ipam":{"type":"braid-ipam","pools":["a"],"timeout":"soon"}}`, "ipam.timeout"},
	} {
		cmd := exec.Command(filepath.Join(binDir, "braid-ipam"))
		cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID=x", "CNI_NETNS=/x", "CNI_IFNAME=net1", "CNI_PATH="+binDir,
			"CNI_ARGS=K8S_POD_NAMESPACE=a;K8S_POD_NAME=b")
		cmd.Stdin = strings.NewReader(tc.conf)
		out, _ := cmd.Output()
		var cniErr types.Error
		if err := json.Unmarshal(out, &cniErr); err != nil || cniErr.Code != types.ErrInvalidNetworkConfig || !strings.Contains(cniErr.Msg, tc.field) {
			t.Errorf("conf %s: want code 7 naming %s, got %s", tc.conf, tc.field, out)
		}
	}
}

func currentAssignment(t *testing.T, pod *corev1.Pod) assignment.Assignments {
	t.Helper()
	var a assignment.Assignments
	must(t, wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		p := &corev1.Pod{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), p); err != nil {
			return false, nil
		}
		var err error
		a, err = assignment.Parse(p.Annotations[assignment.Annotation])
		return err == nil, nil
	}))
	return a
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
