// Package server is braid-ipam-server: controller-runtime reconcilers around the pure allocator. Pods asking
// for braid-ipam networks get FloatingIPs once bound to a node; release follows the pool's policy; pool status
// stays true. Only the elected leader writes; the in-memory state is rebuilt from the API server before it serves.
package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/podnet"
)

// Cache indexes on FloatingIPs.
const (
	indexPod         = "spec.pod"
	indexPool        = "spec.pool"
	indexStatefulSet = "statefulset" // namespace/name of the StatefulSet that owned the pod
)

// floatingIPsOf lists the FloatingIPs of a pool that c (the cache) holds.
func floatingIPsOf(ctx context.Context, c client.Reader, pool string) ([]braidv1.FloatingIP, error) {
	list := &braidv1.FloatingIPList{}
	if err := c.List(ctx, list, client.MatchingFields{indexPool: pool}); err != nil {
		return nil, fmt.Errorf("list FloatingIPs of IPPool %s: %w", pool, err)
	}
	return list.Items, nil
}

// Options configure the server.
type Options struct {
	// LeaderElection makes replicas safe: only the leader reconciles.
	LeaderElection          bool
	LeaderElectionID        string
	LeaderElectionNamespace string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration
	// MetricsAddr serves /metrics ("0" disables); ProbeAddr serves /healthz and /readyz ("0" disables).
	MetricsAddr string
	ProbeAddr   string
	// Resync is how often every object is reconciled again, as a safety net for missed events.
	Resync time.Duration
	// Workers is the number of concurrent pod reconciles.
	Workers int
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Registry receives the metrics; nil means controller-runtime's registry, served on MetricsAddr.
	Registry prometheus.Registerer
	// InProcessReplica lets tests run several replicas in one process (controller names repeat).
	InProcessReplica bool
	// Defaults are braid's defaultNetworks and systemNamespaces, as the nodes' braid conf sets them.
	Defaults podnet.Defaults
	// MirrorGrace is how long the addresses of a static pod's deleted mirror wait for the kubelet's new
	// mirror of the same static pod, which takes them back, before they are released (0: DefaultMirrorGrace).
	MirrorGrace time.Duration
}

// DefaultMirrorGrace is MirrorGrace unless set: the kubelet makes a deleted mirror again at its next sync of
// the static pod, within a minute.
const DefaultMirrorGrace = 2 * time.Minute

// Scheme returns the types the server reads and writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, braidv1.AddToScheme, nadv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// New builds the manager with the server's controllers; Start it to run.
func New(cfg *rest.Config, opts Options) (manager.Manager, error) {
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Workers == 0 {
		opts.Workers = 8
	}
	if err := opts.Defaults.Validate(); err != nil {
		return nil, err
	}
	if opts.LeaderElectionID == "" {
		opts.LeaderElectionID = "braid-ipam-server"
	}
	resync := opts.Resync
	mgrOpts := ctrl.Options{
		Scheme:                        scheme,
		LeaderElection:                opts.LeaderElection,
		LeaderElectionID:              opts.LeaderElectionID,
		LeaderElectionNamespace:       opts.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Metrics:                       metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:        opts.ProbeAddr,
		// No managedFields in the caches: braid never reads them, and the pods' (one entry per writer) would
		// take memory for every pod of the cluster. A FloatingIP updated from the cache keeps its own: the API
		// server keeps an object's managedFields when an update leaves them out.
		Cache: cache.Options{SyncPeriod: &resync, DefaultTransform: cache.TransformStripManagedFields()},
		// client-go's workqueue, not controller-runtime's priority queue: in v0.24 that queue can deadlock on
		// shutdown (kubernetes-sigs/controller-runtime#3538, fixed in v0.25, which needs Kubernetes 0.37
		// libraries), and a stopping replica then hangs for the whole grace period; it did in CI.
		Controller: config.Controller{SkipNameValidation: &opts.InProcessReplica, UsePriorityQueue: ptr.To(false)},
	}
	if opts.Resync == 0 {
		mgrOpts.Cache.SyncPeriod = nil
	}
	if opts.LeaseDuration > 0 {
		mgrOpts.LeaseDuration, mgrOpts.RenewDeadline, mgrOpts.RetryPeriod = &opts.LeaseDuration, &opts.RenewDeadline, &opts.RetryPeriod
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS = -1 // no client-side throttling: the API server's priority and fairness protects it
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	s := newState(opts.Now)
	if opts.Registry == nil {
		opts.Registry = metrics.Registry
	}
	m := NewMetrics(opts.Registry)
	if opts.MirrorGrace == 0 {
		opts.MirrorGrace = DefaultMirrorGrace
	}
	if err := setup(mgr, s, m, opts); err != nil {
		return nil, err
	}
	return mgr, nil
}

func setup(mgr manager.Manager, s *state, m *Metrics, opts Options) error {
	workers, defaults := opts.Workers, opts.Defaults
	ctx := context.Background()
	idx := mgr.GetFieldIndexer()
	for name, fn := range map[string]func(*braidv1.FloatingIP) string{
		indexPod:  func(f *braidv1.FloatingIP) string { return f.Spec.Pod },
		indexPool: func(f *braidv1.FloatingIP) string { return f.Spec.Pool },
		indexStatefulSet: func(f *braidv1.FloatingIP) string {
			if set := f.Annotations[statefulSetAnnotation]; set != "" {
				if ns, _, ok := splitKey(f.Spec.Pod); ok {
					return ns + "/" + set
				}
			}
			return ""
		},
	} {
		if err := idx.IndexField(ctx, &braidv1.FloatingIP{}, name, func(o client.Object) []string {
			if v := fn(o.(*braidv1.FloatingIP)); v != "" {
				return []string{v}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("index FloatingIPs by %s: %w", name, err)
		}
	}

	// Every replica keeps the allocator in step with the FloatingIPs it sees, so a new leader starts warm.
	inf, err := mgr.GetCache().GetInformer(ctx, &braidv1.FloatingIP{})
	if err != nil {
		return fmt.Errorf("FloatingIP informer: %w", err)
	}
	if _, err := inf.AddEventHandler(s.informerHandler()); err != nil {
		return fmt.Errorf("FloatingIP handler: %w", err)
	}

	// The leader rebuilds from the API server before any reconciler serves (they wait on s.ready).
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return fmt.Errorf("cache did not sync")
		}
		if err := loadAll(ctx, mgr.GetClient(), s); err != nil {
			return err
		}
		s.ready.Store(true)
		ctrl.Log.WithName("braid-ipam-server").Info("state rebuilt from the API server; serving")
		<-ctx.Done()
		return nil
	})); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", func(*http.Request) error { return nil }); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("rebuilt", func(*http.Request) error {
		select {
		case <-mgr.Elected():
			if !s.ready.Load() {
				return fmt.Errorf("leader is rebuilding its state from the API server")
			}
		default: // a standby is ready once its cache has synced
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if !mgr.GetCache().WaitForCacheSync(ctx) {
				return fmt.Errorf("cache not synced")
			}
		}
		return nil
	}); err != nil {
		return err
	}

	c := mgr.GetClient()
	fipToPod := handler.EnqueueRequestsFromMapFunc(noRequestsOnPanic("floatingip-to-pod", func(_ context.Context, o client.Object) []reconcile.Request {
		f, ok := o.(*braidv1.FloatingIP)
		if !ok {
			return nil
		}
		ns, name, ok := splitKey(f.Spec.Pod)
		if !ok {
			return nil
		}
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: ns, Name: name}}}
	}))
	wantsNetworks := predicate.NewPredicateFuncs(passOnPanic("pod filter", func(o client.Object) bool {
		return o.GetAnnotations()[podnet.NetworksAnnotation] != "" || defaults.Apply(o.GetNamespace())
	}))
	pods := &podReconciler{Client: c, api: mgr.GetAPIReader(), state: s, events: mgr.GetEventRecorder("braid-ipam-server"), metrics: m, defaults: defaults}
	podUpdate := passOnPanic("pod update filter", func(e event.UpdateEvent) bool {
		return pods.assignmentEdited(e) || podChangeMatters(e) // both, in this order: the first notes echoes
	})
	if err := ctrl.NewControllerManagedBy(mgr).Named("pods").
		For(&corev1.Pod{}, builder.WithPredicates(wantsNetworks, predicate.Funcs{UpdateFunc: podUpdate})).
		Watches(&braidv1.FloatingIP{}, fipToPod, builder.WithPredicates(predicate.Funcs{
			// Our own creates need no second look; an admin's reservation for a pod name (no pod UID yet)
			// goes to that pod, if it runs.
			CreateFunc: passOnPanic("floatingip create filter", func(e event.CreateEvent) bool {
				f, ok := e.Object.(*braidv1.FloatingIP)
				return ok && f.Spec.Pod != "" && f.Spec.PodUID == ""
			}),
		})).
		WatchesRawSource(source.Channel(s.holderGone, &handler.EnqueueRequestForObject{})).
		WatchesRawSource(source.Channel(s.poolLoaded, handler.EnqueueRequestsFromMapFunc(noRequestsOnPanic("pool-to-pods",
			func(ctx context.Context, o client.Object) []reconcile.Request {
				return podsNamingPool(ctx, c, o.GetName(), defaults)
			})))).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(pods); err != nil {
		return err
	}

	podToFIPs := handler.EnqueueRequestsFromMapFunc(noRequestsOnPanic("pod-to-floatingips", func(ctx context.Context, o client.Object) []reconcile.Request {
		return fipRequests(ctx, c, client.MatchingFields{indexPod: o.GetNamespace() + "/" + o.GetName()})
	}))
	setToFIPs := handler.EnqueueRequestsFromMapFunc(noRequestsOnPanic("statefulset-to-floatingips", func(ctx context.Context, o client.Object) []reconcile.Request {
		return fipRequests(ctx, c, client.MatchingFields{indexStatefulSet: o.GetNamespace() + "/" + o.GetName()})
	}))
	if err := ctrl.NewControllerManagedBy(mgr).Named("floatingips").
		For(&braidv1.FloatingIP{}).
		Watches(&corev1.Pod{}, podToFIPs, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(event.CreateEvent) bool { return false },
			UpdateFunc: passOnPanic("pod finish filter", podFinishes), // a Job's pod completing frees its addresses
		})).
		Watches(&appsv1.StatefulSet{}, setToFIPs).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(&floatingIPReconciler{Client: c, api: mgr.GetAPIReader(), state: s, metrics: m, mirrorGrace: opts.MirrorGrace}); err != nil {
		return err
	}

	return ctrl.NewControllerManagedBy(mgr).Named("ippools").
		For(&braidv1.IPPool{}).
		// A pool's spec or existence decides whether the younger pools it overlaps may serve.
		Watches(&braidv1.IPPool{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, _ client.Object) []reconcile.Request {
			return poolRequests(ctx, c)
		}), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WatchesRawSource(source.Channel(s.poolChanged, recountLater)).
		Complete(&poolReconciler{Client: c, api: mgr.GetAPIReader(), state: s, metrics: m})
}

func observeObj(s *state, o any) {
	if f, ok := o.(*braidv1.FloatingIP); ok {
		s.observe(f)
	}
}

func poolRequests(ctx context.Context, c client.Reader) []reconcile.Request {
	list := &braidv1.IPPoolList{}
	if err := c.List(ctx, list); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: p.Name}})
	}
	return out
}

func fipRequests(ctx context.Context, c client.Reader, sel client.MatchingFields) []reconcile.Request {
	list := &braidv1.FloatingIPList{}
	if err := c.List(ctx, list, sel); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for _, f := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: f.Name}})
	}
	return out
}
