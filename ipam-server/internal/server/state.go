package server

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/event"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/allocator"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// state is the server's in-memory view: the allocator, fed by the FloatingIP informer and by the server's
// own writes, and the FloatingIPs this process created that its cache has not shown yet. The view may lag the
// API server; correctness rests on FloatingIP names, which the API server keeps unique.
type state struct {
	alloc *allocator.Allocator
	now   func() time.Time
	ready atomic.Bool // rebuilt from the API server; pods are served only then
	// refused names pools that do not serve now (spec invalid, or overlapping an older pool). A pool that was
	// valid keeps its last valid model in the allocator meanwhile: its FloatingIPs keep their cool-down, and
	// the pods holding its addresses keep them described; it hands out nothing.
	refused sync.Map
	parsed  sync.Map // pool name -> parsedPool (forgotten when the pool is gone)

	mu      sync.Mutex
	pending map[string]map[string]*braidv1.FloatingIP // pod key -> FloatingIP name -> object just created

	// poolChanged names pools whose addresses changed in the allocator, so their status is recounted after
	// the change (a FloatingIP event alone may be handled before the allocator has seen it).
	poolChanged chan event.GenericEvent
	// poolLoaded names pools just loaded into the allocator (created, or valid again), whose pods may wait for
	// them: the pod controller serves the pods of the networks that name them.
	poolLoaded chan event.GenericEvent
	// holderGone names pods whose FloatingIP was deleted while it held an address, once the allocator and
	// the pending creations have seen the deletion (the pod controller's own FloatingIP event may come first).
	holderGone chan event.GenericEvent
}

func newState(now func() time.Time) *state {
	return &state{alloc: allocator.New(), now: now, pending: map[string]map[string]*braidv1.FloatingIP{},
		poolChanged: make(chan event.GenericEvent, 1024), poolLoaded: make(chan event.GenericEvent, 64),
		holderGone: make(chan event.GenericEvent, 1024)}
}

// changed asks for the pool's status to be recounted; when the queue is full a recount is due anyway.
func (s *state) changed(pool string) {
	select {
	case s.poolChanged <- event.GenericEvent{Object: &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pool}}}:
	default:
	}
}

// loaded announces a pool just loaded into the allocator; it waits for room, or for ctx to end.
func (s *state) loaded(ctx context.Context, pool string) {
	select {
	case s.poolLoaded <- event.GenericEvent{Object: &braidv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pool}}}:
	case <-ctx.Done():
	}
}

// serving reports whether a pool is loaded and not refused, with its model.
func (s *state) serving(name string) (pool.Model, bool) {
	if _, refused := s.refused.Load(name); refused {
		return pool.Model{}, false
	}
	return s.alloc.Model(name)
}

// observe applies a FloatingIP seen in the API (informer add/update, the rebuild list, or our own write) to the
// allocator. The allocator knows each FloatingIP by UID: a name is reused when a released address is taken
// over, and the old object's deletion must not drop the new one.
func (s *state) observe(f *braidv1.FloatingIP) {
	addr, err := netip.ParseAddr(f.Spec.IP)
	if err != nil {
		return
	}
	var releasedAt *time.Time
	if f.Status.Phase == braidv1.FloatingIPReleased {
		at := s.now() // released by hand without a time: its cool-down starts now
		if f.Status.ReleasedAt != nil {
			at = f.Status.ReleasedAt.Time
		}
		releasedAt = &at
	}
	_ = s.alloc.Observe(f.Spec.Pool, addr, string(f.UID), releasedAt)
	if named, ok := nameAddress(f.Spec.Pool, f.Name); ok && named != addr {
		// Named for another address (made by hand): no other FloatingIP can take that name, so it holds both.
		_ = s.alloc.Observe(f.Spec.Pool, named, string(f.UID)+byName, nil)
	}
	s.changed(f.Spec.Pool)
	s.dropPending(f)
}

// dropPending forgets a FloatingIP created here once the cache shows it or it is gone, and its pod's entry with
// its last one.
func (s *state) dropPending(f *braidv1.FloatingIP) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if names, ok := s.pending[f.Spec.Pod]; ok {
		delete(names, f.Name)
		if len(names) == 0 {
			delete(s.pending, f.Spec.Pod)
		}
	}
}

// informerHandler applies the FloatingIP informer's events to the state.
func (s *state) informerHandler() toolscache.ResourceEventHandlerFuncs {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { observeObj(s, o) },
		UpdateFunc: func(old, o any) {
			// A relist (the watch broke) reports a FloatingIP deleted and made again meanwhile, under the same
			// name, as an update to an object of another UID: the old one is gone, and what only it held is free.
			was, okOld := old.(*braidv1.FloatingIP)
			cur, okCur := o.(*braidv1.FloatingIP)
			if okOld && okCur && was.UID != cur.UID {
				s.forget(was)
			}
			observeObj(s, o)
		},
		DeleteFunc: func(o any) {
			if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if f, ok := o.(*braidv1.FloatingIP); ok {
				s.forget(f)
			}
		},
	}
}

// byName marks, in the allocator, the hold a FloatingIP named for another address has on that address.
const byName = "/by-name"

// forget applies a FloatingIP's deletion: an address it held is released now; one it had released keeps
// its release time. Another FloatingIP of the same address (an admin's) keeps holding it.
func (s *state) forget(f *braidv1.FloatingIP) {
	addr, err := netip.ParseAddr(f.Spec.IP)
	if err != nil {
		return
	}
	_ = s.alloc.Forget(f.Spec.Pool, addr, string(f.UID), s.now())
	if named, ok := nameAddress(f.Spec.Pool, f.Name); ok && named != addr {
		_ = s.alloc.Forget(f.Spec.Pool, named, string(f.UID)+byName, s.now())
	}
	s.changed(f.Spec.Pool)
	s.dropPending(f)
	if ns, name, ok := splitKey(f.Spec.Pod); ok && f.Status.Phase != braidv1.FloatingIPReleased {
		select { // a standby replica runs no pod controller: when nobody takes it, the event is dropped
		case s.holderGone <- event.GenericEvent{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}:
		default:
		}
	}
}

// created records a FloatingIP this process just created, until the cache shows it.
func (s *state) created(f *braidv1.FloatingIP) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[f.Spec.Pod] == nil {
		s.pending[f.Spec.Pod] = map[string]*braidv1.FloatingIP{}
	}
	s.pending[f.Spec.Pod][f.Name] = f.DeepCopy()
}

// pendingFor returns the FloatingIPs of a pod created here and not yet in the cache.
func (s *state) pendingFor(podKey string) []braidv1.FloatingIP {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]braidv1.FloatingIP, 0, len(s.pending[podKey]))
	for _, f := range s.pending[podKey] {
		out = append(out, *f)
	}
	return out
}
