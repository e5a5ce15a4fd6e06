package plugin_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
