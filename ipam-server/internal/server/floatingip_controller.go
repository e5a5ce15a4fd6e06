package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// floatingIPReconciler applies release policies: it releases addresses whose pod is gone or finished (or keeps them
// reserved for a StatefulSet ordinal, or forever), and deletes released ones once their cool-down has passed.
type floatingIPReconciler struct {
	client.Client
	api     client.Reader // the API server itself, uncached
	state   *state
	metrics *Metrics
	// mirrorGrace is how long a static pod's FloatingIP waits for a new mirror once its mirror is gone;
	// mirrorGone has, by the FloatingIP's name, when such a FloatingIP was first seen without its mirror
	// (a mirrorGoneSince). By name, so that the entry goes with a FloatingIP deleted during the grace.
	mirrorGrace time.Duration
	mirrorGone  sync.Map
}

// mirrorGoneSince is when the FloatingIP of UID was first seen without its static pod's mirror.
type mirrorGoneSince struct {
	uid   types.UID
	since time.Time
}

// effectivePolicy is the FloatingIP's policy; a hand-made FloatingIP with no policy is an admin reservation.
func effectivePolicy(f *braidv1.FloatingIP) braidv1.ReleasePolicy {
	if f.Spec.ReleasePolicy == "" {
		return braidv1.ReleaseNever
	}
	return f.Spec.ReleasePolicy
}

func (r *floatingIPReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if !r.state.ready.Load() {
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	f := &braidv1.FloatingIP{}
	if err := r.Get(ctx, req.NamespacedName, f); err != nil {
		if apierrors.IsNotFound(err) {
			r.mirrorGone.Delete(req.Name) // deleted during its mirror's grace (by hand, say)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if f.Status.Phase == braidv1.FloatingIPReleased {
		return r.expire(ctx, f)
	}
	if f.Spec.Pod == "" {
		return ctrl.Result{}, nil // an admin reservation of an address for nobody: never handed out
	}
	if f.Spec.PodUID == "" && effectivePolicy(f) == braidv1.ReleaseOnPodDeletion {
		// Bound to no pod yet: an admin's reservation for a pod name, which the pod controller binds when that
		// pod runs; released once the pod it was bound to is gone.
		return ctrl.Result{}, nil
	}
	if f.Spec.PodUID != "" {
		holder, err := r.holder(ctx, f)
		if err != nil {
			return ctrl.Result{}, err
		}
		if holder != nil && !usesNoAddress(holder) {
			r.mirrorGone.Delete(req.Name)
			return ctrl.Result{}, nil
		}
		if wait := r.mirrorWait(f, holder); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
		if holder != nil {
			// Finished, or on the host's network (held since a version that served such pods), so it never
			// uses its addresses: its assignment stops naming them before any goes back to the pool, so that
			// no reader of the pod's annotation is handed an address another pod may get.
			if err := withdraw(ctx, r.Client, holder); err != nil {
				return ctrl.Result{}, err
			}
		}
	}
	// The holder is gone, or the address is reserved for a pod name: apply the policy.
	switch effectivePolicy(f) {
	case braidv1.ReleaseNever:
		return ctrl.Result{}, r.reserve(ctx, f)
	case braidv1.ReleaseKeepForStatefulSet:
		wanted, err := r.ordinalWanted(ctx, f)
		if err != nil {
			return ctrl.Result{}, err
		}
		if wanted {
			return ctrl.Result{}, r.reserve(ctx, f)
		}
	}
	return r.release(ctx, f)
}

// mirrorWait is how much longer the FloatingIP of a static pod whose mirror is gone waits before its release
// (0: no longer). The static pod may run on with the address: deleting a mirror does not stop the static pod,
// and the kubelet makes a new mirror, which takes the FloatingIP back (see sameStaticPod). Released at once,
// the address would go to another pod after the cool-down while the static pod still has it.
func (r *floatingIPReconciler) mirrorWait(f *braidv1.FloatingIP, holder *corev1.Pod) time.Duration {
	if holder != nil || f.Annotations[staticPodAnnotation] == "" || effectivePolicy(f) != braidv1.ReleaseOnPodDeletion {
		return 0
	}
	key, now := f.Name, r.state.now()
	seen, _ := r.mirrorGone.LoadOrStore(key, mirrorGoneSince{uid: f.UID, since: now})
	first := seen.(mirrorGoneSince)
	if first.uid != f.UID { // an entry of an earlier FloatingIP of this name, whose deletion was not heard of
		first = mirrorGoneSince{uid: f.UID, since: now}
		r.mirrorGone.Store(key, first)
	}
	if wait := r.mirrorGrace - now.Sub(first.since); wait > 0 {
		return wait
	}
	r.mirrorGone.Delete(key)
	return 0
}

// holder returns the pod the FloatingIP is bound to, finished or not; nil when that pod is gone.
func (r *floatingIPReconciler) holder(ctx context.Context, f *braidv1.FloatingIP) (*corev1.Pod, error) {
	ns, name, ok := splitKey(f.Spec.Pod)
	if !ok {
		return nil, nil // the schema keeps spec.pod namespace/name; anything else names no live pod
	}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, pod); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	if string(pod.UID) != f.Spec.PodUID {
		return nil, nil
	}
	return pod, nil
}

// withdraw rewrites the assignment of a finished pod (or of one on the host's network) without addresses: each
// interface keeps its network and says why it has none. Its addresses go back by policy, and may go to another
// pod; the pod starts no sandbox with them, but its annotation must not name them (a CNI call reading it, a
// person, a tool).
func withdraw(ctx context.Context, c client.Client, pod *corev1.Pod) error {
	value, ok := pod.Annotations[assignment.Annotation]
	if !ok {
		return nil
	}
	a, err := assignment.Parse(value)
	if err != nil || a.PodUID != string(pod.UID) {
		return nil //nolint:nilerr // not this pod's assignment: it names nothing this pod holds
	}
	msg := fmt.Sprintf("pod %s/%s has finished (phase %s): its addresses went back to their pools",
		pod.Namespace, pod.Name, pod.Status.Phase)
	if pod.Spec.HostNetwork {
		msg = fmt.Sprintf("pod %s/%s uses the host's network, for which no CNI runs: its addresses went back to their pools",
			pod.Namespace, pod.Name)
	}
	changed := false
	for name, iface := range a.Interfaces {
		if len(iface.Addresses) > 0 || iface.Error != msg {
			a.Interfaces[name], changed = assignment.Interface{Network: iface.Network, Error: msg}, true
		}
	}
	if !changed {
		return nil
	}
	if err := patchAssignment(ctx, c, pod, a.Encode()); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("withdraw addresses of finished pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// ordinalWanted reports whether the StatefulSet that owned the pod still exists and still wants its ordinal.
// The cache may lag behind a scale-up (the StatefulSets' informer and the pods' are not in step), and a release
// is for good, so a cached "not wanted" is asked of the API server again.
func (r *floatingIPReconciler) ordinalWanted(ctx context.Context, f *braidv1.FloatingIP) (bool, error) {
	wanted, err := ordinalWantedBy(ctx, r.Client, f)
	if err != nil || wanted || r.api == nil {
		return wanted, err
	}
	return ordinalWantedBy(ctx, r.api, f)
}

func ordinalWantedBy(ctx context.Context, c client.Reader, f *braidv1.FloatingIP) (bool, error) {
	setName := f.Annotations[statefulSetAnnotation]
	ns, podName, ok := splitKey(f.Spec.Pod)
	if setName == "" || !ok {
		return false, nil
	}
	prefix, ordinal, isOrdinal := statefulSetOrdinal(podName)
	if !isOrdinal || prefix != setName {
		return false, nil
	}
	set := &appsv1.StatefulSet{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: setName}, set); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	replicas := int32(1)
	if set.Spec.Replicas != nil {
		replicas = *set.Spec.Replicas
	}
	start := int32(0)
	if set.Spec.Ordinals != nil {
		start = set.Spec.Ordinals.Start
	}
	if uid := f.Annotations[statefulSetUIDAnnotation]; uid != "" && uid != string(set.UID) {
		return false, nil // another StatefulSet of the same name
	}
	return set.DeletionTimestamp == nil && int32(ordinal) >= start && int32(ordinal) < start+replicas, nil
}

// reserve keeps the address for the pod's name: the next pod of that name gets it back.
func (r *floatingIPReconciler) reserve(ctx context.Context, f *braidv1.FloatingIP) error {
	if f.Spec.PodUID == "" {
		return nil
	}
	f.Spec.PodUID = ""
	if err := r.Update(ctx, f); err != nil {
		return fmt.Errorf("reserve FloatingIP %s: %w", f.Name, err)
	}
	return nil
}

// release gives the address back: at once when the pool has no cool-down, otherwise by marking it Released
// so that the cool-down survives a restart of the server.
func (r *floatingIPReconciler) release(ctx context.Context, f *braidv1.FloatingIP) (ctrl.Result, error) {
	cooldown, known, err := r.cooldown(ctx, f)
	if err != nil {
		return ctrl.Result{}, err
	}
	// Counted once the release is written: a failed attempt is retried, and is not a second release.
	if known && cooldown <= 0 {
		if err := r.delete(ctx, f); err != nil {
			return ctrl.Result{}, err
		}
		r.metrics.Releases.WithLabelValues(f.Spec.Pool).Inc()
		return ctrl.Result{}, nil
	}
	if !known {
		cooldown = poolResync // marked Released: expire looks again once the pool may have a model
	}
	f.Status.Phase = braidv1.FloatingIPReleased
	f.Status.ReleasedAt = &metav1.Time{Time: wholeSecondAfter(r.state.now())}
	if err := r.Status().Update(ctx, f); err != nil {
		return ctrl.Result{}, fmt.Errorf("release FloatingIP %s: %w", f.Name, err)
	}
	r.metrics.Releases.WithLabelValues(f.Spec.Pool).Inc()
	r.state.observe(f)
	return ctrl.Result{RequeueAfter: cooldown}, nil
}

// wholeSecondAfter is t rounded up to a whole second. status.releasedAt keeps whole seconds only (the rest is
// cut when it is written): recorded as it is, a release late in its second would count from up to a second
// before it happened, and its address could be reused before the pool's whole cool-down has passed.
func wholeSecondAfter(t time.Time) time.Time {
	if whole := t.Truncate(time.Second); !whole.Equal(t) {
		return whole.Add(time.Second)
	}
	return t
}

// expire deletes a released FloatingIP once its pool's cool-down has passed.
// A pool that exists with no model (invalid, not loaded yet) has a cool-down nobody can tell: the FloatingIP
// waits, released, until it can be told.
func (r *floatingIPReconciler) expire(ctx context.Context, f *braidv1.FloatingIP) (ctrl.Result, error) {
	cooldown, known, err := r.cooldown(ctx, f)
	switch {
	case err != nil:
		return ctrl.Result{}, err
	case !known:
		return ctrl.Result{RequeueAfter: poolResync}, nil
	}
	if f.Status.ReleasedAt != nil {
		if left := cooldown - r.state.now().Sub(f.Status.ReleasedAt.Time); left > 0 {
			return ctrl.Result{RequeueAfter: left}, nil
		}
	}
	return ctrl.Result{}, r.delete(ctx, f)
}

// delete deletes the FloatingIP as it was when the release was decided: one changed since (rebound to its pod's
// successor by the pod controller, or taken over) is a conflict, and the release is decided again.
func (r *floatingIPReconciler) delete(ctx context.Context, f *braidv1.FloatingIP) error {
	err := r.Delete(ctx, f, client.Preconditions{UID: &f.UID, ResourceVersion: &f.ResourceVersion})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete FloatingIP %s: %w", f.Name, err)
	}
	r.state.forget(f)
	return nil
}

// cooldown is the reuse cool-down of the FloatingIP's pool; known is false when the pool exists but has no
// model in this process (invalid since before it started, or not loaded yet). A pool that is gone has none.
func (r *floatingIPReconciler) cooldown(ctx context.Context, f *braidv1.FloatingIP) (d time.Duration, known bool, err error) {
	if m, ok := r.state.alloc.Model(f.Spec.Pool); ok {
		return m.Cooldown, true, nil
	}
	if err := r.Get(ctx, types.NamespacedName{Name: f.Spec.Pool}, &braidv1.IPPool{}); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, true, nil // the pool is gone: nothing to cool down for
		}
		return 0, false, fmt.Errorf("read IPPool %s of FloatingIP %s: %w", f.Spec.Pool, f.Name, err)
	}
	return 0, false, nil
}

func splitKey(key string) (namespace, name string, ok bool) {
	return strings.Cut(key, "/")
}
