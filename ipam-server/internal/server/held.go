package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/allocator"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
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

// ReasonFloatingIPRestored warns that a FloatingIP of an address the pod was given was deleted (by hand) while
// the pod may use the address: it is made again, so that the address does not go to another pod too.
const ReasonFloatingIPRestored = "FloatingIPRestored"

// reclaim takes back for the pod the address of the family that its assignment names already but no
// FloatingIP holds any more (one deleted by hand): the pod may have it configured, so it keeps it, rather than
// get a second address it never configures while the first goes back to the pool for another pod. It returns
// nil when the assignment names no such address, or the address cannot be taken back (its pool is not served,
// or another FloatingIP holds it now), and the pod is served a new address as before.
func (r *podReconciler) reclaim(ctx context.Context, pod *corev1.Pod, sel podnet.Selection, prev assignment.Interface,
	is4 bool) (*braidv1.FloatingIP, error) {
	for _, a := range prev.Addresses {
		p, err := netip.ParsePrefix(a.CIDR)
		if err != nil || p.Addr().Is4() != is4 {
			continue
		}
		m, ok := r.state.serving(a.Pool)
		if !ok {
			continue
		}
		if err := r.state.alloc.Claim(a.Pool, p.Addr(), r.state.now()); errors.Is(err, allocator.ErrTaken) {
			if held, err := r.heldElsewhere(ctx, a.Pool, p.Addr()); err != nil || !held {
				return nil, cmp.Or(err, errSettling) // the allocator has yet to see the deletion
			}
			continue
		} else if err != nil {
			continue
		}
		f, err := r.create(ctx, pod, sel, candidate{name: a.Pool, model: m}, p.Addr())
		if err != nil {
			r.state.alloc.Unclaim(a.Pool, p.Addr())
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return nil, err
		}
		r.warnOnce(pod, "restored/"+f.Name, ReasonFloatingIPRestored, fmt.Sprintf("network %s: FloatingIP %s of "+
			"the pod's address %s was deleted while the pod may use the address; it is made again (to free the "+
			"address, delete the pod)", sel.Key(), a.FloatingIP, p.Addr()))
		return f, nil
	}
	return nil, nil
}

// errSettling: the allocator counts an address held whose FloatingIPs the cache no longer has; it sees their
// deletion a moment later (each informer handler runs on its own).
var errSettling = errors.New("a FloatingIP's deletion is being applied")

// heldElsewhere reports whether a FloatingIP of the pool's address exists in the cache (not being deleted).
func (r *podReconciler) heldElsewhere(ctx context.Context, pool string, addr netip.Addr) (bool, error) {
	fips, err := floatingIPsOf(ctx, r.Client, pool)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(fips, func(f braidv1.FloatingIP) bool {
		ip, err := netip.ParseAddr(f.Spec.IP)
		return err == nil && ip == addr && f.DeletionTimestamp == nil
	}), nil
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
