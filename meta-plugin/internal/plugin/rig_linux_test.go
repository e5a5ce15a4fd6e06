package plugin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
	"github.com/braid-cni/braid/meta-plugin/internal/kube"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
)

// The suite shares one kube-apiserver (envtest); every test makes its own namespace, "host" network namespace
// (holding the bridge and the macvlan parent), pod network namespaces and directories.
var (
	suiteEnv     *testenv.Env
	suiteErr     error
	cniBinDir    string
	kubeconfig   string
	specVersions = []string{"0.4.0", "1.0.0", "1.1.0"}
)

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() == 0 {
		suiteErr = startSuite()
	}
	code := m.Run()
	if suiteEnv != nil {
		if err := suiteEnv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop envtest:", err)
		}
	}
	if kubeconfig != "" {
		_ = os.RemoveAll(filepath.Dir(kubeconfig))
	}
	os.Exit(code)
}

func startSuite() error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	cniBinDir = filepath.Join(root, ".cache", "cni-bin")
	for _, b := range []string{"bridge", "macvlan", "host-local", "static"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, b)); err != nil {
			return fmt.Errorf("reference plugin %s missing in %s: run `make deps`: %w", b, cniBinDir, err)
		}
	}
	env, err := testenv.New()
	if err != nil {
		return err
	}
	suiteEnv = env
	dir, err := os.MkdirTemp("", "braid-kubeconfig-")
	if err != nil {
		return err
	}
	kubeconfig = filepath.Join(dir, "braid.kubeconfig")
	cfg := env.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["braid"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["braid"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "braid"}
	kc.CurrentContext = "braid"
	return clientcmd.WriteToFile(*kc, kubeconfig)
}

// needSuite skips without root and fails when the suite could not start.
func needSuite(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the tests create network namespaces")
	}
	if suiteErr != nil {
		t.Fatalf("suite setup: %v", suiteErr)
	}
}

// recordingExec runs the real plugins and records what each got on stdin and how long they took.
type recordingExec struct {
	invoke.Exec
	mu    sync.Mutex
	calls []execCall
	busy  time.Duration
	// hook, when set, runs before each delegate with its CNI environment; its error is the delegate's.
	hook func(ctx context.Context, environ []string) error
}

// setHook sets (or, with nil, clears) the hook run before each delegate.
func (r *recordingExec) setHook(h func(ctx context.Context, environ []string) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hook = h
}

type execCall struct {
	plugin, command, ifName string
	raw                     []byte         // stdin as the delegate got it
	stdin                   map[string]any // raw decoded, by reset
}

func (r *recordingExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	r.mu.Lock()
	hook := r.hook
	r.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, environ); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	out, err := r.Exec.ExecPlugin(ctx, pluginPath, stdinData, environ)
	took := time.Since(start) // the delegate's time only, not the recording below
	var cmd, ifName string
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			cmd = v
		}
		if v, ok := strings.CutPrefix(kv, "CNI_IFNAME="); ok {
			ifName = v
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.busy += took
	// Decoded later, in reset: the recording happens inside the call being timed, and the benchmark counts
	// what is not a delegate's time as braid's.
	r.calls = append(r.calls, execCall{plugin: filepath.Base(pluginPath), command: cmd, ifName: ifName, raw: stdinData})
	return out, err
}

func (r *recordingExec) reset() (calls []execCall, busy time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls, busy = r.calls, r.busy
	r.calls, r.busy = nil, 0
	for i := range calls {
		_ = json.Unmarshal(calls[i].raw, &calls[i].stdin)
	}
	return calls, busy
}

// rig is one test's world.
type rig struct {
	t        *testing.T
	version  string
	ns       string // Kubernetes namespace
	hostNS   ns.NetNS
	dir      string
	confPath string
	plugin   *Plugin
	exec     *recordingExec
	apiCalls atomic.Int64
	stdin    []byte
	// node is the pods' spec.nodeName (the node daemon caches the pods of its node).
	node string
}

// fakeKubelet serves the kubelet's PodResources API, built from the kubelet's own types, on a unix socket.
type fakeKubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	resp *podresourcesv1.ListPodResourcesResponse
}

func (f *fakeKubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	return f.resp, nil
}

// serveKubelet starts a fake kubelet that lists the given devices for one pod and returns its socket.
func (r *rig) serveKubelet(podName string, devices map[string][]string) string {
	r.t.Helper()
	ctr := &podresourcesv1.ContainerResources{Name: "c"}
	for res, ids := range devices {
		ctr.Devices = append(ctr.Devices, &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: ids})
	}
	resp := &podresourcesv1.ListPodResourcesResponse{PodResources: []*podresourcesv1.PodResources{
		{Name: podName, Namespace: r.ns, Containers: []*podresourcesv1.ContainerResources{ctr}}}}
	sock := filepath.Join(r.dir, "kubelet.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		r.t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, &fakeKubelet{resp: resp})
	go func() { _ = srv.Serve(l) }()
	r.t.Cleanup(srv.Stop)
	return sock
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newRig makes a host namespace with a bridge-able setup and a veth pair whose end "mvpar0" parents macvlans,
// the master conf (bridge + host-local, IPv4 and IPv6) and braid's conf.
func newRig(t *testing.T, ver string) *rig {
	t.Helper()
	needSuite(t)
	r := &rig{t: t, version: ver, dir: t.TempDir()}
	r.ns = suiteEnv.Namespace(t)
	hostNS, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	r.hostNS = hostNS
	t.Cleanup(func() {
		_ = hostNS.Close()
		if err := testutils.UnmountNS(hostNS); err != nil {
			t.Errorf("unmount host netns: %v", err)
		}
	})
	err = hostNS.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "mvpar0"}, PeerName: "mvpeer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		for _, n := range []string{"mvpar0", "mvpeer0", "lo"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("host netns setup: %v", err)
	}
	for _, d := range []string{"net.d", "cni", "ipam", "devinfo"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.confPath = filepath.Join(r.dir, "net.d", "10-cbr0.conflist")
	r.writeFile(r.confPath, fmt.Sprintf(`{"cniVersion":%q,"name":"cbr0","plugins":[{"type":"bridge","bridge":"br0",
		"isGateway":true,"isDefaultGateway":true,"ipam":{"type":"host-local","dataDir":%q,
		"ranges":[[{"subnet":"203.0.113.0/24"}],[{"subnet":"2001:db8:1::/64"}]]}}]}`, ver, r.ipamDir()))
	r.exec = &recordingExec{Exec: newDelegateExec(os.Stderr)}
	r.plugin = New(Deps{
		Kube: func(path string) (Kube, error) {
			cfg, err := clientcmd.BuildConfigFromFlags("", path)
			if err != nil {
				return nil, err
			}
			cfg.Wrap(kube.CountingTransport(func() { r.apiCalls.Add(1) }))
			return kube.New(cfg)
		},
		Exec:   r.exec,
		Stderr: testWriter{t},
	})
	r.setConf(nil)
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func (r *rig) ipamDir() string { return filepath.Join(r.dir, "ipam") }

func (r *rig) writeFile(path, content string) {
	r.t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// setConf (re)writes braid's conf with extra keys.
func (r *rig) setConf(extra map[string]any) {
	c := map[string]any{
		"cniVersion": r.version, "name": "braid", "type": "braid",
		"clusterNetwork": r.confPath, "kubeconfig": kubeconfig,
		"confDir": filepath.Join(r.dir, "net.d"), "cniDir": filepath.Join(r.dir, "cni"), "binDir": cniBinDir,
		"deviceInfoDir": filepath.Join(r.dir, "devinfo"), "logLevel": "debug", "podLookupTimeoutSeconds": 2,
	}
	for k, v := range extra {
		c[k] = v
	}
	b, err := json.Marshal(c)
	if err != nil {
		r.t.Fatal(err)
	}
	r.stdin = b
}

// nad creates a NAD in the rig's namespace; config "" makes one without spec.config.
func (r *rig) nad(name, config string, annotations map[string]string) {
	r.t.Helper()
	r.nadIn(r.ns, name, config, annotations)
}

// nadIn creates a NAD in namespace.
func (r *rig) nadIn(namespace, name, config string, annotations map[string]string) {
	r.t.Helper()
	u := &nadv1.NetworkAttachmentDefinition{}
	u.Name, u.Namespace, u.Annotations = name, namespace, annotations
	u.Spec.Config = config
	obj, err := toUnstructured(u)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := suiteEnv.Client.Create(r.t.Context(), obj); err != nil {
		r.t.Fatalf("create NAD %s: %v", name, err)
	}
}

// macvlanConf is a macvlan-on-mvpar0 network with the given IPAM and capabilities.
func (r *rig) macvlanConf(ipam string, caps string) string {
	if caps == "" {
		caps = "{}"
	}
	return fmt.Sprintf(`{"cniVersion":%q,"type":"macvlan","master":"mvpar0","mode":"bridge","capabilities":%s,"ipam":%s}`, r.version, caps, ipam)
}

func (r *rig) hostLocal(subnet, start, end, gw string) string {
	return fmt.Sprintf(`{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q,"rangeStart":%q,"rangeEnd":%q,"gateway":%q}]]}`,
		r.ipamDir(), subnet, start, end, gw)
}

// standardNADs creates the networks most tests use:
//   - net-a: macvlan + host-local 198.51.100.10-99
//   - net-b: macvlan + static, declaring the "ips" and "mac" capabilities
//   - disk-net: a NAD without spec.config whose conf (macvlan + host-local 192.0.2.0/24) is on disk
func (r *rig) standardNADs() {
	r.nad("net-a", r.macvlanConf(r.hostLocal("198.51.100.0/24", "198.51.100.10", "198.51.100.99", "198.51.100.1"), ""), nil)
	r.nad("net-b", r.macvlanConf(`{"type":"static"}`, `{"ips":true,"mac":true}`), nil)
	r.nad("disk-net", "", nil)
	r.writeFile(filepath.Join(r.dir, "net.d", "20-disk-net.conf"), fmt.Sprintf(`{"cniVersion":%q,"name":"disk-net","type":"macvlan",
		"master":"mvpar0","mode":"bridge","ipam":%s}`, r.version, r.hostLocal("192.0.2.0/24", "192.0.2.10", "192.0.2.99", "192.0.2.1")))
}

// pod is a pod in the API server with its own network namespace and container ID.
type pod struct {
	name, uid, containerID string
	netns                  ns.NetNS
}

func (r *rig) pod(name string, annotations map[string]string) *pod {
	r.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns, Annotations: annotations},
		Spec: corev1.PodSpec{NodeName: r.node, Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause:1"}}}}
	if err := suiteEnv.Client.Create(r.t.Context(), p); err != nil {
		r.t.Fatalf("create pod: %v", err)
	}
	r.waitWatchCache(p)
	netns, err := testutils.NewNS()
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		_ = netns.Close()
		if err := testutils.UnmountNS(netns); err != nil {
			r.t.Errorf("unmount pod netns: %v", err)
		}
	})
	return &pod{name: name, uid: string(p.UID), containerID: "c" + randHex(16), netns: netns}
}

// waitWatchCache waits until the API server's watch cache has the pod. A kubelet asks the runtime for a
// sandbox only after its own watch (served from that cache) delivered the pod, so braid's first, cached read
// finds it; a test that creates the pod just before ADD must wait for the same, or its API-call counts vary.
func (r *rig) waitWatchCache(p *corev1.Pod) {
	r.t.Helper()
	c, err := kube.New(suiteEnv.Config)
	if err != nil {
		r.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := c.GetPod(r.t.Context(), p.Namespace, p.Name, false)
		if err == nil && got.UID == p.UID {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("pod %s/%s not in the API server's watch cache after 10s: %v", p.Namespace, p.Name, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) args(p *pod) *skel.CmdArgs {
	return &skel.CmdArgs{
		ContainerID: p.containerID, Netns: p.netns.Path(), IfName: "eth0",
		Args:      fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s", r.ns, p.name, p.containerID, p.uid),
		Path:      cniBinDir,
		StdinData: r.stdin,
	}
}

// add runs braid's ADD from the host namespace, as the runtime would, and returns the result as 1.0.0.
func (r *rig) add(p *pod) (*types100.Result, error) {
	r.t.Helper()
	var res types.Result
	err := r.hostNS.Do(func(ns.NetNS) error {
		var err error
		res, _, err = testutils.CmdAddWithArgs(r.args(p), func() error { return r.plugin.CmdAdd(r.args(p)) })
		return err
	})
	if err != nil {
		return nil, err
	}
	return types100.NewResultFromResult(res)
}

func (r *rig) del(p *pod) error {
	return r.hostNS.Do(func(ns.NetNS) error {
		return testutils.CmdDelWithArgs(r.args(p), func() error { return r.plugin.CmdDel(r.args(p)) })
	})
}

func (r *rig) check(p *pod) error {
	return r.hostNS.Do(func(ns.NetNS) error {
		return testutils.CmdCheckWithArgs(r.args(p), func() error { return r.plugin.CmdCheck(r.args(p)) })
	})
}

// links lists the pod's interfaces other than lo.
func links(t *testing.T, n ns.NetNS) map[string]netlink.Link {
	t.Helper()
	out := map[string]netlink.Link{}
	err := n.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range ls {
			if l.Attrs().Name != "lo" {
				out[l.Attrs().Name] = l
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// addrs lists the global addresses of one interface in the pod, without prefix length.
func addrs(t *testing.T, n ns.NetNS, ifName string) []string {
	t.Helper()
	var out []string
	err := n.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range as {
			if a.IP.IsGlobalUnicast() {
				out = append(out, a.IP.String())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("addresses of %s: %v", ifName, err)
	}
	return out
}

// defaultRoutes returns "family dev gw" of each default route in the pod.
func defaultRoutes(t *testing.T, n ns.NetNS) []string {
	t.Helper()
	var out []string
	err := n.Do(func(ns.NetNS) error {
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := netlink.RouteList(nil, fam)
			if err != nil {
				return err
			}
			for _, rt := range rs {
				if rt.Dst != nil {
					if ones, _ := rt.Dst.Mask.Size(); ones != 0 {
						continue
					}
				}
				l, err := netlink.LinkByIndex(rt.LinkIndex)
				if err != nil {
					return err
				}
				out = append(out, fmt.Sprintf("%s via %s", l.Attrs().Name, rt.Gw))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hostLinks lists the host namespace's links (bridge, veth ends, macvlan parent).
func (r *rig) hostLinks() []string {
	var out []string
	for n := range links(r.t, r.hostNS) {
		out = append(out, n)
	}
	return out
}

// status reads the pod's network-status annotation.
func (r *rig) status(p *pod) []netstatus.Status {
	r.t.Helper()
	var got corev1.Pod
	if err := suiteEnv.Client.Get(r.t.Context(), client.ObjectKey{Namespace: r.ns, Name: p.name}, &got); err != nil {
		r.t.Fatal(err)
	}
	v, ok := got.Annotations[netstatus.Annotation]
	if !ok {
		return nil
	}
	sts, err := netstatus.Decode(v)
	if err != nil {
		r.t.Fatal(err)
	}
	return sts
}

// ipamFiles lists host-local's reservations (one file per address) of every range.
func (r *rig) ipamFiles() []string {
	var out []string
	_ = filepath.WalkDir(r.ipamDir(), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && net.ParseIP(d.Name()) != nil {
			out = append(out, d.Name())
		}
		return nil
	})
	return out
}

// cacheFiles lists braid's records and libcni's cached results.
func (r *rig) cacheFiles() []string {
	var out []string
	_ = filepath.WalkDir(filepath.Join(r.dir, "cni"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, strings.TrimPrefix(path, r.dir+"/"))
		}
		return nil
	})
	return out
}

func cniCode(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func toUnstructured(n *nadv1.NetworkAttachmentDefinition) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(n)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(nadv1.SchemeGroupVersion.WithKind("NetworkAttachmentDefinition"))
	return u, nil
}
