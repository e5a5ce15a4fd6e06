package security_test

import (
	"context"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// daemonPod creates the braid DaemonSet's pod of a node as the kubelet would run it: braid-node's account,
// bound to the node.
func daemonPod(t *testing.T, node string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: braidNS, GenerateName: "braid-"},
		Spec: corev1.PodSpec{ServiceAccountName: nodeSA, NodeName: node,
			Containers: []corev1.Container{{Name: "install", Image: "localhost/braid:dev"}}},
	}
	if err := env.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// token asks the API server for a token of account, bound to pod when pod is not nil (what the kubelet
// projects into a pod's service account volume).
func token(t *testing.T, account string, pod *corev1.Pod) string {
	t.Helper()
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := kubernetes.NewForConfigOrDie(env.Config).CoreV1().ServiceAccounts(braidNS).CreateToken(t.Context(), account, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s: %v", account, err)
	}
	return tr.Status.Token
}

// tokenConfig reaches the API server with a bearer token only.
func tokenConfig(token string) *rest.Config {
	return &rest.Config{Host: env.Config.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}}
}

// TestBoundTokenNamesItsNode: a real token bound to the braid DaemonSet's pod on node-a (as the kubelet issues
// it) authenticates as braid-node with node-a in its extras, so the admission policy lets it write
// network-status on node-a's pods and refuses node-b's; a token bound to no pod names no node and writes no
// pod; and the bound token dies with its pod.
func TestBoundTokenNamesItsNode(t *testing.T) {
	ctx := t.Context()
	mkNodes(t, "node-a", "node-b")
	ns := env.Namespace(t)
	own, other := mkPod(t, ns, "own", "node-a"), mkPod(t, ns, "other", "node-b")
	braidA := daemonPod(t, "node-a")
	cfg := tokenConfig(token(t, nodeSA, braidA))

	review, err := kubernetes.NewForConfigOrDie(cfg).AuthenticationV1().SelfSubjectReviews().Create(ctx,
		&authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	who := review.Status.UserInfo
	t.Logf("the bound token authenticates as %s, groups %v, extra %v", who.Username, who.Groups, who.Extra)
	if who.Username != "system:serviceaccount:"+braidNS+":"+nodeSA {
		t.Errorf("bound token authenticates as %q", who.Username)
	}
	if got := who.Extra[nodeNameExtra]; len(got) != 1 || got[0] != "node-a" {
		t.Fatalf("bound token's %s = %v, want [node-a]: the admission policy cannot tell nodes apart", nodeNameExtra, got)
	}

	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := setAnnotation(ctx, c, own, true, networkStatus, "[]"); err != nil {
		t.Errorf("bound token of node-a cannot set network-status on node-a's pod: %v", err)
	}
	wantForbidden(t, "bound token of node-a on node-b's pod", setAnnotation(ctx, c, other, true, networkStatus, "[]"),
		"braid-node of node node-a", "runs on node node-b")

	unbound, err := client.New(tokenConfig(token(t, nodeSA, nil)), client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	wantForbidden(t, "token bound to no pod", setAnnotation(ctx, unbound, own, true, networkStatus, "[]"), "names no node")

	if err := env.Client.Delete(ctx, braidA, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	var last error
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = c.Get(ctx, client.ObjectKeyFromObject(own), &corev1.Pod{})
		return apierrors.IsUnauthorized(last), nil
	}); err != nil {
		t.Errorf("the token of a deleted braid pod still works: %v", last)
	}
}
