package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// A pod on the host's network gets no extra interfaces: the kubelet runs no CNI for it, so braid's meta-plugin
// (or Multus) never attaches the networks it names. Addresses held for it would only be lost to the pool until
// the pod went. The server serves it nothing; a pod after it gets the pool's one address.
func TestHostNetworkPodsHoldNoAddress(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "hostnet-v4", "203.0.113.9/32") // one address
	mkNAD(t, ns, "n", "hostnet-v4")
	startServer(t, "")
	host := podObj(ns, "host", "node-1", "n")
	host.Spec.HostNetwork = true
	if err := k8s.Create(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // more than the server takes to serve a pod here
	if fs := fips(t, "hostnet-v4"); len(fs) != 0 {
		t.Fatalf("FloatingIPs held for a pod on the host's network: %+v", fs)
	}
	p := &corev1.Pod{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "host"}, p); err != nil {
		t.Fatal(err)
	}
	if v, ok := p.Annotations[assignment.Annotation]; ok {
		t.Fatalf("pod on the host's network has an assignment: %s", v)
	}
	mkPod(t, ns, "guest", "node-1", "n")
	if got := addressesOf(assignments(t, ns, "guest", "net1"), "net1"); got != "203.0.113.9/32" {
		t.Fatalf("the pod after it got %q, want the pool's one address", got)
	}
	eventually(t, 10*time.Second, "one FloatingIP, the guest's", func() (bool, string) {
		fs := fips(t, "hostnet-v4")
		return len(fs) == 1 && fs[0].Spec.Pod == ns+"/guest", fmt.Sprintf("%+v", fs)
	})
}

// A FloatingIP held by a pod on the host's network (made by a version that served such pods) goes back to the
// pool by policy, as a finished pod's does: no CNI ever runs for the pod, so it never uses the address. The
// pod's assignment stops naming it.
func TestAFloatingIPOfAPodOnTheHostNetworkIsReleased(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "hostnet2-v4", "203.0.113.10/32")
	mkNAD(t, ns, "n", "hostnet2-v4")
	host := podObj(ns, "host", "node-1", "n")
	host.Spec.HostNetwork = true
	if err := k8s.Create(context.Background(), host); err != nil {
		t.Fatal(err)
	}
	a := assignment.Assignments{PodUID: string(host.UID), Interfaces: map[string]assignment.Interface{
		"net1": {Network: ns + "/n", Addresses: []assignment.Address{{CIDR: "203.0.113.10/32", Pool: "hostnet2-v4", FloatingIP: "hostnet2-v4-203-0-113-10"}}}}}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, assignment.Annotation, a.Encode())
	if err := k8s.Patch(context.Background(), host, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	create(t, &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "hostnet2-v4-203-0-113-10"}, Spec: braidv1.FloatingIPSpec{
		IP: "203.0.113.10", Pool: "hostnet2-v4", Pod: ns + "/host", PodUID: string(host.UID), Interface: "net1", Network: ns + "/n",
		Node: "node-1", ReleasePolicy: braidv1.ReleaseOnPodDeletion}})
	startServer(t, "")
	eventually(t, 10*time.Second, "the FloatingIP released", func() (bool, string) {
		fs := fips(t, "hostnet2-v4")
		return len(fs) == 0, fmt.Sprintf("%+v", fs)
	})
	eventually(t, 10*time.Second, "the assignment naming no address", func() (bool, string) {
		p := &corev1.Pod{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(host), p); err != nil {
			return false, err.Error()
		}
		got, err := assignment.Parse(p.Annotations[assignment.Annotation])
		iface := got.Interfaces["net1"]
		return err == nil && len(iface.Addresses) == 0 && strings.Contains(iface.Error, "host's network"), p.Annotations[assignment.Annotation]
	})
}
