package security_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestOnlyTheIPAMServerChangesAssignments: once a pod exists, its braid.dev/ip-assignments annotation is
// braid-ipam-server's alone. Anybody else, a cluster admin included, is refused when setting, changing or
// removing it, through pods or pods/status, while the pod's other annotations stay theirs to change.
func TestOnlyTheIPAMServerChangesAssignments(t *testing.T) {
	ctx := t.Context()
	mkNodes(t, "node-a")
	ns := env.Namespace(t)
	pod := mkPod(t, ns, "web-0", "node-a")
	admin := env.Client
	const forged = `{"podUID":"u","interfaces":{"net1":{"network":"ns/mgmt","addresses":[{"pool":"mgmt","floatingIP":"mgmt-192-0-2-1","cidr":"192.0.2.1/24"}]}}}`
	const says = "only braid-ipam-server may change the annotation " + ipAssignments

	// The policy loads asynchronously: wait for its first refusal.
	var first error
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		first = setAnnotation(ctx, admin, pod, false, ipAssignments, forged)
		return first != nil && strings.Contains(first.Error(), says), nil
	}); err != nil {
		t.Fatalf("an admin's forged assignment on a pod without one: want refused, got %v", first)
	}
	wantForbidden(t, "a forged assignment through pods/status", setAnnotation(ctx, admin, pod, true, ipAssignments, forged), says)
	if err := setAnnotation(ctx, admin, pod, false, "example.com/owner", "team-b"); err != nil {
		t.Fatalf("the pod's other annotations must stay the user's: %v", err)
	}

	const real = `{"podUID":"u","interfaces":{"net1":{"network":"ns/mgmt","addresses":[{"pool":"mgmt","floatingIP":"mgmt-192-0-2-10","cidr":"192.0.2.10/24"}]}}}`
	if err := setAnnotation(ctx, clientAs(t, serverSA, ""), pod, false, ipAssignments, real); err != nil {
		t.Fatalf("braid-ipam-server records addresses: %v", err)
	}
	wantForbidden(t, "changing the server's assignment", setAnnotation(ctx, admin, pod, false, ipAssignments, forged), says)
	wantForbidden(t, "removing the server's assignment", patch(ctx, admin, pod, false,
		map[string]any{"metadata": map[string]any{"annotations": map[string]any{ipAssignments: nil}}}), says)

	got := &corev1.Pod{}
	if err := admin.Get(ctx, client.ObjectKeyFromObject(pod), got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[ipAssignments] != real || got.Annotations["example.com/owner"] != "team-b" {
		t.Errorf("annotations after the refused writes: %v", got.Annotations)
	}
}
