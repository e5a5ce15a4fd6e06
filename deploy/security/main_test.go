package security_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/testenv"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// braid's accounts and the pod annotations they write, as deploy/base and the code name them.
const (
	braidNS       = "braid-system"
	nodeSA        = "braid-node"
	serverSA      = "braid-ipam-server"
	nodeNameExtra = "authentication.kubernetes.io/node-name"
	networkStatus = "k8s.v1.cni.cncf.io/network-status"
	ipAssignments = "braid.dev/ip-assignments"
)

var (
	env  *testenv.Env
	root string // the repository
	tmp  string // removed when the tests end
)

// TestMain starts one API server for the package and applies deploy/base to it as an operator does
// (`kubectl apply -k`); tests use their own namespaces and object names.
func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	var err error
	if root, err = testenv.RepoRoot(); err != nil {
		return 0, err
	}
	if tmp, err = os.MkdirTemp("", "braid-security-"); err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	if env, err = testenv.New(); err != nil {
		return 0, err
	}
	defer func() { _ = env.Stop() }()
	if err := applyBase(); err != nil {
		return 0, err
	}
	if err := waitForPolicy(); err != nil {
		return 0, err
	}
	return m.Run(), nil
}

// kubectl is the pinned kubectl that deploy/local/build-tools.sh caches next to kube-apiserver.
func kubectl() string {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return filepath.Join(dir, "kubectl")
	}
	return filepath.Join(root, ".cache", "bin", "kubectl")
}

func applyBase() error {
	kc := filepath.Join(tmp, "admin.kubeconfig")
	if err := env.WriteKubeconfig(kc, "admin", "system:masters"); err != nil {
		return err
	}
	// Server-side: the CRDs are too large for the last-applied annotation of a client-side apply.
	out, err := exec.Command(kubectl(), "--kubeconfig", kc, "apply", "--server-side", "--force-conflicts",
		"-k", filepath.Join(root, "deploy", "base")).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kubectl apply -k deploy/base: %w\n%s", err, out)
	}
	for _, sa := range []string{nodeSA, serverSA} {
		if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: braidNS, Name: sa}, &corev1.ServiceAccount{}); err != nil {
			return fmt.Errorf("deploy/base made no ServiceAccount %s/%s (the tests assume braid's namespace): %w", braidNS, sa, err)
		}
	}
	return nil
}

// waitForPolicy waits until the API server enforces deploy/base's admission policy (it loads policies
// asynchronously), probing with a write it must refuse.
func waitForPolicy() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "policy-probe"}}
	pod := newPod(ns.Name, "probe", "")
	if err := errors.Join(env.Client.Create(ctx, ns), env.Client.Create(ctx, pod)); err != nil {
		return err
	}
	c, err := client.New(saConfig(nodeSA, ""), client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	var last error
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		last = setAnnotation(ctx, c, pod, true, networkStatus, "[]")
		return last != nil && strings.Contains(last.Error(), "braid-pod-writes"), nil
	})
	if err != nil {
		return fmt.Errorf("the API server does not enforce ValidatingAdmissionPolicy braid-pod-writes (is its admission plugin on?): last answer: %w",
			errors.Join(last, err))
	}
	// braid-ippool-writes, likewise: braid-ipam-server labelling a pool.
	probe := pool("policy-probe")
	server, err := client.New(saConfig(serverSA, ""), client.Options{Scheme: env.Scheme})
	if err != nil {
		return err
	}
	if err := env.Client.Create(ctx, probe); err != nil {
		return err
	}
	defer func() { _ = env.Client.Delete(context.Background(), probe) }()
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		last = server.Patch(ctx, probe.DeepCopy(), mergePatch)
		return last != nil && strings.Contains(last.Error(), "braid-ippool-writes"), nil
	})
	if err != nil {
		return fmt.Errorf("the API server does not enforce ValidatingAdmissionPolicy braid-ippool-writes: last answer: %w",
			errors.Join(last, err))
	}
	return nil
}

// saConfig reaches the API server as one of braid's ServiceAccounts, impersonated as the API server
// authenticates its tokens: the user, its groups, and for a pod-bound token the node's name in the extras.
func saConfig(account, node string) *rest.Config {
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + braidNS + ":" + account,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + braidNS, "system:authenticated"},
	}
	if node != "" {
		cfg.Impersonate.Extra = map[string][]string{nodeNameExtra: {node}}
	}
	return cfg
}

func clientAs(t *testing.T, account, node string) client.Client {
	t.Helper()
	c, err := client.New(saConfig(account, node), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mkNodes creates Nodes (shared by the package's tests).
func mkNodes(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if err := env.Client.Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// newPod is a pod bound to node ("" leaves it unscheduled) with a label and an annotation of a user's.
func newPod(ns, name, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": "db"},
			Annotations: map[string]string{"example.com/owner": "team-a"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1"}}},
	}
}

func mkPod(t *testing.T, ns, name, node string) *corev1.Pod {
	t.Helper()
	p := newPod(ns, name, node)
	if err := env.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// setAnnotation sets one annotation by merge patch, through pods/status (as braid does) or pods (as
// braid-ipam-server does).
func setAnnotation(ctx context.Context, c client.Client, pod *corev1.Pod, status bool, key, value string) error {
	return patch(ctx, c, pod, status, map[string]any{"metadata": map[string]any{"annotations": map[string]any{key: value}}})
}

func patch(ctx context.Context, c client.Client, pod *corev1.Pod, status bool, body map[string]any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	target := pod.DeepCopy()
	if status {
		return c.Status().Patch(ctx, target, client.RawPatch(types.MergePatchType, b))
	}
	return c.Patch(ctx, target, client.RawPatch(types.MergePatchType, b))
}

// wantForbidden checks a refusal: 403, with every given part in its message.
func wantForbidden(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: got %v, want 403 Forbidden", what, err)
		return
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: refusal %q does not say %q", what, err, p)
		}
	}
	t.Logf("%s: refused: %v", what, err)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds braid, braid-ipam and braid-ipam-server once for the package and returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir = filepath.Join(tmp, "bin")
		buildErr = testenv.Build(context.Background(), binDir, "./meta-plugin/cmd/braid", "./ipam-server/cmd/braid-ipam", "./ipam-server/cmd/braid-ipam-api", "./ipam-server/cmd/braid-ipam-server")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// cleanPool deletes the IPPool and its FloatingIPs when the test ends (they are cluster-scoped: a test's
// namespace does not take them along), so that `go test -count=N` starts clean.
func cleanPool(t *testing.T, name string) {
	t.Helper()
	t.Cleanup(func() {
		ctx := context.Background()
		fips := &braidv1.FloatingIPList{}
		if err := env.Client.List(ctx, fips); err == nil {
			for i := range fips.Items {
				if fips.Items[i].Spec.Pool == name {
					_ = env.Client.Delete(ctx, &fips.Items[i])
				}
			}
		}
		pool := &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}}
		_ = env.Client.Delete(ctx, pool)
		// The server's finalizer keeps a deleted pool while FloatingIPs of it exist; the server may be gone.
		_ = env.Client.Patch(ctx, pool, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`)))
	})
}
