// Package deploy_test checks braid's manifests as kubectl builds them (`kubectl kustomize`) and as a real
// kube-apiserver (envtest) takes them: the CRDs shipped are crds/'s, the RBAC is least privilege (nodes only read
// braid's IPAM state), every example object is valid, and the examples agree with the device plugin's config and
// with the demo's simulated underlay.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/deploy/local/demo"
)

// build runs `kubectl kustomize` on a directory of the repo and returns its objects.
func build(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("KUBEBUILDER_ASSETS")
	if bin == "" {
		bin = filepath.Join(root, ".cache", "bin")
	}
	kubectl := filepath.Join(bin, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl not found in %s: run `make deps` first: %v", bin, err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", filepath.Join(root, dir))
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("kubectl kustomize %s: %v", dir, err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func ofKind(objs []*unstructured.Unstructured, kinds ...string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if slices.Contains(kinds, o.GetKind()) {
			out = append(out, o)
		}
	}
	return out
}

func convert[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return out
}

// TestDeployShipsCRDsOfCrds: `kubectl apply -k deploy/` installs exactly the CRD files of crds/ (so a CRD added
// there and not to crds/kustomization.yaml fails here), and every overlay builds.
func TestDeployShipsCRDsOfCrds(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if u.GetKind() == "CustomResourceDefinition" {
				want = append(want, u.GetName())
			}
		}
	}
	var got []string
	for _, o := range ofKind(build(t, "deploy"), "CustomResourceDefinition") {
		got = append(got, o.GetName())
	}
	slices.Sort(want)
	slices.Sort(got)
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("deploy/ installs CRDs %v; crds/ holds %v (list every file in crds/kustomization.yaml)", got, want)
	}

	local := build(t, "deploy/local/overlay")
	for _, o := range ofKind(local, "DaemonSet", "Deployment") {
		for _, c := range convert[corev1.PodTemplateSpec](t, &unstructured.Unstructured{Object: o.Object["spec"].(map[string]any)["template"].(map[string]any)}).Spec.Containers {
			if c.ImagePullPolicy != corev1.PullNever {
				t.Errorf("local overlay: %s %s container %s pulls (%s): there is no registry", o.GetKind(), o.GetName(), c.Name, c.ImagePullPolicy)
			}
		}
	}
}

// TestRBACIsLeastPrivilege asks a real API server, through SubjectAccessReviews, what each of braid's accounts
// may do once deploy/'s RBAC is applied.
func TestRBACIsLeastPrivilege(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	objs := build(t, "deploy")
	for _, o := range ofKind(objs, "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding") {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	const (
		node   = "braid-node"
		server = "braid-ipam-server"
		dp     = "braid-sriov-dp"
	)
	cases := []struct {
		account, verb, group, resource, sub, ns string
		allowed                                 bool
	}{
		// The node side: braid and braid-ipam read; braid writes network-status and Events.
		{node, "get", "", "pods", "", "braid-demo", true},
		{node, "watch", "", "pods", "", "braid-demo", true},
		{node, "patch", "", "pods", "status", "braid-demo", true},
		{node, "create", "", "events", "", "braid-demo", true},
		{node, "get", "k8s.cni.cncf.io", "network-attachment-definitions", "", "braid-demo", true},
		{node, "get", "braid.dev", "ippools", "", "", true},
		{node, "list", "braid.dev", "ippools", "", "", false},
		{node, "get", "braid.dev", "floatingips", "", "", false},
		{node, "create", "braid.dev", "floatingips", "", "", false},
		{node, "update", "braid.dev", "floatingips", "", "", false},
		{node, "delete", "braid.dev", "floatingips", "", "", false},
		{node, "patch", "braid.dev", "floatingips", "status", "", false},
		{node, "update", "braid.dev", "ippools", "status", "", false},
		{node, "patch", "", "pods", "", "braid-demo", false},
		{node, "delete", "", "pods", "", "braid-demo", false},
		{node, "get", "", "secrets", "", "braid-system", false},
		// The central server: the only writer of FloatingIPs and pool status.
		{server, "create", "braid.dev", "floatingips", "", "", true},
		{server, "delete", "braid.dev", "floatingips", "", "", true},
		{server, "update", "braid.dev", "floatingips", "status", "", true},
		{server, "patch", "braid.dev", "ippools", "status", "", true},
		{server, "update", "braid.dev", "ippools", "status", "", false},
		{server, "update", "braid.dev", "ippools", "", "", false},
		{server, "patch", "braid.dev", "ippools", "", "", true}, // its finalizer
		{server, "delete", "braid.dev", "ippools", "", "", false},
		{server, "patch", "", "pods", "", "braid-demo", true},
		{server, "delete", "", "pods", "", "braid-demo", false},
		{server, "list", "apps", "statefulsets", "", "", true},
		{server, "create", "events.k8s.io", "events", "", "braid-demo", true},
		{server, "create", "coordination.k8s.io", "leases", "", "braid-system", true},
		{server, "create", "coordination.k8s.io", "leases", "", "kube-system", false},
		{server, "get", "", "secrets", "", "braid-system", false},
		// The device plugin talks to the kubelet only.
		{dp, "get", "", "pods", "", "braid-demo", false},
		{dp, "list", "", "nodes", "", "", false},
	}
	may := func(account, verb, group, resource, sub, ns string) bool {
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   "system:serviceaccount:braid-system:" + account,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:braid-system", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group,
				Resource: resource, Subresource: sub},
		}}
		if err := env.Client.Create(ctx, sar); err != nil {
			t.Fatal(err)
		}
		return sar.Status.Allowed
	}
	// The API server's authorizer learns of new roles and bindings from its informers, a moment after the
	// creates return: wait (bounded) until every grant is visible, then judge every case once.
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		for _, c := range cases {
			if c.allowed && !may(c.account, c.verb, c.group, c.resource, c.sub, c.ns) {
				return false, nil
			}
		}
		return true, nil
	})
	for _, c := range cases {
		if may(c.account, c.verb, c.group, c.resource, c.sub, c.ns) != c.allowed {
			res := c.resource
			if c.sub != "" {
				res += "/" + c.sub
			}
			t.Errorf("%s may %s %s.%s in %q: %v, want %v", c.account, c.verb, res, c.group, c.ns, !c.allowed, c.allowed)
		}
	}
}

// TestDaemonModeRBAC: deploy/ (braid with its node daemon) adds exactly the reads the daemon's caches need
// (list and watch of pods and NADs) to braid-node, and deploy/base (the plain plugin) does not grant them.
func TestDaemonModeRBAC(t *testing.T) {
	for _, mode := range []struct {
		dir   string
		lists bool
	}{{"deploy/base", false}, {"deploy", true}} {
		t.Run(mode.dir, func(t *testing.T) {
			env := testenv.Start(t)
			ctx := t.Context()
			for _, o := range ofKind(build(t, mode.dir), "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding") {
				if err := env.Client.Create(ctx, o); err != nil {
					t.Fatalf("create %s %s: %v", o.GetKind(), o.GetName(), err)
				}
			}
			may := func(verb, group, resource string) bool {
				sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
					User:               "system:serviceaccount:braid-system:braid-node",
					Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:braid-system", "system:authenticated"},
					ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource},
				}}
				if err := env.Client.Create(ctx, sar); err != nil {
					t.Fatal(err)
				}
				return sar.Status.Allowed
			}
			// Wait (bounded) until the authorizer sees the roles: braid-node's get on pods is in both modes.
			_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
				return may("get", "", "pods") && (!mode.lists || may("list", "k8s.cni.cncf.io", "network-attachment-definitions")), nil
			})
			for _, c := range []struct{ verb, group, resource string }{
				{"list", "", "pods"}, {"watch", "k8s.cni.cncf.io", "network-attachment-definitions"},
				{"list", "k8s.cni.cncf.io", "network-attachment-definitions"},
			} {
				if got := may(c.verb, c.group, c.resource); got != mode.lists {
					t.Errorf("braid-node may %s %s.%s: %v, want %v", c.verb, c.resource, c.group, got, mode.lists)
				}
			}
			for _, c := range []struct{ verb, group, resource string }{
				{"list", "braid.dev", "floatingips"}, {"list", "", "secrets"}, {"patch", "", "pods"},
			} {
				if may(c.verb, c.group, c.resource) {
					t.Errorf("braid-node may %s %s.%s", c.verb, c.resource, c.group)
				}
			}
		})
	}
}

// TestManifestsAcceptedByAPIServer creates (dry run) every object of deploy/, its local overlay and the examples
// in a real API server with braid's CRDs, so schema and CEL validation see them as `kubectl apply` would.
func TestManifestsAcceptedByAPIServer(t *testing.T) {
	env := testenv.Start(t)
	ctx := t.Context()
	for _, dir := range []string{"deploy", "deploy/base", "deploy/local/overlay", "deploy/examples"} {
		for _, o := range build(t, dir) {
			if o.GetKind() == "CustomResourceDefinition" {
				continue // installed from crds/ by envtest already; TestDeployShipsCRDsOfCrds ties them
			}
			opts := []client.CreateOption{client.DryRunAll}
			if o.GetKind() == "Namespace" {
				opts = nil // the namespaced objects need it to exist
			}
			err := env.Client.Create(ctx, o, opts...)
			if o.GetKind() == "Namespace" && apierrors.IsAlreadyExists(err) {
				continue // made by an earlier directory's build
			}
			if err != nil {
				t.Errorf("%s: %s %s: %v", dir, o.GetKind(), o.GetName(), err)
			}
		}
	}
}

// TestExamplesAgree: the example networks name pools that exist, the data network names the device plugin's
// resource and the StatefulSet asks for it, and the NICs and peers of the demo's underlay fit the examples.
func TestExamplesAgree(t *testing.T) {
	base := build(t, "deploy")
	ex := build(t, "deploy/examples")

	pools := map[string]*braidv1.IPPool{}
	for _, o := range ofKind(ex, "IPPool") {
		pools[o.GetName()] = convert[braidv1.IPPool](t, o)
	}
	cm := find(base, "ConfigMap", "braid-sriov-dp-config")
	if cm == nil {
		t.Fatal("deploy/ has no braid-sriov-dp-config")
	}
	var dpConf struct {
		ResourceList []struct {
			ResourceName   string `json:"resourceName"`
			ResourcePrefix string `json:"resourcePrefix"`
		} `json:"resourceList"`
	}
	if err := json.Unmarshal([]byte(convert[corev1.ConfigMap](t, cm).Data["config.json"]), &dpConf); err != nil {
		t.Fatalf("braid-sriov-dp-config config.json: %v", err)
	}
	resources := map[string]bool{}
	for _, r := range dpConf.ResourceList {
		prefix := r.ResourcePrefix
		if prefix == "" {
			prefix = "braid.dev"
		}
		resources[prefix+"/"+r.ResourceName] = true
	}

	masters := map[string]bool{}
	var vfResource string
	for _, o := range ofKind(ex, "NetworkAttachmentDefinition") {
		config, _, _ := unstructured.NestedString(o.Object, "spec", "config")
		var c struct {
			Type   string `json:"type"`
			Master string `json:"master"`
			IPAM   struct {
				Type  string   `json:"type"`
				Pools []string `json:"pools"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal([]byte(config), &c); err != nil {
			t.Errorf("NAD %s: spec.config: %v", o.GetName(), err)
			continue
		}
		if c.IPAM.Type != "braid-ipam" || len(c.IPAM.Pools) == 0 {
			t.Errorf("NAD %s: ipam %+v, want braid-ipam with pools", o.GetName(), c.IPAM)
		}
		for _, p := range c.IPAM.Pools {
			if pools[p] == nil {
				t.Errorf("NAD %s names pool %s, which the examples do not define", o.GetName(), p)
			}
		}
		if c.Master != "" {
			masters[c.Master] = true
		}
		if r := o.GetAnnotations()["k8s.v1.cni.cncf.io/resourceName"]; r != "" {
			vfResource = r
			if !resources[r] {
				t.Errorf("NAD %s asks for %s; braid-sriov-dp offers %v", o.GetName(), r, resources)
			}
		}
	}
	if vfResource == "" {
		t.Fatal("no example NAD names a device plugin resource")
	}
	db := find(ex, "StatefulSet", "db")
	if db == nil {
		t.Fatal("no StatefulSet db in the examples")
	}
	lim := convert[corev1.PodTemplateSpec](t, &unstructured.Unstructured{Object: db.Object["spec"].(map[string]any)["template"].(map[string]any)}).Spec.Containers[0].Resources.Limits
	if q, ok := lim[corev1.ResourceName(vfResource)]; !ok || q.Value() != 1 {
		t.Errorf("StatefulSet db does not ask for one %s: limits %v", vfResource, lim)
	}

	// The demo's underlay: its macvlan parents are the NADs' masters, and every peer host's address is on a
	// pool's subnet but outside what the pool hands out.
	for _, n := range demo.Networks {
		if n.NodeNICsUp {
			for _, nic := range n.NodeNICs {
				if !masters[nic] {
					t.Errorf("demo network %s: node NIC %s is no example NAD's master (%v)", n.Name, nic, masters)
				}
			}
		}
		for _, peer := range n.PeerAddrs {
			onPool := false
			for name, p := range pools {
				cidr := netip.MustParsePrefix(p.Spec.CIDR)
				if !cidr.Contains(peer.Addr()) {
					continue
				}
				onPool = true
				for _, r := range p.Spec.Ranges {
					if start, end := netip.MustParseAddr(r.Start), netip.MustParseAddr(r.End); start.Compare(peer.Addr()) <= 0 && peer.Addr().Compare(end) <= 0 {
						t.Errorf("demo peer %s is inside pool %s's range %s-%s: it could be handed to a pod", peer.Addr(), name, r.Start, r.End)
					}
				}
			}
			if !onPool {
				t.Errorf("demo peer %s is on no example pool", peer)
			}
		}
	}
}
