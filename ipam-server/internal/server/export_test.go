package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// Publish writes a pod's assignment annotation as the pod controller does, through c.
func Publish(ctx context.Context, c client.Client, pod *corev1.Pod, a assignment.Assignments) error {
	r := &podReconciler{Client: c, metrics: NewMetrics(prometheus.NewRegistry())}
	return r.publish(ctx, pod, a)
}

// Describe renders an interface's FloatingIPs, given in the order it got them, with their pools' models, and
// prev, the interface's assignment as it stands.
func Describe(fips []braidv1.FloatingIP, pools map[string]pool.Model, prev assignment.Interface) assignment.Interface {
	var cs []candidate
	for name, m := range pools {
		cs = append(cs, candidate{name: name, model: m})
	}
	return describe(fips, cs, func() assignment.Interface { return prev })
}

// PoolsFor sorts the pools a network names for a pod as the pod controller does, reading them through c, with
// only the given pools loaded into the allocator. It returns the eligible pools and the missing ones, or the
// error: ErrPoolLoading for a valid pool the allocator has not loaded yet.
func PoolsFor(ctx context.Context, c client.Client, pod *corev1.Pod, names []string, loaded map[string]pool.Model) (eligible, missing []string, err error) {
	s := newState(time.Now)
	for name, m := range loaded {
		s.alloc.SetPool(name, m)
	}
	r := &podReconciler{Client: c, state: s}
	choice, err := r.eligiblePools(ctx, pod, names)
	for _, e := range choice.eligible {
		eligible = append(eligible, e.name)
	}
	return eligible, choice.missing, err
}

// ErrPoolLoading is errPoolLoading.
var ErrPoolLoading = errPoolLoading

// PoolController is the pool controller alone, on a fresh state that is ready, reading and writing through c.
type PoolController struct {
	r   *poolReconciler
	reg *prometheus.Registry
}

func NewPoolController(c client.Client) *PoolController {
	s := newState(time.Now)
	s.ready.Store(true)
	reg := prometheus.NewRegistry()
	return &PoolController{&poolReconciler{Client: c, api: c, state: s, metrics: NewMetrics(reg)}, reg}
}

// Observe applies a FloatingIP to the state, as the informer does.
func (p *PoolController) Observe(f *braidv1.FloatingIP) { p.r.state.observe(f) }

// Gauge is the value of a per-pool gauge (braid_ipam_pool_used, braid_ipam_pool_free), -1 when unset.
func (p *PoolController) Gauge(name, pool string) float64 {
	return gauge(p.reg, name, pool)
}

func gauge(reg *prometheus.Registry, name, pool string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "pool" && l.GetValue() == pool {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}

// Reconcile reconciles the named pool once.
func (p *PoolController) Reconcile(ctx context.Context, name string) error {
	_, err := p.r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
	return err
}

// Loaded reports whether the pool is in the allocator.
func (p *PoolController) Loaded(name string) bool {
	_, ok := p.r.state.alloc.Model(name)
	return ok
}

// Announced drains the pools announced to the pod controller so far.
func (p *PoolController) Announced() []string {
	var out []string
	for {
		select {
		case e := <-p.r.state.poolLoaded:
			out = append(out, e.Object.GetName())
		default:
			return out
		}
	}
}

// FloatingIPController is the FloatingIP controller alone, on a fresh ready state with the given pools
// loaded, reading and writing through c.
type FloatingIPController struct {
	r   *floatingIPReconciler
	reg *prometheus.Registry
}

func NewFloatingIPController(c client.Client, loaded map[string]pool.Model) *FloatingIPController {
	return NewFloatingIPControllerWithAPI(c, c, loaded)
}

// NameAddress is the address a FloatingIP name derives from, if any.
var NameAddress = nameAddress

// StatefulSetAnnotation and StatefulSetUIDAnnotation name the StatefulSet a FloatingIP's ordinal belongs to.
const StatefulSetAnnotation, StatefulSetUIDAnnotation = statefulSetAnnotation, statefulSetUIDAnnotation

// NewFloatingIPControllerWithAPI is NewFloatingIPController whose reads of the API server itself (not the
// cache) go through api.
func NewFloatingIPControllerWithAPI(c client.Client, api client.Reader, loaded map[string]pool.Model) *FloatingIPController {
	s := newState(time.Now)
	for name, m := range loaded {
		s.alloc.SetPool(name, m)
	}
	s.ready.Store(true)
	reg := prometheus.NewRegistry()
	return &FloatingIPController{&floatingIPReconciler{Client: c, api: api, state: s, metrics: NewMetrics(reg)}, reg}
}

// Reconcile reconciles the named FloatingIP once.
func (f *FloatingIPController) Reconcile(ctx context.Context, name string) error {
	_, err := f.r.Reconcile(ctx, ctrl.Request{NamespacedName: types.NamespacedName{Name: name}})
	return err
}

// Releases is the releases counter of a pool.
func (f *FloatingIPController) Releases(pool string) float64 {
	return max(gauge(f.reg, "braid_ipam_releases_total", pool), 0)
}

// PodsHolding counts the FloatingIPs that keep a deleted pool, as the pool controller does before it removes
// the pool's finalizer, with cache as its cached client and api as the API server.
func PodsHolding(ctx context.Context, cache client.Client, api client.Reader, pool string) (int, error) {
	r := &poolReconciler{Client: cache, api: api, state: newState(time.Now), metrics: NewMetrics(prometheus.NewRegistry())}
	return r.podsHolding(ctx, pool)
}

// SetClock makes the controller read the time from now.
func (f *FloatingIPController) SetClock(now func() time.Time) { f.r.state.now = now }

// SetMirrorGrace sets how long a static pod's FloatingIP waits for a new mirror.
func (f *FloatingIPController) SetMirrorGrace(d time.Duration) { f.r.mirrorGrace = d }

// MirrorWaits counts the FloatingIPs the controller remembers as waiting for a static pod's new mirror.
func (f *FloatingIPController) MirrorWaits() int {
	n := 0
	f.r.mirrorGone.Range(func(any, any) bool { n++; return true })
	return n
}

// StaticPodAnnotation marks the FloatingIP of a static pod, with the static pod's UID.
const StaticPodAnnotation = staticPodAnnotation

// RecountDelay and StatusInterval bound how often the pool controller recounts a pool and writes its status.
const (
	RecountDelay   = recountDelay
	StatusInterval = statusInterval
)
