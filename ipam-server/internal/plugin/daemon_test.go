package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// startDaemon runs the real `braid daemon` for node and returns its socket.
func startDaemon(t *testing.T, node string) string {
	t.Helper()
	dir := t.TempDir()
	if err := testenv.Build(t.Context(), dir, "./meta-plugin/cmd/braid"); err != nil {
		t.Fatal(err)
	}
	return testenv.StartBraidDaemon(t, filepath.Join(dir, "braid"), dir, node, kubeconfig)
}

// unreachableKubeconfig points at an API server that never answers: braid-ipam serves with it only from the
// daemon's answers.
func unreachableKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "unreachable.kubeconfig")
	must(t, os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:9", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600))
	return path
}

// On a node that runs braid's daemon, braid-ipam takes the assignment from the daemon's watch cache: it
// serves with a kubeconfig whose API server cannot be reached. A pod the daemon does not have (another node's
// here) is read from the API server instead.
func TestAddAsksTheNodeDaemon(t *testing.T) {
	socket := startDaemon(t, "node-1")
	unreachable := unreachableKubeconfig(t)
	pool := mkPool(t, braidv1.IPPoolSpec{CIDR: "198.51.100.0/24"})
	ns := env.Namespace(t)

	for _, tc := range []struct{ name, node, kubeconfig string }{
		{"daemon", "node-1", unreachable},
		{"api", "node-2", kubeconfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"d-%s","type":"macvlan","master":"unused0",`+
				`"ipam":{"type":"braid-ipam","pools":[%q],"kubeconfig":%q,"timeout":"5s","daemonSocket":%q}}`, tc.name, pool, tc.kubeconfig, socket)
			nad := "d-" + tc.name
			pod := mkPodWithNAD(t, ns, nad, config)
			if tc.node != pod.Spec.NodeName { // mkPodWithNAD binds to node-1: make another pod for another node
				pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "other-" + nad, Annotations: pod.Annotations},
					Spec: corev1.PodSpec{NodeName: tc.node, Containers: pod.Spec.Containers}}
				must(t, k8s.Create(context.Background(), pod))
			}
			start := time.Now()
			res, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(binDir, "braid-ipam"), []byte(config),
				&invoke.Args{Command: "ADD", ContainerID: "c-" + tc.name, NetNS: "/var/run/netns/unused", IfName: "net1", Path: binDir,
					PluginArgs: runtimeConf(pod, "/var/run/netns/unused").Args}, nil)
			must(t, err)
			r, err := types100.NewResultFromResult(res)
			must(t, err)
			var got, want []string
			for _, ip := range r.IPs {
				got = append(got, ip.Address.String())
			}
			for _, a := range currentAssignment(t, pod).Interfaces["net1"].Addresses {
				want = append(want, a.CIDR)
			}
			if len(want) == 0 || !slices.Equal(got, want) {
				t.Errorf("ADD returned %v, the assignment is %v", got, want)
			}
			t.Logf("ADD took %v", time.Since(start))
		})
	}
}

// A static pod is known to the runtime (and so to braid-ipam, in K8S_POD_UID) by the UID the kubelet gave it,
// and to the API by its mirror, which has another UID and names the static pod's in kubernetes.io/config.mirror.
// braid-ipam serves it from the daemon and from the API server alike, and CHECK accepts it; a UID that is
// neither is still refused.
func TestStaticPodIsServedThroughItsMirror(t *testing.T) {
	socket := startDaemon(t, "node-1")
	pool := mkPool(t, braidv1.IPPoolSpec{CIDR: "203.0.113.0/24"})
	ns := env.Namespace(t)
	const staticUID = "6f1e2d3c4b5a69788796a5b4c3d2e1f0" // the kubelet's hash of the manifest
	for _, tc := range []struct{ name, socket string }{
		{"daemon", socket},
		{"api", "/nonexistent/braid.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nad := "static-" + tc.name
			config := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"macvlan","master":"unused0",`+
				`"ipam":{"type":"braid-ipam","pools":[%q],"kubeconfig":%q,"timeout":"15s","daemonSocket":%q}}`, nad, pool, kubeconfig, tc.socket)
			// A UID that is neither the mirror's nor the static pod's is refused at the deadline (the pod of that
			// UID may yet appear): a short one for that call, a long one for the calls that must succeed under load.
			shortWait := strings.Replace(config, `"timeout":"15s"`, `"timeout":"3s"`, 1)
			mkNAD(t, ns, nad, config)
			mirror := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "etcd-" + nad, Annotations: map[string]string{
				"k8s.v1.cni.cncf.io/networks": nad, "kubernetes.io/config.mirror": staticUID,
				"kubernetes.io/config.hash": staticUID, "kubernetes.io/config.source": "file"}},
				Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
			must(t, k8s.Create(context.Background(), mirror))
			args := func(command, uid string) *invoke.Args {
				return &invoke.Args{Command: command, ContainerID: "c-static", NetNS: "/var/run/netns/unused", IfName: "net1", Path: binDir,
					PluginArgs: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", mirror.Name}, {"K8S_POD_UID", uid}}}
			}
			plugin := filepath.Join(binDir, "braid-ipam")

			res, err := invoke.ExecPluginWithResult(context.Background(), plugin, []byte(config), args("ADD", staticUID), nil)
			if err != nil {
				t.Fatalf("ADD of the static pod: %v", err)
			}
			r, err := types100.NewResultFromResult(res)
			must(t, err)
			want := currentAssignment(t, mirror).Interfaces["net1"].Addresses
			if len(r.IPs) != 1 || len(want) != 1 || r.IPs[0].Address.String() != want[0].CIDR {
				t.Fatalf("ADD returned %v, the mirror's assignment is %v", r.IPs, want)
			}
			prev, err := json.Marshal(r)
			must(t, err)
			check := []byte(fmt.Sprintf(`%s,"prevResult":%s}`, config[:len(config)-1], prev))
			if err := invoke.ExecPluginWithoutResult(context.Background(), plugin, check, args("CHECK", staticUID), nil); err != nil {
				t.Errorf("CHECK of the static pod: %v", err)
			}
			if _, err := invoke.ExecPluginWithResult(context.Background(), plugin, []byte(shortWait), args("ADD", "0badc0de0badc0de"), nil); err == nil ||
				!strings.Contains(err.Error(), "not 0badc0de0badc0de") {
				t.Errorf("ADD for a UID that is neither the mirror's nor the static pod's: %v, want a refusal naming it", err)
			}
		})
	}
}
