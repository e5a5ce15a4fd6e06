package server

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
)

// poolFinalizer keeps a deleted pool while FloatingIPs of it exist, as kubernetes.io/pvc-protection keeps a
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

// deleting serves a deleted pool: it hands out nothing, and says on its status how many FloatingIPs keep it;
// once none is left (the API server, not the cache, says so) its finalizer goes and so does the pool.
func (r *poolReconciler) deleting(ctx context.Context, p *braidv1.IPPool) (ctrl.Result, error) {
	r.state.refused.Store(p.Name, true)
	if !controllerutil.ContainsFinalizer(p, poolFinalizer) {
		return ctrl.Result{}, nil
	}
	n, err := r.floatingIPsOf(ctx, p.Name)
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
		Reason: reasonDeleting, ObservedGeneration: p.Generation, Message: fmt.Sprintf("the pool is deleted once its %d "+
			"FloatingIP(s) are gone; it hands out nothing meanwhile: delete the pods holding its addresses, and the "+
			"FloatingIPs of reservations (kubectl get floatingips)", n)})
	return ctrl.Result{RequeueAfter: poolResync}, r.writeStatus(ctx, p, status)
}

// floatingIPsOf counts the FloatingIPs of a pool: from the cache, and from the API server when the cache has
// none, since a FloatingIP just made may not show there yet.
func (r *poolReconciler) floatingIPsOf(ctx context.Context, pool string) (int, error) {
	list := &braidv1.FloatingIPList{}
	if err := r.List(ctx, list, client.MatchingFields{indexPool: pool}); err != nil {
		return 0, fmt.Errorf("list FloatingIPs of IPPool %s: %w", pool, err)
	}
	if len(list.Items) > 0 {
		return len(list.Items), nil
	}
	if err := r.api.List(ctx, list); err != nil {
		return 0, fmt.Errorf("list FloatingIPs: %w", err)
	}
	n := 0
	for _, f := range list.Items {
		if f.Spec.Pool == pool {
			n++
		}
	}
	return n, nil
}
