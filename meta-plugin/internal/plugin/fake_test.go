package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/google/go-cmp/cmp"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/meta-plugin/internal/conf"
)

// fakeKube is an in-memory API server for tests of the core's ordering and error handling; the real one is
// exercised by the netns suite.
type fakeKube struct {
	mu     sync.Mutex
	pods   map[string]*corev1.Pod
	nads   map[string]*nadv1.NetworkAttachmentDefinition
	status map[string]string
	events []string
}

var _ Kube = (*fakeKube)(nil)

func (f *fakeKube) GetPod(_ context.Context, ns, name string, _ bool) (*corev1.Pod, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.pods[ns+"/"+name]; ok {
		return p.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

func (f *fakeKube) GetNAD(_ context.Context, ns, name string, _ bool) (*nadv1.NetworkAttachmentDefinition, error) {
	if n, ok := f.nads[ns+"/"+name]; ok {
		return n, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "network-attachment-definitions"}, name)
}

func (f *fakeKube) SetPodAnnotation(_ context.Context, ns, name string, _ k8stypes.UID, key, value string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[ns+"/"+name] = value
	return nil
}

func (f *fakeKube) RecordEvent(_ context.Context, pod *corev1.Pod, _, reason, msg string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, reason+": "+msg)
	return nil
}

// fakeExec plays every delegate: it answers ADD with a one-interface result and fails the plugin types listed
// in fail ("type" for every command, "type:COMMAND" for one), recording "COMMAND type ifname" for each call.
type fakeExec struct {
	mu    sync.Mutex
	log   []string
	fail  map[string]bool
	inner version.PluginDecoder
}

var _ invoke.Exec = (*fakeExec)(nil)

func (f *fakeExec) ExecPlugin(_ context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	var c struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(stdin, &c)
	typ := filepath.Base(pluginPath)
	f.mu.Lock()
	f.log = append(f.log, fmt.Sprintf("%s %s %s", env["CNI_COMMAND"], typ, env["CNI_IFNAME"]))
	f.mu.Unlock()
	if f.fail[typ] || f.fail[typ+":"+env["CNI_COMMAND"]] {
		return nil, fmt.Errorf("%s refuses %s", typ, env["CNI_COMMAND"])
	}
	if env["CNI_COMMAND"] != "ADD" {
		return nil, nil
	}
	return fmt.Appendf(nil, `{"cniVersion":%q,"interfaces":[{"name":%q,"sandbox":"/x"}],"ips":[{"address":"192.0.2.7/24","interface":0}]}`,
		c.CNIVersion, env["CNI_IFNAME"]), nil
}

func (f *fakeExec) FindInPath(plugin string, _ []string) (string, error) {
	return "/fake/" + plugin, nil
}

func (f *fakeExec) Decode(b []byte) (version.PluginInfo, error) { return f.inner.Decode(b) }

func (f *fakeExec) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.log
	f.log = nil
	return out
}

func fakeNAD(name, typ string) *nadv1.NetworkAttachmentDefinition {
	n := &nadv1.NetworkAttachmentDefinition{}
	n.Name, n.Namespace = name, "app"
	n.Spec.Config = fmt.Sprintf(`{"cniVersion":"1.0.0","type":%q}`, typ)
	return n
}

func fakeWorld(t testing.TB, fail ...string) (*Plugin, *fakeKube, *fakeExec, *skel.CmdArgs) {
	t.Helper()
	k := &fakeKube{
		pods: map[string]*corev1.Pod{"app/web": {}},
		nads: map[string]*nadv1.NetworkAttachmentDefinition{
			"app/a": fakeNAD("a", "plugin-a"), "app/b": fakeNAD("b", "plugin-b"), "app/c": fakeNAD("c", "plugin-c")},
		status: map[string]string{},
	}
	pod := k.pods["app/web"]
	pod.Name, pod.Namespace, pod.UID = "web", "app", "uid-1"
	pod.Annotations = map[string]string{selection.NetworksAnnotation: "a,b,c"}
	x := &fakeExec{fail: map[string]bool{}}
	for _, f := range fail {
		x.fail[f] = true
	}
	p := New(Deps{Kube: func(string) (Kube, error) { return k, nil }, Exec: x, Stdout: io.Discard, Stderr: io.Discard})
	dir := t.TempDir()
	stdin := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"braid","type":"braid","kubeconfig":"/k","cniDir":%q,"deviceInfoDir":%q,
		"delegates":[{"cniVersion":"1.0.0","name":"master","type":"plugin-m"}]}`, filepath.Join(dir, "cni"), filepath.Join(dir, "devinfo"))
	args := &skel.CmdArgs{ContainerID: "cid", Netns: "/var/run/netns/x", IfName: "eth0", StdinData: []byte(stdin),
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=app;K8S_POD_NAME=web;K8S_POD_UID=uid-1"}
	return p, k, x, args
}

func TestAddRunsInOrderAndRollsBackInReverse(t *testing.T) {
	p, k, x, args := fakeWorld(t, "plugin-c:ADD")
	err := p.CmdAdd(args)
	if cniCode(err) != 999 || !strings.Contains(err.Error(), "plugin-c refuses ADD") || !strings.Contains(err.Error(), "rolled back 4") {
		t.Fatalf("ADD = %v, want the delegate's failure and a full rollback", err)
	}
	want := []string{"ADD plugin-m eth0", "ADD plugin-a net1", "ADD plugin-b net2", "ADD plugin-c net3",
		"DEL plugin-c net3", "DEL plugin-b net2", "DEL plugin-a net1", "DEL plugin-m eth0"}
	if diff := cmp.Diff(want, x.calls()); diff != "" {
		t.Fatalf("delegate calls (-want +got):\n%s", diff)
	}
	if len(k.events) != 1 || !strings.HasPrefix(k.events[0], EventReason) || len(k.status) != 0 {
		t.Fatalf("events %v status %v; want one %s event and no status", k.events, k.status, EventReason)
	}
}

func TestDelTriesEverythingAndJoinsErrors(t *testing.T) {
	p, k, x, args := fakeWorld(t)
	if err := p.CmdAdd(args); err != nil {
		t.Fatal(err)
	}
	if v := k.status["app/web"]; !strings.Contains(v, `"name":"app/c","interface":"net3"`) {
		t.Fatalf("network-status = %s", v)
	}
	x.calls()
	x.fail = map[string]bool{"plugin-b": true, "plugin-m": true}
	err := p.CmdDel(args)
	if err == nil || !strings.Contains(err.Error(), "plugin-b refuses DEL") || !strings.Contains(err.Error(), "plugin-m refuses DEL") {
		t.Fatalf("DEL = %v, want both failures reported", err)
	}
	want := []string{"DEL plugin-c net3", "DEL plugin-b net2", "DEL plugin-a net1", "DEL plugin-m eth0"}
	if diff := cmp.Diff(want, x.calls()); diff != "" {
		t.Fatalf("DEL calls (-want +got):\n%s", diff)
	}
	// The record stays until a DEL succeeds, and the next DEL still knows every attachment.
	x.fail = nil
	if err := p.CmdDel(args); err != nil {
		t.Fatalf("retried DEL: %v", err)
	}
	if diff := cmp.Diff(want, x.calls()); diff != "" {
		t.Fatalf("retried DEL calls (-want +got):\n%s", diff)
	}
}

func TestToCNI(t *testing.T) {
	_, err := conf.Parse([]byte(`{"type":"braid"}`))
	for _, tc := range []struct {
		err  error
		code uint
	}{
		{err, 7},
		{fmt.Errorf("x: %w", errTryAgain), 11},
		{fmt.Errorf("x: %w", errNetwork), CodeNetwork},
		{errors.New("boom"), 999},
	} {
		if got := toCNI("ADD", tc.err); got.Code != tc.code || !strings.HasPrefix(got.Msg, "add: ") {
			t.Errorf("toCNI(%v) = %d %q, want %d", tc.err, got.Code, got.Msg, tc.code)
		}
	}
}

func TestGCNeedsTheValidList(t *testing.T) {
	p, _, x, args := fakeWorld(t)
	if err := p.CmdAdd(args); err != nil {
		t.Fatal(err)
	}
	x.calls()
	gc := &skel.CmdArgs{StdinData: []byte(strings.Replace(string(args.StdinData), `"cniVersion":"1.0.0","name":"braid"`, `"cniVersion":"1.1.0","name":"braid"`, 1))}
	if err := p.CmdGC(gc); cniCode(err) != 7 || !strings.Contains(err.Error(), "valid-attachments") {
		t.Fatalf("GC without the list = %v, want code 7", err)
	}
	if calls := x.calls(); len(calls) != 0 {
		t.Fatalf("GC without the list ran %v", calls)
	}
	// An empty list is the runtime saying that nothing is valid any more (for a container older than gcGrace).
	var c struct {
		CNIDir string `json:"cniDir"`
	}
	if err := json.Unmarshal(args.StdinData, &c); err != nil {
		t.Fatal(err)
	}
	ageFiles(t, filepath.Join(c.CNIDir, "attachments", args.ContainerID+".json"))
	gc.StdinData = []byte(strings.Replace(string(gc.StdinData), `"type":"braid",`, `"type":"braid","cni.dev/valid-attachments":[],`, 1))
	if err := p.CmdGC(gc); err != nil {
		t.Fatalf("GC with an empty list: %v", err)
	}
	want := []string{"DEL plugin-c net3", "DEL plugin-b net2", "DEL plugin-a net1", "DEL plugin-m eth0"}
	if diff := cmp.Diff(want, x.calls()[:4]); diff != "" {
		t.Fatalf("GC calls (-want +got):\n%s", diff)
	}
}

// TestDelIgnoresFailuresOfNetworksThatNeverRan: after a failed ADD (rolled back), the runtime's DEL rebuilds
// the attachments from the pod; a delegate that cannot DEL what it never set up (host-device without its
// device) must not keep the pod from going, while a failing DEL of the cluster network is still reported.
func TestDelIgnoresFailuresOfNetworksThatNeverRan(t *testing.T) {
	p, _, x, args := fakeWorld(t, "plugin-b:ADD", "plugin-c:DEL")
	if err := p.CmdAdd(args); err == nil {
		t.Fatal("ADD should fail at plugin-b")
	}
	x.calls()
	if err := p.CmdDel(args); err != nil {
		t.Fatalf("DEL after a failed ADD: %v", err)
	}
	if calls := x.calls(); !slices.Contains(calls, "DEL plugin-c net3") || !slices.Contains(calls, "DEL plugin-m eth0") {
		t.Fatalf("DEL must still try every network: %v", calls)
	}
	x.fail["plugin-m:DEL"] = true
	if err := p.CmdDel(args); err == nil || !strings.Contains(err.Error(), "plugin-m refuses DEL") {
		t.Fatalf("a failing DEL of the cluster network must be reported, got %v", err)
	}
}

// TestDelAfterAnIncompleteRollback: ADD fails at plugin-b and its rollback cannot undo plugin-b (whose DEL
// fails every time, as host-device's does for a device it never moved). braid's record must not make every
// later DEL fail: plugin-c never ran and is not tried, plugin-b's ADD never finished (libcni has no result of
// it), so its failing DEL is logged, not returned; the cluster network and plugin-a are deleted again.
func TestDelAfterAnIncompleteRollback(t *testing.T) {
	p, _, x, args := fakeWorld(t, "plugin-b", "plugin-c:DEL")
	err := p.CmdAdd(args)
	if err == nil || !strings.Contains(err.Error(), "rollback incomplete") {
		t.Fatalf("ADD = %v, want a failure with an incomplete rollback", err)
	}
	x.calls()
	for i := range 2 {
		if err := p.CmdDel(args); err != nil {
			t.Fatalf("DEL %d after the failed ADD: %v", i+1, err)
		}
	}
	want := []string{"DEL plugin-b net2", "DEL plugin-a net1", "DEL plugin-m eth0"}
	if diff := cmp.Diff(want, x.calls()[:3]); diff != "" {
		t.Fatalf("first DEL's calls (-want +got):\n%s", diff)
	}
}

// ageFiles makes the files older than gcGrace: records GC may remove (not an ADD that may still run).
func ageFiles(t *testing.T, paths ...string) {
	t.Helper()
	old := time.Now().Add(-gcGrace - time.Minute)
	for _, f := range paths {
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
}
