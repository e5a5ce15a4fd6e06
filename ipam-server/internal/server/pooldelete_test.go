package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// A pool deleted while pods hold its addresses stays (deleting, serving nobody new) until its FloatingIPs are
// gone, as a PersistentVolumeClaim in use does: a pool made meanwhile over the same addresses must not hand
// out the ones still configured in running pods. Before, the pool went at once, and a new pool of the same
// CIDR gave the held address to a second pod.
func TestAPoolWithHoldersIsDeletedOnceTheyAreGone(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "del-a", "192.0.2.0/29")
	mkNAD(t, ns, "n", "del-a")
	startServer(t, "")
	p := mkPod(t, ns, "p", "node-1", "n")
	held := addressesOf(assignments(t, ns, "p", "net1"), "net1")

	if err := k8s.Delete(context.Background(), getPool(t, "del-a")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "del-a says it is being deleted", func() (bool, string) {
		ipp := &braidv1.IPPool{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: "del-a"}, ipp); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(ipp.Status.Conditions, server.ConditionReady)
		return c != nil && c.Reason == "Deleting" && strings.Contains(c.Message, "1 FloatingIP"), fmt.Sprintf("%+v", c)
	})
	mkPool(t, "del-b", "192.0.2.0/29")
	mkNAD(t, ns, "n2", "del-b")
	mkPod(t, ns, "q", "node-1", "n2")
	time.Sleep(3 * time.Second)
	q := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "q"}, q); err != nil {
		t.Fatal(err)
	}
	if a, _ := assignment.Parse(q.Annotations[assignment.Annotation]); addressesOf(a, "net1") == held {
		t.Fatalf("q got %s, which p still holds", held)
	}

	deletePod(t, p)
	eventually(t, 15*time.Second, "del-a gone with its last FloatingIP", func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKey{Name: "del-a"}, &braidv1.IPPool{})
		return apierrors.IsNotFound(err), fmt.Sprintf("%v", err)
	})
	assignments(t, ns, "q", "net1")
}
