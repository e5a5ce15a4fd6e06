package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// A StatefulSet pod whose ordinal keeps its address is recreated on another rack, whose subnet is another
// pool: it gets an address of that rack's pool (not the reserved one, which would be another subnet's on this
// node) and a warning, and the reservation stays for the ordinal. Before, the reservation was rebound and the
// rack's pool never asked: the pod's assignment had no address and no error.
func TestStatefulSetPodRecreatedOnAnotherRack(t *testing.T) {
	ns := env.Namespace(t)
	for _, rack := range []string{"r1", "r2"} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "rack-" + rack + "-" + ns, Labels: map[string]string{"rack": rack}}}
		if err := k8s.Create(context.Background(), n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), n) })
	}
	onRack := func(rack string) poolOpt {
		return func(p *braidv1.IPPool) {
			p.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"rack": rack}}
			p.Spec.ReleasePolicy = braidv1.ReleaseKeepForStatefulSet
		}
	}
	mkPool(t, "rack1-v4", "192.0.2.0/24", onRack("r1"))
	mkPool(t, "rack2-v4", "198.51.100.0/24", onRack("r2"))
	mkNAD(t, ns, "ctl", "rack1-v4", "rack2-v4")
	startServer(t, "")

	set := mkStatefulSet(t, ns, "web", 1)
	webOn := func(rack string) *corev1.Pod { return statefulSetPodOn(t, set, 0, "rack-"+rack+"-"+ns, "ctl") }
	first := webOn("r1")
	if got := addressesOf(assignments(t, ns, "web-0", "net1"), "net1"); !strings.HasPrefix(got, "192.0.2.") {
		t.Fatalf("web-0 on rack r1 got %q", got)
	}
	deletePod(t, first)
	eventually(t, 10*time.Second, "web-0's address reserved for its name", func() (bool, string) {
		fs := fips(t, "rack1-v4")
		return len(fs) == 1 && fs[0].Spec.PodUID == "", fmt.Sprintf("%+v", fs)
	})

	webOn("r2")
	if got := addressesOf(assignments(t, ns, "web-0", "net1"), "net1"); !strings.HasPrefix(got, "198.51.100.") {
		t.Fatalf("web-0 on rack r2 got %q, want an address of rack2-v4", got)
	}
	awaitEvent(t, ns, "web-0", "ReservedAddressNotEligible", "IPPool rack1-v4")
	if fs := fips(t, "rack1-v4"); len(fs) != 1 || fs[0].Spec.PodUID != "" {
		t.Fatalf("rack1-v4's reservation: %+v, want it still reserved for the name", fs)
	}
}

// A StatefulSet deleted and made again under the same name while the server is down is another StatefulSet:
// the first one's reservation (a FloatingIP as the server leaves it when the pod goes: no pod UID, the
// StatefulSet's name and UID in its annotations; TestStatefulSetKeepsOrdinalAddresses checks that the server
// writes that UID) is released when the server comes up, as it is when the server sees the deletion. Before,
// the new StatefulSet inherited it.
func TestRecreatedStatefulSetDoesNotInheritReservations(t *testing.T) {
	ns := env.Namespace(t)
	mkPool(t, "rests-v4", "203.0.113.0/24", policy(braidv1.ReleaseKeepForStatefulSet))
	mkNAD(t, ns, "n", "rests-v4")
	first := mkStatefulSet(t, ns, "kv", 1)
	reserved := &braidv1.FloatingIP{
		ObjectMeta: metav1.ObjectMeta{Name: "rests-v4-203-0-113-1", Annotations: map[string]string{
			"braid.dev/statefulset": "kv", "braid.dev/statefulset-uid": string(first.UID)}},
		Spec: braidv1.FloatingIPSpec{IP: "203.0.113.1", Pool: "rests-v4", Pod: ns + "/kv-0", Interface: "net1",
			Network: ns + "/n", ReleasePolicy: braidv1.ReleaseKeepForStatefulSet},
	}
	if err := k8s.Create(context.Background(), reserved); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the first StatefulSet gone", func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(first), &appsv1.StatefulSet{})
		return apierrors.IsNotFound(err), fmt.Sprintf("%v", err)
	})
	mkStatefulSet(t, ns, "kv", 1)
	startServer(t, "")
	eventually(t, 15*time.Second, "the old reservation released", func() (bool, string) {
		fs := fips(t, "rests-v4")
		return len(fs) == 0, fmt.Sprintf("%+v", fs)
	})
}
