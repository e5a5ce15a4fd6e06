package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/shim"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// holdFinalizer keeps a deleted test pod in the API server with its deletionTimestamp, as a terminating pod
// stays while the kubelet stops its containers.
const holdFinalizer = "braid.dev/test-hold"

// addPath is how braid-ipam reads the pod: from braid's node daemon, whose answer must then suffice (the
// API server of its kubeconfig cannot be reached), or from the API server.
type addPath struct{ name, socket, kubeconfig string }

func addPaths(t *testing.T, socket string) []addPath {
	t.Helper()
	return []addPath{{"daemon", socket, unreachableKubeconfig(t)}, {"api", "/nonexistent/braid.sock", kubeconfig}}
}

// ipamConf is a braid-ipam network config for path with ipam.timeout timeout.
func (p addPath) ipamConf(name, pool, timeout string) []byte {
	return []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"ipam":{"type":"braid-ipam","pools":[%q],"kubeconfig":%q,`+
		`"timeout":%q,"daemonSocket":%q}}`, name, pool, p.kubeconfig, timeout, p.socket))
}

// execAdd runs the braid-ipam binary's ADD for pod's net1, as a runtime does, and says how long it took.
func execAdd(pod *corev1.Pod, conf []byte) (*types100.Result, time.Duration, error) {
	start := time.Now()
	res, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(binDir, "braid-ipam"), conf,
		&invoke.Args{Command: "ADD", ContainerID: "c-" + pod.Name, NetNS: "/var/run/netns/unused", IfName: "net1", Path: binDir,
			PluginArgs: runtimeConf(pod, "/var/run/netns/unused").Args}, nil)
	took := time.Since(start)
	if err != nil {
		return nil, took, err
	}
	r, err := types100.NewResultFromResult(res)
	return r, took, err
}

// mkHeldPod creates a pod on node-1 that a finalizer keeps once deleted; networks is its networks annotation
// ("" for none: braid-ipam-server then never records anything for it).
func mkHeldPod(t *testing.T, ns, name, networks string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Finalizers: []string{holdFinalizer}},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "pause"}}},
	}
	if networks != "" {
		pod.Annotations = map[string]string{"k8s.v1.cni.cncf.io/networks": networks}
	}
	must(t, k8s.Create(context.Background(), pod))
	t.Cleanup(func() {
		p := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(pod), p); err != nil {
			return
		}
		patch := client.MergeFrom(p.DeepCopy())
		p.Finalizers = nil
		_ = k8s.Patch(context.Background(), p, patch)
		_ = k8s.Delete(context.Background(), p, client.GracePeriodSeconds(0))
	})
	return pod
}

// startDeleting deletes the pod gracefully: the finalizer keeps it, with a deletionTimestamp.
func startDeleting(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	must(t, k8s.Delete(context.Background(), pod))
	p := &corev1.Pod{}
	must(t, k8s.Get(context.Background(), client.ObjectKeyFromObject(pod), p))
	if p.DeletionTimestamp == nil {
		t.Fatalf("pod %s/%s has no deletionTimestamp after its deletion", pod.Namespace, pod.Name)
	}
}

// braid-ipam-server never serves a pod that is being deleted, so ADD for a pod that has no address and is
// being deleted (before ADD, or while ADD waits) fails at once with code 11 saying so, on both paths, instead
// of waiting the whole ipam.timeout and blaming the server.
func TestAddForAPodBeingDeletedFailsAtOnce(t *testing.T) {
	ns := env.Namespace(t)
	socket := startDaemon(t, "node-1")
	for _, path := range addPaths(t, socket) {
		for _, when := range []string{"before", "during"} {
			t.Run(path.name+"/"+when, func(t *testing.T) {
				pod := mkHeldPod(t, ns, path.name+"-"+when, "")
				if when == "before" {
					startDeleting(t, pod)
				} else {
					time.AfterFunc(500*time.Millisecond, func() {
						if err := k8s.Delete(context.Background(), pod); err != nil {
							t.Error(err)
						}
					})
				}
				_, took, err := execAdd(pod, path.ipamConf("del-"+path.name, "unused", "60s"))
				var cniErr *types.Error
				if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || !strings.Contains(cniErr.Msg, "being deleted") {
					t.Fatalf("ADD = %v after %v, want code 11 saying the pod is being deleted", err, took)
				}
				if took > 5*time.Second {
					t.Errorf("ADD took %v; with the pod being deleted it must not wait for ipam.timeout (60s)", took)
				}
			})
		}
	}
}

// A pod that has its addresses keeps them until it is gone, so ADD during its graceful termination still
// returns them; and ADD for a pod deleted outright fails at once with code 11, on both paths.
func TestAddAroundPodDeletion(t *testing.T) {
	ns := env.Namespace(t)
	pool := mkPool(t, braidv1.IPPoolSpec{CIDR: "203.0.113.0/24"})
	socket := startDaemon(t, "node-1")
	for _, path := range addPaths(t, socket) {
		t.Run(path.name+"/assigned", func(t *testing.T) {
			nad := "held-" + path.name
			config := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"macvlan","master":"unused0","ipam":{"type":"braid-ipam","pools":[%q]}}`, nad, pool)
			mkNAD(t, ns, nad, config)
			pod := mkHeldPod(t, ns, nad, nad)
			want := currentAssignment(t, pod).Interfaces["net1"].Addresses
			startDeleting(t, pod)
			r, took, err := execAdd(pod, path.ipamConf(nad, pool, "60s"))
			must(t, err)
			if len(want) != 1 || len(r.IPs) != 1 || r.IPs[0].Address.String() != want[0].CIDR {
				t.Errorf("ADD after %v = %v, the assignment is %v", took, r.IPs, want)
			}
		})
	}
	// Deleted outright, the pod leaves the daemon's cache and braid-ipam asks the API server: reachable here. A
	// deletion while ADD waits shows first as the pod being deleted (the API server sets deletionTimestamp even
	// with a grace period of 0), then as its DELETED event.
	for _, path := range []addPath{{"daemon", socket, kubeconfig}, {"api", "/nonexistent/braid.sock", kubeconfig}} {
		for _, when := range []struct{ name, want string }{{"before", "not found"}, {"during", "deleted"}} {
			t.Run(path.name+"/gone-"+when.name, func(t *testing.T) {
				pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gone-" + path.name + "-" + when.name},
					Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
				must(t, k8s.Create(context.Background(), pod))
				deleteNow := func() {
					if err := k8s.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
						t.Error(err)
					}
				}
				if when.name == "before" {
					deleteNow()
				} else {
					if path.name == "daemon" {
						awaitDaemonSees(t, socket, pod) // else, on a busy machine, the daemon may never see it
					}
					time.AfterFunc(500*time.Millisecond, deleteNow)
				}
				_, took, err := execAdd(pod, path.ipamConf("gone-"+path.name, "unused", "60s"))
				var cniErr *types.Error
				if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater || !strings.Contains(cniErr.Msg, when.want) {
					t.Fatalf("ADD = %v after %v, want code 11 saying %q", err, took, when.want)
				}
				if took > 5*time.Second {
					t.Errorf("ADD took %v; for a deleted pod it must not wait for ipam.timeout (60s)", took)
				}
			})
		}
	}
}

// awaitDaemonSees waits until the daemon's cache holds the pod.
func awaitDaemonSees(t *testing.T, socket string, pod *corev1.Pod) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		a, err := shim.AskPodAnnotation(t.Context(), socket, shim.AnnotationQuery{Namespace: pod.Namespace, Name: pod.Name,
			Key: assignment.Annotation, After: "-", Wait: time.Millisecond})
		if err == nil && a.Found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon has not seen pod %s/%s in 30s (%v)", pod.Namespace, pod.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
