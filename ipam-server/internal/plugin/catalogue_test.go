package plugin_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/braid-cni/braid/crds/catalogue"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/plugin"
)

// ipamCase is a NAD whose braid-ipam section is bad; pod makes a pod that asks for the NAD, so that
// braid-ipam-server, running in TestMain, records why it cannot serve it.
type ipamCase struct {
	ipam string // the ipam section; KUBECONFIG stands for the test API server's node kubeconfig
	pod  bool
}

// TestCatalogue proves the IPAM rows of testdata/bad-input.md: braid-ipam's ADD runs in-process as a delegate
// runs it (stdin conf, CNI_ARGS of a pod, CNI_IFNAME), and must fail with the documented CNI code and message
// (msg and details, as the runtime prints a CNI error).
func TestCatalogue(t *testing.T) {
	ns := env.Namespace(t)
	invalid := &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "cat-overlap"}, Spec: braidv1.IPPoolSpec{CIDR: "192.0.2.0/24",
		Ranges: []braidv1.IPRange{{Start: "192.0.2.10", End: "192.0.2.100"}, {Start: "192.0.2.50", End: "192.0.2.150"}}}}
	must(t, k8s.Create(context.Background(), invalid))
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), invalid) })

	cases := map[string]ipamCase{
		"IPAM-01": {ipam: `{"type": "braid-ipam", "kubeconfig": "KUBECONFIG"}`},
		"IPAM-02": {ipam: `{"type": "braid-ipam", "pools": "mgmt", "kubeconfig": "KUBECONFIG"}`},
		"IPAM-03": {ipam: `{"type": "braid-ipam", "pools": ["Mgmt_Rack1"], "kubeconfig": "KUBECONFIG"}`},
		"IPAM-04": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "timeout": "soon", "kubeconfig": "KUBECONFIG"}`},
		"IPAM-05": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "timeout": "-5s", "kubeconfig": "KUBECONFIG"}`},
		"IPAM-06": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "kubeconfig": "node.kubeconfig"}`},
		"IPAM-07": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "kubeconfig": "/etc/cni/net.d/braid.d/missing.kubeconfig"}`},
		"IPAM-08": {ipam: `{"type": "braid-ipam", "pools": ["no-such-pool"], "timeout": "3s", "kubeconfig": "KUBECONFIG"}`, pod: true},
		"IPAM-09": {ipam: `{"type": "braid-ipam", "pools": ["cat-overlap"], "timeout": "3s", "kubeconfig": "KUBECONFIG"}`, pod: true},
		"IPAM-10": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "kubeconfig": "DIR/exec.kubeconfig"}`},
		"IPAM-11": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "kubeconfig": "DIR/nocontext.kubeconfig"}`},
		"IPAM-12": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "kubeconfig": "KUBECONFIG", "daemonSocket": "braid.sock"}`},
		"IPAM-13": {ipam: `{"type": "braid-ipam", "pools": ["mgmt"], "kubeconfig": "KUBECONFIG", "routes": [{"dst": "0.0.0.0/0"}]}`},
		"IPAM-14": {ipam: `{"type": "braid-ipam", "pool": ["mgmt"], "kubeconfig": "KUBECONFIG"}`},
	}
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "exec.kubeconfig"), []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: get-token}}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600))
	must(t, os.WriteFile(filepath.Join(dir, "nocontext.kubeconfig"), []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]
contexts: [{name: x, context: {cluster: c}}]
current-context: elsewhere
`), 0o600))
	catalogue.Run(t, cases, func(t *testing.T, row catalogue.Row, c ipamCase) {
		row.ExpectInput(t, c.ipam)
		c.ipam = strings.ReplaceAll(c.ipam, "DIR", dir)
		name := strings.ToLower(row.ID)
		config := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan", "master": "unused0", "ipam": %s}`,
			name, strings.ReplaceAll(c.ipam, "KUBECONFIG", kubeconfig))
		podName := "pod-" + name
		if c.pod {
			podName = mkPodWithNAD(t, ns, name, config).Name
		}
		p := &plugin.Plugin{NewClient: plugin.NewClientFromKubeconfig}
		err := p.Add(&skel.CmdArgs{ContainerID: "c-" + name, Netns: "/var/run/netns/unused", IfName: "net1",
			Args: fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s", ns, podName), StdinData: []byte(config)})
		var cniErr *types.Error
		if !errors.As(err, &cniErr) {
			t.Fatalf("ADD = %v, want a CNI error with code %d", err, row.Code())
		}
		if int(cniErr.Code) != row.Code() {
			t.Errorf("CNI error code %d, the catalogue says %d: %s", cniErr.Code, row.Code(), cniErr.Error())
		}
		row.Expect(t, cniErr.Error(), "<ns>", ns, "<pod>", podName, "<dir>", dir)
	}, "IPAM")
}
