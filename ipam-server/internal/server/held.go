package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/podnet"
)

// ReasonReservedNotEligible warns that an address reserved for the pod's name (StatefulSet ordinal, Never
// policy, an admin's reservation) comes from a pool that does not match the pod now (another rack's subnet,
// an edited selector): it stays reserved, and the pod is served from an eligible pool.
const ReasonReservedNotEligible = "ReservedAddressNotEligible"

// ReasonInvalidReservation warns that a FloatingIP reserved for the pod's name (an admin's, made by hand) has
// an address outside its pool's CIDR: the pod is not given it, and is served from an eligible pool.
const ReasonInvalidReservation = "InvalidReservation"

// keepHeld returns the FloatingIPs of the pod's interface that it keeps: those bound to this pod (it may run
// with them configured; a pool edited since does not take them away), and those reserved for its name from a
// pool eligible for it now, which are rebound to it. A reservation from a pool that is not eligible stays as
// it is: rebinding it would configure another subnet's address on this node.
func (r *podReconciler) keepHeld(ctx context.Context, pod *corev1.Pod, sel podnet.Selection, held []braidv1.FloatingIP,
	eligible []candidate) ([]braidv1.FloatingIP, error) {
	var got []braidv1.FloatingIP
	for i := range held {
		f := &held[i]
		if f.Spec.Network != sel.Key() {
			continue
		}
		bound := f.Spec.PodUID == string(pod.UID)
		set, setUID := controllingSet(pod)
		if !bound && set != "" && f.Annotations[statefulSetUIDAnnotation] != "" && f.Annotations[statefulSetUIDAnnotation] != setUID {
			continue // another StatefulSet's reservation, which the FloatingIP controller releases
		}
		if !bound && !r.inItsPool(f) {
			r.warnOnce(pod, "reserved/"+f.Name, ReasonInvalidReservation, fmt.Sprintf("network %s: FloatingIP %s is "+
				"reserved for this pod's name, but its spec.ip %s lies outside IPPool %s's spec.cidr: the pod is not given it, "+
				"and is served from an eligible pool; delete that FloatingIP and reserve an address of the pool",
				sel.Key(), f.Name, f.Spec.IP, f.Spec.Pool))
			continue
		}
		if !bound && !slices.ContainsFunc(eligible, func(c candidate) bool { return c.name == f.Spec.Pool }) {
			r.warnOnce(pod, "reserved/"+f.Name, ReasonReservedNotEligible, fmt.Sprintf("network %s: FloatingIP %s (%s) is "+
				"reserved for this pod's name, but IPPool %s does not match the pod's node or namespace now; it stays "+
				"reserved, and the pod is served from an eligible pool", sel.Key(), f.Name, f.Spec.IP, f.Spec.Pool))
			continue
		}
		// A StatefulSet made again after an orphaning delete adopts the pod: its addresses are that set's now.
		adopted := set != "" && (f.Annotations[statefulSetAnnotation] != set || f.Annotations[statefulSetUIDAnnotation] != setUID)
		if !bound || f.Spec.Node != pod.Spec.NodeName || adopted {
			if err := r.rebind(ctx, pod, f); err != nil {
				return nil, err
			}
		}
		got = append(got, *f)
	}
	return got, nil
}

// controllingSet is the name and UID of the StatefulSet that controls the pod; empty when none does.
func controllingSet(pod *corev1.Pod) (name, uid string) {
	if owner := metav1.GetControllerOf(pod); owner != nil && owner.Kind == "StatefulSet" {
		return owner.Name, string(owner.UID)
	}
	return "", ""
}

// inItsPool reports whether the FloatingIP's address lies in its pool's CIDR, as far as this process knows the
// pool (one it has no model of is given the benefit of the doubt).
func (r *podReconciler) inItsPool(f *braidv1.FloatingIP) bool {
	m, ok := r.state.alloc.Model(f.Spec.Pool)
	addr, err := netip.ParseAddr(f.Spec.IP)
	return !ok || (err == nil && m.Prefix.Contains(addr))
}

// withPoolsOf adds to the eligible pools the loaded pools of kept FloatingIPs that are not eligible now, so
// that the pod's assignment still describes those addresses with their pool's gateway, routes and DNS.
func (r *podReconciler) withPoolsOf(got []braidv1.FloatingIP, eligible []candidate) []candidate {
	out := eligible
	for _, f := range got {
		if slices.ContainsFunc(out, func(c candidate) bool { return c.name == f.Spec.Pool }) {
			continue
		}
		if m, ok := r.state.alloc.Model(f.Spec.Pool); ok {
			out = append(slices.Clip(out), candidate{name: f.Spec.Pool, model: m})
		}
	}
	return out
}

// holdsAll reports whether every statically requested address is among the FloatingIPs.
func holdsAll(got []braidv1.FloatingIP, ips []netip.Addr) bool {
	for _, addr := range ips {
		if !holding(got, addr) {
			return false
		}
	}
	return true
}

// holding reports whether one of the FloatingIPs is of addr.
func holding(got []braidv1.FloatingIP, addr netip.Addr) bool {
	return slices.ContainsFunc(got, func(f braidv1.FloatingIP) bool { return f.Spec.IP == addr.String() })
}
