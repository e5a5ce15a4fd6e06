package server_test

import (
	"encoding/json"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/server"
)

// TestANADBrokenLaterLeavesItsRunningPodsTheirAddresses: a NAD edited into one the server refuses (here a
// host-local key kept in its braid-ipam section) fails the pods that come after, with an Event, while a pod
// already served keeps its addresses, on its FloatingIPs and in its annotation, which its node's braid-ipam
// reads again for CHECK and for a new sandbox.
func TestANADBrokenLaterLeavesItsRunningPodsTheirAddresses(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "broken-nad", "192.0.2.0/24")
	mkNAD(t, ns, "mgmt", "broken-nad")
	startServer(t, "", func(o *server.Options) { o.Resync = time.Second }) // so p1 is looked at again

	mkPod(t, ns, "p1", "node-1", "mgmt")
	before := assignments(t, ns, "p1", "net1")
	if len(before.Interfaces["net1"].Addresses) != 1 {
		t.Fatalf("p1 before the NAD broke: %+v, want one address", before.Interfaces["net1"])
	}

	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "mgmt"}, nad); err != nil {
		t.Fatal(err)
	}
	nad.Spec.Config = `{"cniVersion":"1.0.0","name":"mgmt","type":"macvlan","master":"eth0",` +
		`"ipam":{"type":"braid-ipam","pools":["broken-nad"],"routes":[{"dst":"0.0.0.0/0"}]}}`
	if err := k8s.Update(t.Context(), nad); err != nil {
		t.Fatal(err)
	}

	mkPod(t, ns, "p2", "node-1", "mgmt")
	awaitEvent(t, ns, "p2", "InvalidNetworkConfig", "ipam.routes")
	if got := published(t, ns, "p2").Interfaces["net1"]; got.Error == "" || len(got.Addresses) != 0 {
		t.Fatalf("p2, after the NAD broke: %+v, want no address and the error", got)
	}

	awaitEvent(t, ns, "p1", "InvalidNetworkConfig", "ipam.routes")
	time.Sleep(2 * time.Second) // two more resyncs
	after := published(t, ns, "p1")
	was, _ := json.Marshal(before.Interfaces["net1"])
	is, _ := json.Marshal(after.Interfaces["net1"])
	if string(was) != string(is) {
		t.Errorf("p1's assignment changed when its NAD broke:\n was %s\n now %s", was, is)
	}
	if held := fips(t, "broken-nad"); len(held) != 1 || held[0].Spec.Pod != ns+"/p1" {
		t.Errorf("FloatingIPs of the pool after the NAD broke: %+v, want p1's one", held)
	}
	if n := timesReported(t, ns, "p1", "InvalidNetworkConfig"); n != 1 {
		t.Errorf("InvalidNetworkConfig reported %d times on p1, want once", n)
	}
}

// published is the pod's assignment annotation as it is now.
func published(t *testing.T, ns, name string) assignment.Assignments {
	t.Helper()
	p := &corev1.Pod{}
	if err := k8s.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		t.Fatal(err)
	}
	a, err := assignment.Parse(p.Annotations[assignment.Annotation])
	if err != nil {
		t.Fatalf("pod %s/%s: %v", ns, name, err)
	}
	return a
}
