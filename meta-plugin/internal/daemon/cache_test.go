package daemon

import (
	"context"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// Reads of the node's pods and of NADs come from the watch cache without a request; a pod of another node, a
// fresh read, and anything the cache has not seen go to the API server.
func TestCacheAnswersFromTheWatch(t *testing.T) {
	ns := suiteEnv.Namespace(t)
	mine := createPod(t, ns, "mine", "node-a")
	createPod(t, ns, "theirs", "node-b")
	createNAD(t, ns, "net-a")
	c, calls := api(t)
	cache := NewCache(c, "node-a")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go cache.Run(ctx)
	must(t, cache.WaitForSync(ctx, 30*time.Second))
	eventually(t, "pod and NAD cached", func() bool {
		_, okPod, _ := cache.Pods().GetByKey(ns + "/mine")
		_, okNAD, _ := cache.nads.GetStore().GetByKey(ns + "/net-a")
		return okPod && okNAD
	})

	calls.Store(0)
	p, err := cache.GetPod(ctx, ns, "mine", false)
	if err != nil || p.UID != mine.UID {
		t.Fatalf("GetPod(mine) = %v, %v", p, err)
	}
	if _, err := cache.GetNAD(ctx, ns, "net-a", false); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("cached reads made %d requests, want 0", n)
	}
	if _, err := cache.GetPod(ctx, ns, "theirs", false); err != nil {
		t.Errorf("GetPod of another node's pod: %v", err)
	}
	if _, err := cache.GetPod(ctx, ns, "mine", true); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.GetNAD(ctx, ns, "missing", false); !apierrors.IsNotFound(err) {
		t.Errorf("GetNAD(missing) = %v, want NotFound from the API server", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("other node's pod, fresh read, missing NAD: %d requests, want 3", n)
	}
	// A copy: what a caller changes does not change the cache.
	p.Annotations = map[string]string{"x": "y"}
	if again, _ := cache.GetPod(ctx, ns, "mine", false); again.Annotations["x"] != "" {
		t.Error("GetPod returned the cached object itself")
	}
}

func createNAD(t *testing.T, ns, name string) {
	t.Helper()
	nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"1.0.0","type":"macvlan"}`}}
	nad.SetGroupVersionKind(nadv1.SchemeGroupVersion.WithKind("NetworkAttachmentDefinition"))
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(nad)
	if err != nil {
		t.Fatal(err)
	}
	must(t, suiteEnv.Client.Create(t.Context(), &unstructured.Unstructured{Object: obj}))
}
