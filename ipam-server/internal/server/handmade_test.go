package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// An admin's reservation for a pod name whose spec.ip lies outside its pool's CIDR is not given to the pod:
// the pod would be configured with another subnet's address and this pool's gateway, and the pool that does
// hold that address would not know it is taken. The pod is served from its pool, is told why with an Event,
// and the reservation stays as the admin made it.
func TestReservationOutsideItsPoolIsNotGivenToThePod(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "hm-v4", "192.0.2.0/28")
	mkNAD(t, ns, "n", "hm-v4")
	startServer(t, "")
	bad := &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "for-r"}, Spec: braidv1.FloatingIPSpec{IP: "198.51.100.9", Pool: "hm-v4",
		Pod: ns + "/r", Interface: "net1", Network: ns + "/n"}}
	create(t, bad)
	mkPod(t, ns, "r", "node-1", "n")
	if got := addressesOf(assignments(t, ns, "r", "net1"), "net1"); !strings.HasPrefix(got, "192.0.2.") || strings.Contains(got, ",") {
		t.Fatalf("r got %q, want one address of hm-v4's 192.0.2.0/28", got)
	}
	awaitEvent(t, ns, "r", "InvalidReservation", "spec.ip")
	time.Sleep(time.Second)
	var kept bool
	for _, f := range fips(t, "hm-v4") {
		if f.Name == "for-r" {
			kept = f.Spec.PodUID == "" && f.Status.Phase == ""
		}
	}
	if !kept {
		t.Fatalf("the admin's reservation was changed or removed: %+v", fmt.Sprint(fips(t, "hm-v4")))
	}
}

// A hand-made FloatingIP whose name is the one braid gives another address of its pool (an admin's slip:
// named for .1, spec.ip .5) takes both: .5 by its spec, .1 by its name, which the API server refuses to give a
// second object. Before, the pool counted .1 free, and tried to hand it out again and again.
func TestHandMadeFloatingIPNamedForAnotherAddressHoldsBoth(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "hm2", "192.0.2.0/29") // .1 to .6
	mkNAD(t, ns, "n", "hm2")
	create(t, &braidv1.FloatingIP{ObjectMeta: metav1.ObjectMeta{Name: "hm2-192-0-2-1"}, Spec: braidv1.FloatingIPSpec{IP: "192.0.2.5", Pool: "hm2"}})
	startServer(t, "")
	eventually(t, 15*time.Second, "hm2 counts .1 and .5 held", func() (bool, string) {
		st := poolStatus(t, "hm2")
		return st.Used == 2 && st.Free == "4", fmt.Sprintf("used %d free %s", st.Used, st.Free)
	})
	p := mkPod(t, ns, "p", "node-1", "n")
	defer deletePod(t, p)
	if got := addressesOf(assignments(t, ns, "p", "net1"), "net1"); got != "192.0.2.2/29" {
		t.Fatalf("p got %s, want 192.0.2.2/29", got)
	}
}
