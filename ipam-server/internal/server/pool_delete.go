package server

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// poolFinalizer keeps a deleted pool while pods hold addresses of it, as kubernetes.io/pvc-protection keeps a
// claim in use: the pool's name is what guards its addresses, and a pool made meanwhile over the same CIDR
// would hand out addresses still configured in running pods.
const poolFinalizer = "braid.dev/floatingips"

// reasonDeleting is the Ready=False reason of a deleted pool waiting for its FloatingIPs to go.
const reasonDeleting = "Deleting"

// protect adds the finalizer to a pool that has none.
func (r *poolReconciler) protect(ctx context.Context, p *braidv1.IPPool) error {
	if controllerutil.ContainsFinalizer(p, poolFinalizer) {
		return nil
	}
	patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(p, poolFinalizer)
	if err := r.Patch(ctx, p, patch); err != nil {
		return fmt.Errorf("add finalizer to IPPool %s: %w", p.Name, err)
	}
	return nil
}

// deleting serves a deleted pool: it hands out nothing; its FloatingIPs that hold no address for a pod go with
// it, and its status says how many others keep it. Once none is left (the API server, not the cache, says so)
// its finalizer goes and so does the pool.
func (r *poolReconciler) deleting(ctx context.Context, p *braidv1.IPPool) (ctrl.Result, error) {
	r.state.refused.Store(p.Name, true)
	if !controllerutil.ContainsFinalizer(p, poolFinalizer) {
		return ctrl.Result{}, nil
	}
	n, err := r.podsHolding(ctx, p.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if n == 0 {
		patch := client.MergeFromWithOptions(p.DeepCopy(), client.MergeFromWithOptimisticLock{})
		controllerutil.RemoveFinalizer(p, poolFinalizer)
		if err := r.Patch(ctx, p, patch); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, fmt.Errorf("remove finalizer of IPPool %s: %w", p.Name, err)
		}
		return ctrl.Result{}, nil
	}
	status := p.Status.DeepCopy()
	if st, err := r.state.alloc.Stats(p.Name, r.state.now()); err == nil {
		status.Total, status.Used, status.Free = st.Total.String(), st.Used, st.Free.String()
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
		Reason: reasonDeleting, ObservedGeneration: p.Generation, Message: fmt.Sprintf("the pool is deleted once the "+
			"pods holding its addresses are gone (%d FloatingIP(s)); it hands out nothing meanwhile", n)})
	return ctrl.Result{RequeueAfter: poolResync}, r.writeStatus(ctx, p, status)
}

// podsHolding deletes the FloatingIPs of a deleted pool that hold no address for a pod (a reservation for
// nobody or for a pod name, an address released and cooling down) and counts the others: from the cache, and
// from the API server when the cache shows none, since a FloatingIP just made may not show there yet.
func (r *poolReconciler) podsHolding(ctx context.Context, pool string) (int, error) {
	fips, err := floatingIPsOf(ctx, r.Client, pool)
	if err != nil {
		return 0, err
	}
	n, err := r.sweepUnused(ctx, pool, fips)
	if err != nil || n > 0 {
		return n, err
	}
	list := &braidv1.FloatingIPList{}
	if err := r.api.List(ctx, list); err != nil {
		return 0, fmt.Errorf("list FloatingIPs: %w", err)
	}
	return r.sweepUnused(ctx, pool, list.Items)
}

// sweepUnused deletes the pool's FloatingIPs among fips that hold no address for a pod and counts the others.
func (r *poolReconciler) sweepUnused(ctx context.Context, pool string, fips []braidv1.FloatingIP) (int, error) {
	n := 0
	for i := range fips {
		f := &fips[i]
		if f.Spec.Pool != pool {
			continue
		}
		if f.Spec.PodUID != "" && f.Status.Phase != braidv1.FloatingIPReleased {
			n++
			continue
		}
		err := r.Delete(ctx, f, client.Preconditions{UID: &f.UID, ResourceVersion: &f.ResourceVersion})
		if err != nil && !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("delete FloatingIP %s of deleted IPPool %s: %w", f.Name, pool, err)
		}
		r.state.forget(f)
	}
	return n, nil
}
