package security_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestNodeWritesNetworkStatusOfItsOwnPodsOnly: braid on node A (the shared braid-node account with node A's
// name in its credential) sets network-status on node A's pods, and nothing else: not on node B's pods, not
// on unscheduled ones, not without a node name, and no other part of the pod.
func TestNodeWritesNetworkStatusOfItsOwnPodsOnly(t *testing.T) {
	ctx := t.Context()
	mkNodes(t, "node-a", "node-b")
	ns := env.Namespace(t)
	own, other, unscheduled := mkPod(t, ns, "own", "node-a"), mkPod(t, ns, "other", "node-b"), mkPod(t, ns, "pending", "")
	nodeA := clientAs(t, nodeSA, "node-a")

	const status = `[{"name":"braid-cluster","interface":"eth0","ips":["192.0.2.10"],"default":true}]`
	if err := setAnnotation(ctx, nodeA, own, true, networkStatus, status); err != nil {
		t.Fatalf("braid on node-a cannot set network-status on its own pod: %v", err)
	}
	got := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(own), got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[networkStatus] != status || got.Annotations["example.com/owner"] != "team-a" {
		t.Errorf("after braid's patch the pod's annotations are %v", got.Annotations)
	}

	wantForbidden(t, "network-status on node-b's pod", setAnnotation(ctx, nodeA, other, true, networkStatus, status),
		"braid-node of node node-a", ns+"/other runs on node node-b")
	wantForbidden(t, "network-status on an unscheduled pod", setAnnotation(ctx, nodeA, unscheduled, true, networkStatus, status),
		ns+"/pending is not scheduled to a node")
	wantForbidden(t, "network-status without a node name", setAnnotation(ctx, clientAs(t, nodeSA, ""), own, true, networkStatus, status),
		"names no node", "pod-bound token")

	annotations := func(kv ...any) map[string]any {
		m := map[string]any{networkStatus: "[]"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return map[string]any{"annotations": m}
	}
	for _, c := range []struct {
		what string
		body map[string]any
		says string
	}{
		{"a label", map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web"}}}, "metadata.labels"},
		{"a new label", map[string]any{"metadata": map[string]any{"labels": map[string]any{"tier": "x"}}}, "metadata.labels"},
		{"another annotation", map[string]any{"metadata": annotations("example.com/owner", "team-b")}, "annotation example.com/owner"},
		{"removing another annotation", map[string]any{"metadata": annotations("example.com/owner", nil)}, "annotation example.com/owner"},
		{"braid-ipam-server's annotation", map[string]any{"metadata": annotations(ipAssignments, "{}")}, "annotation " + ipAssignments},
		{"a finalizer", map[string]any{"metadata": map[string]any{"finalizers": []string{"example.com/hold"}}}, "metadata.finalizers"},
		{"the status", map[string]any{"metadata": annotations(), "status": map[string]any{"message": "evicted"}}, "status"},
		{"the status phase", map[string]any{"status": map[string]any{"phase": "Failed"}}, "status"},
	} {
		want := "braid-node may change only the annotation " + networkStatus + " of pod " + ns + "/own; this request also changes " + c.says
		if c.says == "annotation "+ipAssignments {
			// Refused by both policies (braid-ip-assignments too); the API server reports either one.
			want = "annotation " + ipAssignments
		}
		wantForbidden(t, "braid-node via pods/status: "+c.what, patch(ctx, nodeA, own, true, c.body), want)
	}
	// pods itself is RBAC's: braid-node may not write it at all.
	wantForbidden(t, "network-status via pods", setAnnotation(ctx, nodeA, own, false, networkStatus, status), `cannot patch resource "pods"`)

	// Nothing refused changed anything.
	for _, p := range []*corev1.Pod{other, unscheduled} {
		now := &corev1.Pod{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(p), now); err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(now.Annotations, p.Annotations) || !equality.Semantic.DeepEqual(now.Labels, p.Labels) ||
			now.ResourceVersion != p.ResourceVersion {
			t.Errorf("refused writes changed pod %s: annotations %v labels %v", p.Name, now.Annotations, now.Labels)
		}
	}
	after := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(own), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != got.ResourceVersion {
		t.Errorf("refused writes changed pod own: %v %v %v", after.Annotations, after.Labels, after.Status)
	}
}

// TestIPAMServerWritesOnlyItsAnnotation: braid-ipam-server records addresses on any pod, through pods, and
// can change nothing else of it.
func TestIPAMServerWritesOnlyItsAnnotation(t *testing.T) {
	ctx := t.Context()
	mkNodes(t, "node-a")
	ns := env.Namespace(t)
	pod := mkPod(t, ns, "db-0", "node-a")
	server := clientAs(t, serverSA, "")

	const value = `{"podUID":"u","interfaces":{"net1":{"network":"ns/mgmt","addresses":[{"pool":"mgmt","floatingIP":"mgmt-192-0-2-10","cidr":"192.0.2.10/24"}]}}}`
	if err := setAnnotation(ctx, server, pod, false, ipAssignments, value); err != nil {
		t.Fatalf("braid-ipam-server cannot record addresses on a pod: %v", err)
	}
	got := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[ipAssignments] != value {
		t.Errorf("annotation %s = %q after the server's patch", ipAssignments, got.Annotations[ipAssignments])
	}

	deadline := int64(1)
	for _, c := range []struct {
		what string
		body map[string]any
		says string
	}{
		{"a label", map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web"}}}, "metadata.labels"},
		{"another annotation", map[string]any{"metadata": map[string]any{"annotations": map[string]any{"example.com/owner": "x"}}}, "annotation example.com/owner"},
		{"braid's network-status", map[string]any{"metadata": map[string]any{"annotations": map[string]any{networkStatus: "[]"}}}, "annotation " + networkStatus},
		{"the spec", map[string]any{"spec": map[string]any{"activeDeadlineSeconds": deadline}}, "spec"},
		{"an owner", map[string]any{"metadata": map[string]any{"ownerReferences": []map[string]any{{"apiVersion": "v1", "kind": "ConfigMap",
			"name": "x", "uid": "00000000-0000-0000-0000-000000000001"}}}}, "metadata.ownerReferences"},
	} {
		wantForbidden(t, "braid-ipam-server: "+c.what, patch(ctx, server, pod, false, c.body),
			"braid-ipam-server may change only the annotation "+ipAssignments+" of pod "+ns+"/db-0; this request also changes "+c.says)
	}
	wantForbidden(t, "braid-ipam-server writing pods/status", setAnnotation(ctx, server, pod, true, ipAssignments, "{}"),
		`cannot patch resource "pods/status"`)
	wantForbidden(t, "braid-ipam-server deleting a pod", server.Delete(ctx, pod.DeepCopy()), `cannot delete resource "pods"`)

	after := &corev1.Pod{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(pod), after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != got.ResourceVersion {
		t.Errorf("refused writes changed the pod: %v %v %+v", after.Annotations, after.Labels, after.Spec.ActiveDeadlineSeconds)
	}
}
