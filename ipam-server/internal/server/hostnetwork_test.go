package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
