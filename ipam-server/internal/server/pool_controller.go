package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// Pool conditions.
const (
	ConditionReady     = "Ready"
	ConditionExhausted = "Exhausted"
)

// poolResync keeps status true while addresses leave their cool-down with no event to say so.
const poolResync = 30 * time.Second

// statusInterval spaces a pool's status writes during bursts: every FloatingIP event enqueues its pool, and
// writing each time would cost more API writes than the allocations themselves.
const statusInterval = 5 * time.Second

// recountDelay gathers a burst of a pool's address changes into one recount: a recount walks every address
// the pool holds, under the allocator's lock that allocations wait on, and a status write is held back for
// statusInterval anyway; only the gauges lag, by this much at most.
const recountDelay = 500 * time.Millisecond

// recountLater enqueues a pool whose addresses changed (state.changed) for a recount after recountDelay; the
// queue keeps one entry per pool, so that a burst of changes makes one recount.
var recountLater = handler.Funcs{GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Name: e.Object.GetName()}}, recountDelay)
}}

// poolReconciler loads pools into the allocator and keeps their status (total / used / free, conditions) true.
type poolReconciler struct {
	client.Client
	api     client.Reader // the API server itself, uncached
	state   *state
	metrics *Metrics

	lastWrite sync.Map // pool name -> time of its last status write
}

func (r *poolReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if !r.state.ready.Load() {
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	p := &braidv1.IPPool{}
	if err := r.Get(ctx, req.NamespacedName, p); err != nil {
		if client.IgnoreNotFound(err) == nil {
			r.state.alloc.RemovePool(req.Name)
			r.state.refused.Delete(req.Name)
			r.state.parsed.Delete(req.Name)
			r.lastWrite.Delete(req.Name)
			r.metrics.PoolUsed.DeleteLabelValues(req.Name)
			r.metrics.PoolFree.DeleteLabelValues(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.DeletionTimestamp != nil {
		return r.deleting(ctx, p)
	}
	if err := r.protect(ctx, p); err != nil {
		return ctrl.Result{}, err
	}
	status := p.Status.DeepCopy()
	status.ObservedGeneration = p.Generation
	m, err := r.state.parse(p)
	if err != nil {
		r.state.refused.Store(p.Name, true)
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
			Reason: "InvalidSpec", Message: err.Error(), ObservedGeneration: p.Generation})
		if err := r.refusedCounts(ctx, p.Name, "0", status); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.writeStatus(ctx, p, status)
	}
	older, addr, found, err := r.state.olderOverlap(ctx, r.Client, p, &m)
	if err != nil {
		return ctrl.Result{}, err
	}
	if found {
		r.state.refused.Store(p.Name, true)
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionFalse,
			Reason: reasonOverlaps, Message: overlapMessage(older, addr), ObservedGeneration: p.Generation})
		if err := r.refusedCounts(ctx, p.Name, m.Size().String(), status); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{RequeueAfter: poolResync}, r.writeStatus(ctx, p, status)
	}
	if err := r.load(ctx, p.Name, m); err != nil {
		return ctrl.Result{}, err
	}
	if _, was := r.state.refused.LoadAndDelete(p.Name); was {
		r.state.loaded(ctx, p.Name) // serving again: its pods may be waiting
	}
	st, err := r.state.alloc.Stats(p.Name, r.state.now())
	if err != nil {
		return ctrl.Result{}, err
	}
	status.Total, status.Used, status.Free = st.Total.String(), st.Used, st.Free.String()
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue,
		Reason: "Valid", Message: "pool is valid and serving", ObservedGeneration: p.Generation})
	exhausted := metav1.Condition{Type: ConditionExhausted, Status: metav1.ConditionFalse, Reason: "AddressesFree",
		Message: st.Free.String() + " addresses free", ObservedGeneration: p.Generation}
	if st.Free.Sign() <= 0 {
		exhausted.Status, exhausted.Reason = metav1.ConditionTrue, "NoAddressFree"
		exhausted.Message = fmt.Sprintf("all %s addresses are held or cooling down", st.Total)
	}
	meta.SetStatusCondition(&status.Conditions, exhausted)
	// The gauges cost no API write: they follow every count, also while a status write is held back.
	free, _ := st.Free.Float64()
	r.metrics.PoolUsed.WithLabelValues(p.Name).Set(float64(st.Used))
	r.metrics.PoolFree.WithLabelValues(p.Name).Set(free)
	if last, ok := r.lastWrite.Load(p.Name); ok {
		if wait := statusInterval - r.state.now().Sub(last.(time.Time)); wait > 0 && !equality.Semantic.DeepEqual(&p.Status, status) {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	return ctrl.Result{RequeueAfter: poolResync}, r.writeStatus(ctx, p, status)
}

// refusedCounts gives a pool that hands out nothing its counts: total as its spec says (0 when invalid), none
// free, and used the addresses its FloatingIPs hold; Exhausted does not apply.
func (r *poolReconciler) refusedCounts(ctx context.Context, name, total string, status *braidv1.IPPoolStatus) error {
	fips, err := floatingIPsOf(ctx, r.Client, name)
	if err != nil {
		return err
	}
	held := map[string]bool{}
	for _, f := range fips {
		held[f.Spec.IP] = true
	}
	status.Total, status.Used, status.Free = total, int64(len(held)), "0"
	meta.RemoveStatusCondition(&status.Conditions, ConditionExhausted)
	r.metrics.PoolUsed.WithLabelValues(name).Set(float64(len(held)))
	r.metrics.PoolFree.WithLabelValues(name).Set(0)
	return nil
}

// load (re)loads a valid pool into the allocator; a pool seen for the first time also gets the addresses its
// FloatingIPs already hold, which may have been observed before the pool existed, and is announced to the pod
// controller.
func (r *poolReconciler) load(ctx context.Context, name string, m pool.Model) error {
	if !r.state.alloc.SetPool(name, m) {
		return nil
	}
	fips, err := floatingIPsOf(ctx, r.Client, name)
	if err != nil {
		// Unloaded again, so that the retry loads the pool with its addresses, and announces it.
		r.state.alloc.RemovePool(name)
		return err
	}
	for i := range fips {
		r.state.observe(&fips[i])
	}
	r.state.loaded(ctx, name)
	return nil
}

func (r *poolReconciler) writeStatus(ctx context.Context, p *braidv1.IPPool, status *braidv1.IPPoolStatus) error {
	if equality.Semantic.DeepEqual(&p.Status, status) {
		return nil
	}
	// A merge patch, not an update: the cached pool often lags our own last write, and only the leader
	// writes pool status, so there is nothing to guard with a resourceVersion.
	patch := client.MergeFrom(p.DeepCopy())
	p.Status = *status
	if err := r.Status().Patch(ctx, p, patch); err != nil {
		return fmt.Errorf("update status of IPPool %s: %w", p.Name, err)
	}
	r.lastWrite.Store(p.Name, r.state.now())
	return nil
}

// loadAll rebuilds the allocator from the API server: every valid pool (refused, if it overlaps an older one),
// then every FloatingIP.
func loadAll(ctx context.Context, c client.Reader, s *state) error {
	pools := &braidv1.IPPoolList{}
	if err := c.List(ctx, pools); err != nil {
		return fmt.Errorf("list IPPools: %w", err)
	}
	for i := range pools.Items {
		m, err := pool.Parse(pools.Items[i].Spec)
		if err != nil {
			continue
		}
		s.alloc.SetPool(pools.Items[i].Name, m)
		if pools.Items[i].DeletionTimestamp != nil {
			s.refused.Store(pools.Items[i].Name, true) // deleted, waiting for its FloatingIPs to go
			continue
		}
		if _, _, found := overlap(&pools.Items[i], &m, pools.Items, s.parse, readyTrue); found {
			s.refused.Store(pools.Items[i].Name, true) // its FloatingIPs are counted; it hands out nothing
		}
	}
	fips := &braidv1.FloatingIPList{}
	if err := c.List(ctx, fips); err != nil {
		return fmt.Errorf("list FloatingIPs: %w", err)
	}
	for i := range fips.Items {
		s.observe(&fips.Items[i])
	}
	return nil
}
