package plugin_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/braid-cni/braid/sriov-device/internal/devinfo"
	"github.com/braid-cni/braid/sriov-device/internal/pcitree"
	"github.com/braid-cni/braid/sriov-device/internal/plugin"
)

// world is a node for the plugin: the standard fake PCI tree, a config file, a fake kubelet and the plugin
// running with them.
type world struct {
	tree       *pcitree.Tree
	config     string
	pluginDir  string
	devinfoDir string
	kubelet    *fakeKubelet
	hostEvents chan struct{}
}

const baseConfig = `{"resourceList": [
	{"resourceName": "x710", "selectors": {"drivers": ["iavf"], "pfNames": ["ens1f0#0-2"]}},
	{"resourceName": "x710_dpdk", "selectors": {"drivers": ["vfio-pci"]}},
	{"resourceName": "cx6", "resourcePrefix": "example.org", "selectors": [{"vendors": ["15b3"], "devices": ["101c"]}]}
]}`

// start runs the plugin against a fresh world. resync 0 leaves rescans to host events (sent by the test).
func start(t *testing.T, config string, resync time.Duration) *world {
	t.Helper()
	base := t.TempDir()
	tree, err := pcitree.Standard(filepath.Join(base, "host"))
	if err != nil {
		t.Fatal(err)
	}
	w := &world{tree: tree, config: filepath.Join(base, "etc", "config.json"),
		pluginDir: filepath.Join(base, "dp"), devinfoDir: filepath.Join(base, "devinfo"),
		hostEvents: make(chan struct{}, 1)}
	for _, dir := range []string{filepath.Dir(w.config), w.pluginDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.writeConfig(t, config)
	w.kubelet = startKubelet(t, w.pluginDir)

	stop := runPlugin(t, plugin.Options{
		Root: tree.Root, ConfigFile: w.config, PluginDir: w.pluginDir, DevInfoDir: w.devinfoDir,
		Resync: resync, Debounce: 10 * time.Millisecond, HostEvents: w.hostEvents,
	})
	t.Cleanup(stop)
	return w
}

// writeConfig replaces the config file atomically, as editors and ConfigMap volumes do.
func (w *world) writeConfig(t *testing.T, config string) {
	t.Helper()
	tmp := w.config + ".tmp"
	if err := os.WriteFile(tmp, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, w.config); err != nil {
		t.Fatal(err)
	}
}

func (w *world) socket(resource string) string {
	return filepath.Join(w.pluginDir, "braid-sriov-"+strings.ReplaceAll(resource, "/", "_")+".sock")
}

type want struct {
	id      string
	healthy bool
	numa    int64
}

func devices(list []*pluginapi.Device) []want {
	var out []want
	for _, d := range list {
		numa := int64(-1)
		if nodes := d.GetTopology().GetNodes(); len(nodes) == 1 {
			numa = nodes[0].GetID()
		}
		out = append(out, want{d.GetID(), d.GetHealth() == pluginapi.Healthy, numa})
	}
	slices.SortFunc(out, func(a, b want) int {
		if a.id < b.id {
			return -1
		}
		if a.id > b.id {
			return 1
		}
		return 0
	})
	return out
}

func exactly(ws ...want) func([]*pluginapi.Device) bool {
	return func(list []*pluginapi.Device) bool { return cmp.Equal(ws, devices(list), cmp.AllowUnexported(want{})) }
}

func TestRegistersEveryResourceAndListsItsDevices(t *testing.T) {
	w := start(t, baseConfig, 0)
	reqs := w.kubelet.waitRegistered(t, "braid.dev/x710", "braid.dev/x710_dpdk", "example.org/cx6")
	for name, req := range reqs {
		if req.GetVersion() != pluginapi.Version || req.GetEndpoint() != filepath.Base(w.socket(name)) ||
			!req.GetOptions().GetGetPreferredAllocationAvailable() {
			t.Errorf("registration of %s: %v", name, req)
		}
		if ep := w.kubelet.endpoint(t, name); !ep.options.GetGetPreferredAllocationAvailable() ||
			ep.options.GetPreStartRequired() {
			t.Errorf("options of %s: %v", name, ep.options)
		}
	}
	vfs, cx := pcitree.X710VFs(), pcitree.CX6VFs()
	w.kubelet.endpoint(t, "braid.dev/x710").waitList(t, "x710 VFs 0-2", exactly(
		want{vfs[0], true, 0}, want{vfs[1], true, 0}, want{vfs[2], true, 0}))
	w.kubelet.endpoint(t, "braid.dev/x710_dpdk").waitList(t, "the vfio VF", exactly(want{vfs[3], true, 0}))
	w.kubelet.endpoint(t, "example.org/cx6").waitList(t, "cx6 VFs", exactly(
		want{cx[0], true, 1}, want{cx[1], true, 1}, want{cx[2], true, 1}, want{cx[3], true, 1}))
}

func TestAllocate(t *testing.T) {
	w := start(t, baseConfig, 0)
	w.kubelet.waitRegistered(t, "braid.dev/x710", "braid.dev/x710_dpdk", "example.org/cx6")
	vfs := pcitree.X710VFs()
	ctx := context.Background()

	t.Run("netdev VFs: env and device-info, no device nodes", func(t *testing.T) {
		ep := w.kubelet.endpoint(t, "braid.dev/x710")
		resp, err := ep.client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{vfs[2], vfs[0]}},
			{DevicesIds: []string{vfs[1]}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetContainerResponses()) != 2 {
			t.Fatalf("got %d container responses, want 2", len(resp.GetContainerResponses()))
		}
		first := resp.GetContainerResponses()[0]
		if got := first.GetEnvs()["PCIDEVICE_BRAID_DEV_X710"]; got != vfs[2]+","+vfs[0] {
			t.Errorf("PCIDEVICE_BRAID_DEV_X710 = %q", got)
		}
		var info map[string]map[string]map[string]string
		if err := json.Unmarshal([]byte(first.GetEnvs()["PCIDEVICE_BRAID_DEV_X710_INFO"]), &info); err != nil {
			t.Fatal(err)
		}
		wantInfo := map[string]map[string]map[string]string{
			vfs[0]: {"generic": {"deviceID": vfs[0]}}, vfs[2]: {"generic": {"deviceID": vfs[2]}}}
		if diff := cmp.Diff(wantInfo, info); diff != "" {
			t.Errorf("_INFO (-want +got):\n%s", diff)
		}
		if len(first.GetDevices()) != 0 || len(first.GetMounts()) != 0 {
			t.Errorf("device specs %v, mounts %v for netdev VFs", first.GetDevices(), first.GetMounts())
		}
		if got := resp.GetContainerResponses()[1].GetEnvs()["PCIDEVICE_BRAID_DEV_X710"]; got != vfs[1] {
			t.Errorf("second container: PCIDEVICE_BRAID_DEV_X710 = %q", got)
		}
		store := devinfo.NewStore(w.devinfoDir)
		for _, vf := range vfs[:3] {
			got, err := store.Read("braid.dev/x710", vf)
			if err != nil {
				t.Fatal(err)
			}
			wantDoc := devinfo.Info{Type: "pci", Version: "1.1.0",
				PCI: &devinfo.PCI{PCIAddress: vf, PFPCIAddress: pcitree.X710PF}}
			if diff := cmp.Diff(wantDoc, got); diff != "" {
				t.Errorf("device-info of %s (-want +got):\n%s", vf, diff)
			}
		}
		if _, err := os.Stat(filepath.Join(w.devinfoDir, "braid.dev-x710-"+vfs[0]+"-device.json")); err != nil {
			t.Errorf("device-info file not where NPWG meta-plugins look: %v", err)
		}
	})

	t.Run("vfio-pci VF: /dev/vfio nodes", func(t *testing.T) {
		ep := w.kubelet.endpoint(t, "braid.dev/x710_dpdk")
		resp, err := ep.client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{pcitree.X710VFIO}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		group := w.tree.IOMMUGroup(pcitree.X710VFIO)
		cr := resp.GetContainerResponses()[0]
		var gotSpecs []string
		for _, s := range cr.GetDevices() {
			gotSpecs = append(gotSpecs, s.GetHostPath()+":"+s.GetContainerPath()+":"+s.GetPermissions())
		}
		wantSpecs := []string{"/dev/vfio/vfio:/dev/vfio/vfio:rw", "/dev/vfio/" + group + ":/dev/vfio/" + group + ":rw"}
		if diff := cmp.Diff(wantSpecs, gotSpecs); diff != "" {
			t.Errorf("device specs (-want +got):\n%s", diff)
		}
		var info map[string]map[string]map[string]string
		if err := json.Unmarshal([]byte(cr.GetEnvs()["PCIDEVICE_BRAID_DEV_X710_DPDK_INFO"]), &info); err != nil {
			t.Fatal(err)
		}
		if info[pcitree.X710VFIO]["vfio"]["dev-mount"] != "/dev/vfio/"+group {
			t.Errorf("_INFO = %v", info)
		}
	})

	t.Run("unknown device", func(t *testing.T) {
		ep := w.kubelet.endpoint(t, "braid.dev/x710")
		_, err := ep.client.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
			{DevicesIds: []string{pcitree.CX6VFs()[0]}},
		}})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Allocate of another resource's device = %v, want InvalidArgument", err)
		}
	})
}

func TestPreferredAllocation(t *testing.T) {
	w := start(t, `{"resourceList": [{"resourceName": "all_vfs", "selectors": {"drivers": ["iavf", "mlx5_core"]}}]}`, 0)
	w.kubelet.waitRegistered(t, "braid.dev/all_vfs")
	ep := w.kubelet.endpoint(t, "braid.dev/all_vfs")
	vfs, cx := pcitree.X710VFs(), pcitree.CX6VFs()
	// Kubelet-like request: everything available, one device already pinned on the ConnectX-6.
	resp, err := ep.client.GetPreferredAllocation(context.Background(), &pluginapi.PreferredAllocationRequest{
		ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
			{AvailableDeviceIDs: append(append([]string{}, vfs[:3]...), cx...), AllocationSize: 3},
			{AvailableDeviceIDs: append(append([]string{}, vfs[:3]...), cx...), MustIncludeDeviceIDs: []string{cx[2]},
				AllocationSize: 2},
		}})
	if err != nil {
		t.Fatal(err)
	}
	got := [][]string{resp.GetContainerResponses()[0].GetDeviceIDs(), resp.GetContainerResponses()[1].GetDeviceIDs()}
	wantIDs := [][]string{vfs[:3], {cx[2], cx[0]}}
	if diff := cmp.Diff(wantIDs, got); diff != "" {
		t.Errorf("preferred (-want +got):\n%s", diff)
	}
}

func TestListAndWatchFollowsLinkState(t *testing.T) {
	// No host events here: a fake tree's files change silently, so the periodic resync must catch it.
	w := start(t, baseConfig, 50*time.Millisecond)
	w.kubelet.waitRegistered(t, "braid.dev/x710", "braid.dev/x710_dpdk", "example.org/cx6")
	x710, dpdk := w.kubelet.endpoint(t, "braid.dev/x710"), w.kubelet.endpoint(t, "braid.dev/x710_dpdk")
	vfs := pcitree.X710VFs()
	x710.waitList(t, "healthy", exactly(want{vfs[0], true, 0}, want{vfs[1], true, 0}, want{vfs[2], true, 0}))

	if err := w.tree.SetLink(pcitree.X710PF, pcitree.X710PFNet, true, false); err != nil {
		t.Fatal(err)
	}
	x710.waitList(t, "PF link down", exactly(want{vfs[0], false, 0}, want{vfs[1], false, 0}, want{vfs[2], false, 0}))
	dpdk.waitList(t, "PF link down", exactly(want{vfs[3], false, 0}))

	if err := w.tree.SetLink(pcitree.X710PF, pcitree.X710PFNet, true, true); err != nil {
		t.Fatal(err)
	}
	x710.waitList(t, "PF link up", exactly(want{vfs[0], true, 0}, want{vfs[1], true, 0}, want{vfs[2], true, 0}))

	// A VF's own netdev brought up without carrier.
	if err := w.tree.SetLink(vfs[1], "ens1f0v1", true, false); err != nil {
		t.Fatal(err)
	}
	x710.waitList(t, "VF link down", exactly(want{vfs[0], true, 0}, want{vfs[1], false, 0}, want{vfs[2], true, 0}))
	if err := w.tree.SetLink(vfs[1], "ens1f0v1", true, true); err != nil {
		t.Fatal(err)
	}
	x710.waitList(t, "VF link up", exactly(want{vfs[0], true, 0}, want{vfs[1], true, 0}, want{vfs[2], true, 0}))
}

func TestListAndWatchFollowsVFsComingAndGoing(t *testing.T) {
	// Resync off: only the host event (a uevent on a host) triggers the rescans.
	w := start(t, baseConfig, 0)
	w.kubelet.waitRegistered(t, "braid.dev/x710", "braid.dev/x710_dpdk", "example.org/cx6")
	cxEP := w.kubelet.endpoint(t, "example.org/cx6")
	cx := pcitree.CX6VFs()
	all := exactly(want{cx[0], true, 1}, want{cx[1], true, 1}, want{cx[2], true, 1}, want{cx[3], true, 1})
	cxEP.waitList(t, "four VFs", all)

	if err := w.tree.RemoveVF(pcitree.CX6PF, 3); err != nil {
		t.Fatal(err)
	}
	w.hostEvents <- struct{}{}
	cxEP.waitList(t, "VF 3 gone", exactly(want{cx[0], true, 1}, want{cx[1], true, 1}, want{cx[2], true, 1}))

	if err := w.tree.AddVF(pcitree.CX6PF, 3, pcitree.Function{Address: cx[3], Vendor: pcitree.MellanoxVendor,
		Device: pcitree.CX6VFDevice, Class: "020000", Driver: "mlx5_core", NUMANode: 1, IOMMU: true,
		Netdevs: []pcitree.Netdev{{Name: "ens2f0v3"}}}); err != nil {
		t.Fatal(err)
	}
	w.hostEvents <- struct{}{}
	cxEP.waitList(t, "VF 3 back", all)

	// Unbinding the vfio VF removes it from its resource.
	if err := w.tree.Bind(pcitree.X710VFIO, ""); err != nil {
		t.Fatal(err)
	}
	w.hostEvents <- struct{}{}
	w.kubelet.endpoint(t, "braid.dev/x710_dpdk").waitList(t, "vfio VF unbound", exactly())
}

func TestConfigReload(t *testing.T) {
	w := start(t, baseConfig, 0)
	w.kubelet.waitRegistered(t, "braid.dev/x710", "braid.dev/x710_dpdk", "example.org/cx6")
	x710, dpdk := w.kubelet.endpoint(t, "braid.dev/x710"), w.kubelet.endpoint(t, "braid.dev/x710_dpdk")
	vfs := pcitree.X710VFs()
	x710.waitList(t, "initial", exactly(want{vfs[0], true, 0}, want{vfs[1], true, 0}, want{vfs[2], true, 0}))

	// A bad config is refused and changes nothing.
	w.writeConfig(t, `{"resourceList": [{"resourceName": "x710", "selectors": {"pfNames": ["ens1f0#3-1"]}}]}`)
	w.kubelet.noRegistration(t, 500*time.Millisecond)
	if err := socketGone(w.socket("braid.dev/x710_dpdk")); err == nil {
		t.Fatal("a rejected config removed a resource")
	}

	// x710 narrows to VF 0, x710_dpdk goes, intel_pf appears, cx6 stays.
	w.writeConfig(t, `{"resourceList": [
		{"resourceName": "x710", "selectors": {"pfNames": ["ens1f0#0"]}},
		{"resourceName": "cx6", "resourcePrefix": "example.org", "selectors": {"vendors": ["15b3"]}},
		{"resourceName": "intel_pf", "selectors": {"vendors": ["8086"], "devices": ["1572"]}}
	]}`)
	w.kubelet.waitRegistered(t, "braid.dev/intel_pf")
	w.kubelet.endpoint(t, "braid.dev/intel_pf").waitList(t, "new resource", exactly(
		want{pcitree.X710NoVFs, true, 0}, want{pcitree.BrokenModalias, true, 1}))
	x710.waitList(t, "narrowed", exactly(want{vfs[0], true, 0}))
	select {
	case <-dpdk.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the removed resource's ListAndWatch stream did not end")
	}
	if err := socketGone(w.socket("braid.dev/x710_dpdk")); err != nil {
		t.Errorf("removed resource's socket: %v", err)
	}
	// Resources that stayed did not register again.
	w.kubelet.noRegistration(t, 300*time.Millisecond)
}

func TestReRegistersWhenTheKubeletRestarts(t *testing.T) {
	w := start(t, baseConfig, 0)
	all := []string{"braid.dev/x710", "braid.dev/x710_dpdk", "example.org/cx6"}
	w.kubelet.waitRegistered(t, all...)
	old := w.kubelet.endpoint(t, "braid.dev/x710")

	w.kubelet.restart() // empties the directory, our sockets included, then creates kubelet.sock
	select {
	case <-old.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("old ListAndWatch stream still open")
	}
	w.kubelet.waitRegistered(t, all...)
	vfs := pcitree.X710VFs()
	ep := w.kubelet.endpoint(t, "braid.dev/x710")
	ep.waitList(t, "after restart", exactly(want{vfs[0], true, 0}, want{vfs[1], true, 0}, want{vfs[2], true, 0}))
	if _, err := ep.client.Allocate(context.Background(), &pluginapi.AllocateRequest{
		ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: []string{vfs[0]}}}}); err != nil {
		t.Errorf("Allocate through the new registration: %v", err)
	}

	// A kubelet that is away for a while: the plugin waits for its socket, no polling needed.
	w.kubelet.stop()
	_ = os.Remove(filepath.Join(w.pluginDir, "kubelet.sock"))
	w.kubelet.noRegistration(t, 300*time.Millisecond)
	w.kubelet.start()
	w.kubelet.waitRegistered(t, all...)
}

func TestStartsBeforeTheKubelet(t *testing.T) {
	base := t.TempDir()
	tree, err := pcitree.Standard(filepath.Join(base, "host"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(base, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"resourceList": [{"resourceName": "x710", "selectors": {"drivers": ["iavf"]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	pluginDir := filepath.Join(base, "dp") // does not exist yet: the kubelet has never run
	stop := runPlugin(t, plugin.Options{Root: tree.Root, ConfigFile: cfg, PluginDir: pluginDir,
		DevInfoDir: filepath.Join(base, "devinfo")})
	defer func() {
		stop()
		if err := socketGone(filepath.Join(pluginDir, "braid-sriov-braid.dev_x710.sock")); err != nil {
			t.Errorf("after shutdown: %v", err)
		}
	}()
	// Wait until the plugin serves (its socket exists), then start the kubelet, which empties the directory
	// (removing that socket) and creates kubelet.sock.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(pluginDir, "braid-sriov-braid.dev_x710.sock")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("plugin socket never appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}
	k := startKubelet(t, pluginDir)
	k.waitRegistered(t, "braid.dev/x710")
	k.endpoint(t, "braid.dev/x710").waitList(t, "served", func(l []*pluginapi.Device) bool { return len(l) == 3 })
}

func TestRunRefusesABadConfig(t *testing.T) {
	base := t.TempDir()
	if _, err := pcitree.Standard(base); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(base, "config.json")
	if err := os.WriteFile(cfg, []byte(`{"resourceList": [{"resourceName": "x", "selectors": {"vendors": ["80861"]}}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := plugin.Run(context.Background(), plugin.Options{Root: base, ConfigFile: cfg,
		PluginDir: filepath.Join(base, "dp"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "resourceList[0].selectors.vendors[0]") {
		t.Errorf("Run with a bad config = %v, want an error naming the field", err)
	}
}

// testLog sends the plugin's log to t.Log until the test ends (a late line must not reach a finished test).
type testLog struct {
	t      *testing.T
	mu     sync.Mutex
	closed bool
	logger *slog.Logger
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{t: t}
	l.logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return l
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Log(string(p[:len(p)-1]))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}

// runPlugin runs plugin.Run with a test logger until the returned stop is called; stop cancels it, waits for
// it to return (reporting its error) and silences the logger.
func runPlugin(t *testing.T, opts plugin.Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := newTestLog(t)
	opts.Logger = log.logger
	done := make(chan error, 1)
	go func() { done <- plugin.Run(ctx, opts) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		log.close()
	}
}
