package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/podid"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/allocator"
	"github.com/braid-cni/braid/ipam-server/internal/podnet"
)

// allocate takes a free address of one family from the first eligible pool that has one.
func (r *podReconciler) allocate(ctx context.Context, pod *corev1.Pod, sel podnet.Selection, eligible []candidate,
	is4 bool, why []string) (*braidv1.FloatingIP, error) {
	family := map[bool]string{true: "IPv4", false: "IPv6"}[is4]
	var exhausted []string
	for _, c := range eligible {
		if c.model.Prefix.Addr().Is4() != is4 {
			continue
		}
		// An address whose FloatingIP exists already (the cache lagged) stays picked until the cache shows
		// that FloatingIP, and the next one is tried.
		for range 64 {
			addr, err := r.state.alloc.Allocate(c.name, r.state.now())
			if errors.Is(err, allocator.ErrExhausted) {
				exhausted = append(exhausted, err.Error())
				break
			}
			if err != nil {
				return nil, err
			}
			f, err := r.create(ctx, pod, sel, c, addr)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				r.state.alloc.Unclaim(c.name, addr)
				return nil, err
			}
			return f, nil
		}
	}
	if len(exhausted) > 0 {
		return nil, &failure{ReasonPoolExhausted, fmt.Sprintf("network %s: no free %s address: %s", sel.Key(), family, strings.Join(exhausted, "; "))}
	}
	return nil, &failure{ReasonNoEligiblePool, fmt.Sprintf("network %s: no eligible %s pool: %s", sel.Key(), family, strings.Join(why, "; "))}
}

// claim holds a static address the pod asked for with "ips". Pools may share a CIDR (split into ranges), so
// each eligible pool containing the address is asked in turn.
func (r *podReconciler) claim(ctx context.Context, pod *corev1.Pod, sel podnet.Selection, eligible []candidate,
	addr netip.Addr) (*braidv1.FloatingIP, error) {
	var notUsable, otherLength []string
	for _, c := range eligible {
		if !c.model.Prefix.Contains(addr) {
			continue
		}
		if bits, ok := sel.Lengths[addr]; ok && bits != c.model.Prefix.Bits() {
			// The pod would be configured with a mask its network does not have.
			otherLength = append(otherLength, fmt.Sprintf("IPPool %s is %s", c.name, c.model.Prefix))
			continue
		}
		err := r.state.alloc.Claim(c.name, addr, r.state.now())
		switch {
		case errors.Is(err, allocator.ErrTaken):
			return nil, refuse(ReasonAddressTaken, sel, addr, "is already held in IPPool "+c.name, fixTaken)
		case errors.Is(err, allocator.ErrNotUsable):
			notUsable = append(notUsable, fmt.Sprintf("IPPool %s: %s", c.name, c.model.Unusable(addr)))
			continue
		case err != nil:
			return nil, err
		}
		f, err := r.create(ctx, pod, sel, c, addr)
		if apierrors.IsAlreadyExists(err) {
			f, err = r.takeOver(ctx, pod, sel, c, addr)
		}
		if err != nil {
			r.state.alloc.Unclaim(c.name, addr)
			return nil, err
		}
		return f, nil
	}
	switch {
	case len(otherLength) > 0:
		return nil, refuse(ReasonPrefixMismatch, sel, addr, fmt.Sprintf("is asked with prefix length /%d, but %s",
			sel.Lengths[addr], strings.Join(otherLength, ", ")), "write the pool's prefix length, or the address alone")
	case len(notUsable) > 0:
		return nil, refuse(ReasonAddressOutsidePool, sel, addr, "is not handed out: "+strings.Join(notUsable, "; "),
			"ask for an address the pool hands out")
	}
	return nil, refuse(ReasonAddressOutsidePool, sel, addr, "is outside every eligible pool",
		"ask for an address of a pool the network's ipam.pools names and that matches the pod's node and namespace")
}

// fixTaken is what a pod asking for a held address can do.
const fixTaken = "ask for another address, or release this one first"

// refuse is the failure of a static address: it names the field, says why, and what to do.
func refuse(reason string, sel podnet.Selection, addr netip.Addr, why, fix string) *failure {
	return &failure{reason, fmt.Sprintf("network %s: %s ips: requested address %s %s; %s",
		sel.Key(), podnet.NetworksAnnotation, addr, why, fix)}
}

// takeOver gives the pod a statically requested address whose FloatingIP exists: one released (its previous
// pod gone, the address cooling down) is deleted and made again for this pod, since the address was asked for
// by name; one that holds the address refuses the request. The API server, not the cache, says which.
func (r *podReconciler) takeOver(ctx context.Context, pod *corev1.Pod, sel podnet.Selection, c candidate, addr netip.Addr) (*braidv1.FloatingIP, error) {
	name := FloatingIPName(c.name, addr)
	old := &braidv1.FloatingIP{}
	if err := r.api.Get(ctx, types.NamespacedName{Name: name}, old); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read FloatingIP %s: %w", name, err)
	} else if err == nil {
		if old.Status.Phase != braidv1.FloatingIPReleased {
			return nil, refuse(ReasonAddressTaken, sel, addr, fmt.Sprintf("is already held (FloatingIP %s, pod %s)", name, old.Spec.Pod), fixTaken)
		}
		if err := r.Delete(ctx, old, client.Preconditions{UID: &old.UID}); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("take over released FloatingIP %s: %w", name, err)
		}
	}
	f, err := r.create(ctx, pod, sel, c, addr)
	if apierrors.IsAlreadyExists(err) {
		return nil, refuse(ReasonAddressTaken, sel, addr, fmt.Sprintf("is already held (FloatingIP %s)", name), fixTaken)
	}
	return f, err
}

// create records the address in the API server: the FloatingIP's name makes the address this pod's alone.
func (r *podReconciler) create(ctx context.Context, pod *corev1.Pod, sel podnet.Selection, c candidate, addr netip.Addr) (*braidv1.FloatingIP, error) {
	f := &braidv1.FloatingIP{
		ObjectMeta: metav1.ObjectMeta{Name: FloatingIPName(c.name, addr)},
		Spec: braidv1.FloatingIPSpec{
			IP: addr.String(), Pool: c.name, Pod: pod.Namespace + "/" + pod.Name, PodUID: string(pod.UID),
			Interface: sel.Interface, Network: sel.Key(), Node: pod.Spec.NodeName, ReleasePolicy: c.model.Policy,
		},
	}
	if set, uid := controllingSet(pod); set != "" {
		f.Annotations = map[string]string{statefulSetAnnotation: set, statefulSetUIDAnnotation: uid}
	}
	if static := pod.Annotations[podid.MirrorAnnotation]; static != "" {
		if f.Annotations == nil {
			f.Annotations = map[string]string{}
		}
		f.Annotations[staticPodAnnotation] = static
	}
	if err := r.Create(ctx, f); err != nil {
		return nil, err
	}
	r.state.created(f)
	r.metrics.Allocations.WithLabelValues(c.name).Inc()
	return f, nil
}

// rebind gives a reserved FloatingIP (StatefulSet ordinal, Never policy, admin reservation for this pod name)
// to the pod that now carries that name, on its node, for the StatefulSet that controls it now.
func (r *podReconciler) rebind(ctx context.Context, pod *corev1.Pod, f *braidv1.FloatingIP) error {
	f.Spec.PodUID = string(pod.UID)
	f.Spec.Node = pod.Spec.NodeName
	if set, uid := controllingSet(pod); set != "" {
		if f.Annotations == nil {
			f.Annotations = map[string]string{}
		}
		f.Annotations[statefulSetAnnotation], f.Annotations[statefulSetUIDAnnotation] = set, uid
	}
	if err := r.Update(ctx, f); err != nil {
		return fmt.Errorf("rebind FloatingIP %s to pod %s/%s: %w", f.Name, pod.Namespace, pod.Name, err)
	}
	return nil
}
