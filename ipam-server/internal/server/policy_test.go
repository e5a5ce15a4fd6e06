package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// mkStatefulSet creates a StatefulSet of the given replicas whose pods the test makes itself (statefulSetPod).
func mkStatefulSet(t *testing.T, ns, name string, replicas int32) *appsv1.StatefulSet {
	t.Helper()
	set := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}},
	}
	if err := k8s.Create(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	return set
}

// statefulSetPod makes a pod on node-1 as the StatefulSet controller would (envtest runs no controller-manager).
func statefulSetPod(t *testing.T, set *appsv1.StatefulSet, ordinal int, networks string) *corev1.Pod {
	t.Helper()
	return statefulSetPodOn(t, set, ordinal, "node-1", networks)
}

// statefulSetPodOn is statefulSetPod on the given node.
func statefulSetPodOn(t *testing.T, set *appsv1.StatefulSet, ordinal int, node, networks string) *corev1.Pod {
	t.Helper()
	p := podObj(set.Namespace, fmt.Sprintf("%s-%d", set.Name, ordinal), node, networks)
	p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: set.Name,
		UID: set.UID, Controller: ptr.To(true)}}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

func addressesOf(a assignment.Assignments, iface string) string {
	var out []string
	for _, addr := range a.Interfaces[iface].Addresses {
		out = append(out, addr.CIDR)
	}
	return strings.Join(out, ",")
}

func TestStatefulSetKeepsOrdinalAddresses(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "sts-v4", "192.0.2.0/24", policy(braidv1.ReleaseKeepForStatefulSet))
	mkNAD(t, ns, "ctl", "sts-v4")
	startServer(t, "")

	set := mkStatefulSet(t, ns, "db", 2)
	p0, p1 := statefulSetPod(t, set, 0, "ctl"), statefulSetPod(t, set, 1, "ctl")
	first0 := addressesOf(assignments(t, ns, "db-0", "net1"), "net1")
	assignments(t, ns, "db-1", "net1")
	for _, f := range fips(t, "sts-v4") {
		if f.Annotations["braid.dev/statefulset"] != "db" || f.Annotations["braid.dev/statefulset-uid"] != string(set.UID) {
			t.Fatalf("FloatingIP %s does not name its StatefulSet db (%s): annotations %v", f.Name, set.UID, f.Annotations)
		}
	}

	// db-0 is deleted and recreated (a rolling restart): same address.
	deletePod(t, p0)
	eventually(t, 10*time.Second, "db-0's address reserved for its name", func() (bool, string) {
		list := fips(t, "sts-v4")
		for _, f := range list {
			if f.Spec.Pod == ns+"/db-0" {
				return f.Spec.PodUID == "", fmt.Sprintf("podUID=%q", f.Spec.PodUID)
			}
		}
		return false, "no FloatingIP for db-0"
	})
	statefulSetPod(t, set, 0, "ctl")
	if again := addressesOf(assignments(t, ns, "db-0", "net1"), "net1"); again != first0 {
		t.Fatalf("recreated db-0 got %s, want its old %s", again, first0)
	}

	// Scale down to 1: ordinal 1 is no longer wanted, so its address is released once its pod is gone.
	set.Spec.Replicas = ptr.To[int32](1)
	if err := k8s.Update(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	deletePod(t, p1)
	eventually(t, 10*time.Second, "db-1's address released", func() (bool, string) {
		for _, f := range fips(t, "sts-v4") {
			if f.Spec.Pod == ns+"/db-1" {
				return false, "FloatingIP of db-1 still there: " + f.Spec.IP
			}
		}
		return true, ""
	})
}

func TestNeverPolicySurvivesWorkloadDeletion(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "never-v4", "198.51.100.0/28", policy(braidv1.ReleaseNever))
	mkNAD(t, ns, "data", "never-v4")
	startServer(t, "")
	p := mkPod(t, ns, "keeper", "node-2", "data")
	first := addressesOf(assignments(t, ns, "keeper", "net1"), "net1")
	deletePod(t, p)
	eventually(t, 10*time.Second, "address reserved", func() (bool, string) {
		l := fips(t, "never-v4")
		return len(l) == 1 && l[0].Spec.PodUID == "", fmt.Sprintf("%d FloatingIPs", len(l))
	})
	// Another pod cannot get it; the same name gets it back.
	mkPod(t, ns, "other", "node-2", "data")
	if got := addressesOf(assignments(t, ns, "other", "net1"), "net1"); got == first {
		t.Fatalf("a reserved address went to another pod: %s", got)
	}
	mkPod(t, ns, "keeper", "node-3", "data")
	if got := addressesOf(assignments(t, ns, "keeper", "net1"), "net1"); got != first {
		t.Fatalf("keeper came back with %s, want %s", got, first)
	}
}

func TestHandMadeFloatingIPIsNeverHandedOut(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "manual-v4", "203.0.113.0/29") // .1 - .6 usable
	mkNAD(t, ns, "n", "manual-v4")
	// The admin reserves .1 and .3 before the server starts (and one after).
	for _, ip := range []string{"203.0.113.1", "203.0.113.3"} {
		f := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "admin-" + strings.ReplaceAll(ip, ".", "-")},
			Spec: braidv1.FloatingIPSpec{IP: ip, Pool: "manual-v4"}}
		if err := k8s.Create(context.Background(), f); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), f) })
	}
	startServer(t, "")
	late := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "admin-late"}, Spec: braidv1.FloatingIPSpec{IP: "203.0.113.5", Pool: "manual-v4"}}
	if err := k8s.Create(context.Background(), late); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), late) })
	eventually(t, 10*time.Second, "reservations counted", func() (bool, string) {
		s := poolStatus(t, "manual-v4")
		return s.Used == 3, fmt.Sprintf("used=%d", s.Used)
	})
	got := map[string]bool{}
	for i := range 3 {
		name := fmt.Sprintf("m%d", i)
		mkPod(t, ns, name, "node-1", "n")
		got[addressesOf(assignments(t, ns, name, "net1"), "net1")] = true
	}
	for _, reserved := range []string{"203.0.113.1/29", "203.0.113.3/29", "203.0.113.5/29"} {
		if got[reserved] {
			t.Fatalf("reserved %s was handed out; pods got %v", reserved, got)
		}
	}
}

func TestStaticAddresses(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "static-v4", "192.0.2.0/24", func(p *braidv1.IPPool) {
		p.Spec.Gateway = "192.0.2.1"
		p.Spec.Excludes = []string{"192.0.2.200/29"}
	})
	mkNAD(t, ns, "s", "static-v4")
	startServer(t, "")
	mkPod(t, ns, "want-42", "node-1", `[{"name":"s","ips":["192.0.2.42/24"]}]`)
	if got := addressesOf(assignments(t, ns, "want-42", "net1"), "net1"); got != "192.0.2.42/24" {
		t.Fatalf("static request got %s", got)
	}
	for _, tc := range []struct{ pod, ip, reason string }{
		{"also-42", "192.0.2.42/24", "RequestedAddressTaken"},
		{"outside", "198.51.100.7/24", "RequestedAddressOutsidePool"},
		{"excluded", "192.0.2.201/24", "RequestedAddressOutsidePool"},
		{"gateway", "192.0.2.1/24", "RequestedAddressOutsidePool"},
	} {
		mkPod(t, ns, tc.pod, "node-1", fmt.Sprintf(`[{"name":"s","ips":[%q]}]`, tc.ip))
		awaitEvent(t, ns, tc.pod, tc.reason, strings.Split(tc.ip, "/")[0])
		eventually(t, 10*time.Second, tc.pod+"'s annotation says why", func() (bool, string) {
			p := &corev1.Pod{}
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: tc.pod}, p); err != nil {
				return false, err.Error()
			}
			a, err := assignment.Parse(p.Annotations[assignment.Annotation])
			ok := err == nil && a.Interfaces["net1"].Error != "" && len(a.Interfaces["net1"].Addresses) == 0
			return ok, fmt.Sprintf("want an error and no address, got %+v (%v)", a, err)
		})
	}
}

// TestExhaustion: 8 free addresses, 9 pods: 8 served, the 9th gets an Event and an error the plugin returns;
// deleting one pod serves the 9th.
func TestExhaustion(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "tiny-v4", "192.0.2.0/28", func(p *braidv1.IPPool) { // 14 usable, 6 excluded: 8 free
		p.Spec.Excludes = []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6"}
	})
	mkNAD(t, ns, "t", "tiny-v4")
	startServer(t, "")
	var pods []*corev1.Pod
	for i := range 8 {
		pods = append(pods, mkPod(t, ns, fmt.Sprintf("t%d", i), "node-1", "t"))
		assignments(t, ns, fmt.Sprintf("t%d", i), "net1")
	}
	mkPod(t, ns, "ninth", "node-1", "t")
	awaitEvent(t, ns, "ninth", "PoolExhausted", "tiny-v4")
	// The Event and the pod's annotation are two writes; the annotation may land a moment after the Event.
	eventually(t, 10*time.Second, "the 9th pod's annotation carries the reason", func() (bool, string) {
		p := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "ninth"}, p); err != nil {
			t.Fatal(err)
		}
		a, _ := assignment.Parse(p.Annotations[assignment.Annotation])
		msg := a.Interfaces["net1"].Error
		return strings.Contains(msg, "pool exhausted"), fmt.Sprintf("annotation error = %q, want the exhaustion reason", msg)
	})
	eventually(t, 10*time.Second, "pool says Exhausted", func() (bool, string) {
		s := poolStatus(t, "tiny-v4")
		for _, c := range s.Conditions {
			if c.Type == "Exhausted" {
				return c.Status == metav1.ConditionTrue, c.Message
			}
		}
		return false, "no Exhausted condition"
	})
	deletePod(t, pods[3])
	if got := addressesOf(assignments(t, ns, "ninth", "net1"), "net1"); got == "" {
		t.Fatal("9th pod not served after a release")
	}
}

func TestBadInputGetsEvents(t *testing.T) {
	ns := env.Namespace(t)
	nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nopools"},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"1.0.0","type":"macvlan","ipam":{"type":"braid-ipam"}}`}}
	if err := k8s.Create(context.Background(), nad); err != nil {
		t.Fatal(err)
	}
	mkNAD(t, ns, "ghost", "no-such-pool")
	startServer(t, "", func(o *server.Options) { o.Resync = time.Second })
	cases := []struct{ pod, networks, reason, message string }{
		{"bad-nad", "nopools", "InvalidNetworkConfig", "NetworkAttachmentDefinition " + ns + "/nopools: spec.config: ipam.pools"},
		{"bad-annotation", `[{"name":"nopools","ips":["not-an-ip"]}]`, "InvalidNetworks", `k8s.v1.cni.cncf.io/networks: networks[0].ips[0]`},
		{"missing-pool", "ghost", "NoEligiblePool", "no eligible pool: IPPool no-such-pool not found"},
	}
	for _, tc := range cases {
		mkPod(t, ns, tc.pod, "node-1", tc.networks)
		awaitEvent(t, ns, tc.pod, tc.reason, tc.message)
	}
	// Once per pod: resyncs and retries do not repeat a reason that has not changed.
	time.Sleep(3 * time.Second)
	for _, tc := range cases {
		if n := timesReported(t, ns, tc.pod, tc.reason); n != 1 {
			t.Errorf("%s: %s reported %d times, want once", tc.pod, tc.reason, n)
		}
	}
}
