package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/crds/podid"
	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/podnet"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// Event reasons on pods; the same strings label the failures metric.
const (
	ReasonPoolExhausted        = "PoolExhausted"
	ReasonNoEligiblePool       = "NoEligiblePool"
	ReasonAddressTaken         = "RequestedAddressTaken"
	ReasonAddressOutsidePool   = "RequestedAddressOutsidePool"
	ReasonPrefixMismatch       = "RequestedPrefixLengthMismatch"
	ReasonInvalidNetworks      = "InvalidNetworks"
	ReasonInvalidNetworkConfig = "InvalidNetworkConfig"
	// ReasonPoolNotFound warns that a network names a pool that does not exist: the pod is served from the
	// others, and from that one when it is created. Not a failure: not counted in the failures metric.
	ReasonPoolNotFound = "IPPoolNotFound"
)

// statefulSetAnnotation on a FloatingIP names the StatefulSet that owned its pod, so the ordinal can be kept
// after the pod is gone.
const statefulSetAnnotation = "braid.dev/statefulset"

// statefulSetUIDAnnotation records that StatefulSet's UID: a StatefulSet deleted and made again under the same
// name (while the server was down, so that the deletion was never seen) is another StatefulSet, and does not
// inherit the first one's reservations.
const statefulSetUIDAnnotation = "braid.dev/statefulset-uid"

// staticPodAnnotation on a FloatingIP records the UID of the static pod whose mirror it was made for. A static
// pod keeps running, with its addresses, when its mirror is deleted (kubectl delete pod does not stop it), and
// the kubelet makes a new mirror, of another UID, which takes the FloatingIP back.
const staticPodAnnotation = "braid.dev/static-pod"

// sameStaticPod: the FloatingIP was made for a mirror of the static pod that pod (another mirror) mirrors.
func sameStaticPod(f *braidv1.FloatingIP, pod *corev1.Pod) bool {
	static := f.Annotations[staticPodAnnotation]
	return static != "" && static == pod.Annotations[podid.MirrorAnnotation]
}

// retryFailed is how soon a pod whose allocation failed is tried again (the allocator answers from memory).
const retryFailed = time.Second

// failure is an allocation failure the pod's owner must see: an Event, the annotation, the metric.
type failure struct {
	reason, msg string
}

func (f *failure) Error() string { return f.msg }

// podReconciler serves pods that ask for braid-ipam networks once they are bound to a node.
type podReconciler struct {
	client.Client
	api     client.Reader // the API server itself, uncached
	state   *state
	events  events.EventRecorder
	metrics *Metrics
	// defaults are the networks braid attaches to every pod outside system namespaces.
	defaults podnet.Defaults

	// assigned is, by pod namespace/name, the assignment this process last wrote on the pod (an ownWrite).
	assigned sync.Map
	// seen is, by pod namespace/name, when this process first saw the pod bound to a node and not yet served,
	// for the latency metric (creationTimestamp has whole seconds only).
	seen sync.Map
	// warned is, by pod namespace/name, the last warning of each kind given to the pod (map kind -> written).
	warned sync.Map
}

// firstSeen is when a pod (of this UID) was first seen bound and waiting for addresses.
type firstSeen struct {
	uid types.UID
	at  time.Time
}

// written is a value this process last gave a pod (a warning's message).
type written struct {
	uid   types.UID
	value string
}

// ownWrite is the assignment this process last wrote on a pod, and whether the pod cache has shown it since
// (its echo). Until the echo, a different value in the cache is the stale one the write replaced, and is left
// alone; after it, a different value is someone else's edit, which the pod's next reconcile puts right.
type ownWrite struct {
	uid    types.UID
	value  string
	echoed bool
}

func (r *podReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if !r.state.ready.Load() {
		return ctrl.Result{RequeueAfter: 200 * time.Millisecond}, nil
	}
	pod := &corev1.Pod{}
	if err := r.Get(ctx, req.NamespacedName, pod); err != nil {
		// A deleted pod's addresses are released by the FloatingIP controller, by policy.
		if apierrors.IsNotFound(err) {
			r.assigned.Delete(req.String())
			r.seen.Delete(req.String())
			r.warned.Delete(req.String())
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !servable(pod) {
		if usesNoAddress(pod) {
			// The FloatingIP controller withdrew its addresses before releasing them; a reconcile that began
			// before the pod finished may have published them again since.
			return ctrl.Result{}, withdraw(ctx, r.Client, pod)
		}
		return ctrl.Result{}, nil
	}
	if v, ok := r.seen.Load(req.String()); !ok || v.(firstSeen).uid != pod.UID {
		r.seen.Store(req.String(), firstSeen{uid: pod.UID, at: time.Now()})
	}
	sels, err := podnet.ParseSelections(pod.Annotations[podnet.NetworksAnnotation], pod.Namespace, r.defaults.For(pod.Namespace))
	if err != nil {
		// The pod's own input is wrong: say so on the pod, once (nothing is written to its annotation to
		// remember it by); retrying cannot help until it changes.
		if r.warnOnce(pod, "networks", ReasonInvalidNetworks, err.Error()) {
			r.metrics.Failures.WithLabelValues(ReasonInvalidNetworks).Inc()
		}
		return ctrl.Result{}, nil //nolint:nilerr // reported as an Event, not retried
	}

	result := assignment.Assignments{PodUID: string(pod.UID), Interfaces: map[string]assignment.Interface{}}
	held, err := r.heldBy(ctx, pod)
	if err != nil {
		return ctrl.Result{}, err // without them a second address could be allocated for an interface
	}
	retry := false
	for _, sel := range sels {
		conf, uses, err := r.braidIPAM(ctx, sel)
		var bad *failure
		if errors.As(err, &bad) {
			if kept, ok := r.keepServed(pod, sel, held[sel.Interface], bad); ok {
				result.Interfaces[sel.Interface] = kept
				continue
			}
			result.Interfaces[sel.Interface] = assignment.Interface{Network: sel.Key(), Error: bad.msg}
			r.fail(pod, bad, pod.Annotations[assignment.Annotation])
			retry = true // until the NAD is fixed
			continue
		}
		if apierrors.IsNotFound(err) {
			// The NAD may be newer than our cache, or not created yet; the meta-plugin reports a missing one.
			retry = true
			continue
		}
		if err != nil {
			return ctrl.Result{}, err
		}
		if !uses {
			continue
		}
		iface, err := r.serve(ctx, pod, sel, conf, held[sel.Interface])
		var f *failure
		switch {
		case errors.As(err, &f):
			iface.Error = f.msg
			r.fail(pod, f, pod.Annotations[assignment.Annotation])
			retry = true
		case errors.Is(err, errPoolLoading), errors.Is(err, errSettling):
			return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
		case err != nil:
			return ctrl.Result{}, err
		}
		iface.Network = sel.Key()
		result.Interfaces[sel.Interface] = iface
	}
	if len(result.Interfaces) == 0 {
		r.seen.Delete(req.String()) // nothing to record: not a braid-ipam pod, or not yet
		if retry {
			return ctrl.Result{RequeueAfter: retryFailed}, nil
		}
		return ctrl.Result{}, nil
	}
	if err := r.publish(ctx, pod, result); err != nil {
		return ctrl.Result{}, err
	}
	if retry {
		return ctrl.Result{RequeueAfter: retryFailed}, nil
	}
	return ctrl.Result{}, nil
}

// keepServed: when the network's NAD has become one the server refuses, an interface that was served and
// still holds its addresses keeps them, described as before (its node reads them again for CHECK and for a new
// sandbox), and the pod is told once; only the interfaces that come after it fail. Retrying cannot help it.
func (r *podReconciler) keepServed(pod *corev1.Pod, sel podnet.Selection, held []braidv1.FloatingIP, bad *failure) (assignment.Interface, bool) {
	was := previous(pod, sel.Interface)
	if len(held) == 0 || len(was.Addresses) == 0 || was.Error != "" || was.Network != sel.Key() {
		return assignment.Interface{}, false
	}
	if r.warnOnce(pod, "nad/"+sel.Interface, bad.reason, bad.msg+"; interface "+sel.Interface+" keeps the addresses it holds") {
		r.metrics.Failures.WithLabelValues(bad.reason).Inc()
	}
	return was, true
}

// servable: the pod is bound to a node, has a network namespace of its own, and is neither going away nor
// finished, so its addresses are due. A pod on the host's network never gets them: the kubelet runs no CNI for
// it, so no meta-plugin attaches the networks it names (Multus ignores them too), and addresses held for it
// would be lost to the pool until it went.
func servable(pod *corev1.Pod) bool {
	return pod.Spec.NodeName != "" && pod.DeletionTimestamp == nil && !usesNoAddress(pod)
}

// usesNoAddress: no sandbox of the pod has, or will have, its addresses: it finished, or it is on the host's
// network. What it holds goes back by policy, and its assignment stops naming it (withdraw).
func usesNoAddress(pod *corev1.Pod) bool {
	return finished(pod) || pod.Spec.HostNetwork
}

// finished: the pod ran to completion or failed for good (a Job's pod, an evicted pod). Its sandbox is torn
// down, so its addresses are free to go by policy although the object stays (Jobs keep their history).
func finished(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// braidIPAM resolves a selection's NAD and reports whether it uses braid-ipam; a NAD whose braid-ipam
// section is broken fails the interface.
func (r *podReconciler) braidIPAM(ctx context.Context, sel podnet.Selection) (podnet.IPAMConf, bool, error) {
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: sel.Namespace, Name: sel.Name}, nad); err != nil {
		return podnet.IPAMConf{}, false, err
	}
	conf, uses, err := podnet.BraidIPAM(nad.Spec.Config)
	if err != nil {
		return conf, uses, &failure{ReasonInvalidNetworkConfig, fmt.Sprintf("NetworkAttachmentDefinition %s: %v", sel.Key(), err)}
	}
	return conf, uses, nil
}

// heldBy returns the pod's FloatingIPs (cached, plus those just created here) by interface, excluding
// released ones and those of a previous pod of the same name that are due for release.
func (r *podReconciler) heldBy(ctx context.Context, pod *corev1.Pod) (map[string][]braidv1.FloatingIP, error) {
	key := pod.Namespace + "/" + pod.Name
	list := &braidv1.FloatingIPList{}
	if err := r.List(ctx, list, client.MatchingFields{indexPod: key}); err != nil {
		return nil, fmt.Errorf("list FloatingIPs of pod %s: %w", key, err)
	}
	seen := map[string]bool{}
	out := map[string][]braidv1.FloatingIP{}
	for _, f := range append(list.Items, r.state.pendingFor(key)...) {
		if seen[f.Name] || f.Status.Phase == braidv1.FloatingIPReleased {
			continue
		}
		seen[f.Name] = true
		stale := f.Spec.PodUID != "" && f.Spec.PodUID != string(pod.UID)
		if stale && effectivePolicy(&f) == braidv1.ReleaseOnPodDeletion && !sameStaticPod(&f, pod) {
			continue // the FloatingIP controller releases it
		}
		out[f.Spec.Interface] = append(out[f.Spec.Interface], f)
	}
	return out, nil
}

// candidate is an eligible pool for an interface.
type candidate struct {
	name  string
	model pool.Model
}

// serve makes sure one interface holds an address of every family its network's pools offer (or exactly the
// static addresses it asked for), and describes them.
func (r *podReconciler) serve(ctx context.Context, pod *corev1.Pod, sel podnet.Selection, conf podnet.IPAMConf,
	held []braidv1.FloatingIP) (assignment.Interface, error) {
	if len(conf.Pools) == 0 {
		return assignment.Interface{}, &failure{ReasonInvalidNetworkConfig,
			fmt.Sprintf("network %s: ipam.pools must name at least one IPPool", sel.Key())}
	}
	choice, err := r.eligiblePools(ctx, pod, conf.Pools)
	// With no pool to allocate from, the addresses the pod holds are still its own (a pool refused or
	// re-selected since does not take them away); only what it lacks fails.
	var noPool *failure
	if errors.As(err, &noPool) && noPool.reason == ReasonNoEligiblePool {
		err = nil
	}
	if err != nil {
		return assignment.Interface{}, err
	}
	eligible := choice.eligible
	prev := func() assignment.Interface { return previous(pod, sel.Interface) }
	if len(choice.missing) > 0 {
		r.warnMissing(pod, sel, choice.missing)
	}

	got, err := r.keepHeld(ctx, pod, sel, held, eligible)
	if err != nil {
		return assignment.Interface{}, err
	}
	covered := map[bool]bool{} // is4 -> has an address
	for _, f := range got {
		addr, _ := netip.ParseAddr(f.Spec.IP)
		covered[addr.Is4()] = true
	}
	shown := r.withPoolsOf(got, eligible) // eligible pools, and the pools of kept addresses, to describe them
	if noPool != nil {
		if len(got) == 0 || !holdsAll(got, sel.IPs) {
			return describe(got, shown, prev), noPool
		}
		return describe(got, shown, prev), nil
	}

	if len(sel.IPs) > 0 {
		for _, addr := range sel.IPs {
			if holding(got, addr) {
				continue
			}
			f, err := r.claim(ctx, pod, sel, eligible, addr)
			if err != nil {
				return describe(got, shown, prev), err
			}
			got = append(got, *f)
		}
		return describe(got, shown, prev), nil
	}

	for _, is4 := range choice.families {
		if covered[is4] {
			continue
		}
		f, err := r.reclaim(ctx, pod, sel, prev(), is4)
		if f == nil && err == nil {
			f, err = r.allocate(ctx, pod, sel, eligible, is4, choice.why)
		}
		if err != nil {
			return describe(got, shown, prev), err
		}
		got = append(got, *f)
	}
	return describe(got, shown, prev), nil
}

// poolChoice is what the pools a network names offer a pod.
type poolChoice struct {
	eligible []candidate // the named pools that exist, are valid, and match the pod's node and namespace, in order
	families []bool      // the families (is IPv4) the named pools offer, IPv4 first if named first
	why      []string    // why named pools were skipped
	missing  []string    // named pools that do not exist (yet)
}

// errPoolLoading: a named pool exists and is valid but the allocator has not loaded it yet (it was created a
// moment ago). The pod waits for it rather than be served without its family.
var errPoolLoading = errors.New("a named IPPool is being loaded")

// eligiblePools sorts the pools a network names for a pod.
func (r *podReconciler) eligiblePools(ctx context.Context, pod *corev1.Pod, names []string) (poolChoice, error) {
	var c poolChoice
	for _, name := range names {
		ipp := &braidv1.IPPool{}
		if err := r.Get(ctx, types.NamespacedName{Name: name}, ipp); err != nil {
			if apierrors.IsNotFound(err) {
				c.why = append(c.why, fmt.Sprintf("IPPool %s not found", name))
				c.missing = append(c.missing, name)
				continue
			}
			return c, err
		}
		if ipp.DeletionTimestamp != nil {
			c.why = append(c.why, fmt.Sprintf("IPPool %s is being deleted", name))
			continue
		}
		m, ok := r.state.serving(name)
		if !ok {
			pm, err := r.state.parse(ipp)
			if err != nil {
				c.why = append(c.why, fmt.Sprintf("IPPool %s is not valid (see its conditions)", name))
				continue
			}
			older, _, found, err := r.state.olderOverlap(ctx, r.Client, ipp, &pm)
			switch {
			case err != nil:
				return c, err
			case found:
				c.why = append(c.why, fmt.Sprintf("IPPool %s is not valid: it shares addresses with IPPool %s (see its conditions)", name, older))
			default:
				return c, fmt.Errorf("IPPool %s: %w", name, errPoolLoading)
			}
			continue
		}
		if is4 := m.Prefix.Addr().Is4(); !slices.Contains(c.families, is4) {
			c.families = append(c.families, is4)
		}
		match, reason, err := r.matches(ctx, pod, ipp)
		if err != nil {
			return c, err
		}
		if !match {
			c.why = append(c.why, fmt.Sprintf("IPPool %s: %s", name, reason))
			continue
		}
		c.eligible = append(c.eligible, candidate{name: name, model: m})
	}
	if len(c.families) == 0 {
		return c, &failure{ReasonNoEligiblePool, "no eligible pool: " + strings.Join(c.why, "; ")}
	}
	return c, nil
}

// matches checks a pool's node and namespace selectors against the pod's node and namespace.
func (r *podReconciler) matches(ctx context.Context, pod *corev1.Pod, ipp *braidv1.IPPool) (bool, string, error) {
	if sel := ipp.Spec.NodeSelector; sel != nil {
		node := &corev1.Node{}
		if err := r.Get(ctx, types.NamespacedName{Name: pod.Spec.NodeName}, node); err != nil {
			if apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("node %s not found for nodeSelector", pod.Spec.NodeName), nil
			}
			return false, "", err
		}
		if reason := selects("nodeSelector", sel, node.Labels); reason != "" {
			return false, reason + " node " + pod.Spec.NodeName, nil
		}
	}
	if sel := ipp.Spec.NamespaceSelector; sel != nil {
		ns := &corev1.Namespace{}
		if err := r.Get(ctx, types.NamespacedName{Name: pod.Namespace}, ns); err != nil {
			if apierrors.IsNotFound(err) {
				return false, fmt.Sprintf("namespace %s not found for namespaceSelector", pod.Namespace), nil
			}
			return false, "", err
		}
		if reason := selects("namespaceSelector", sel, ns.Labels); reason != "" {
			return false, reason + " namespace " + pod.Namespace, nil
		}
	}
	return true, "", nil
}

// selects returns "" when sel matches the labels, else why not.
func selects(field string, sel *metav1.LabelSelector, set map[string]string) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	switch {
	case err != nil:
		return fmt.Sprintf("%s is invalid (%v) for", field, err)
	case !s.Matches(labels.Set(set)):
		return field + " does not match"
	}
	return ""
}

// patchAssignment writes the pod's assignment annotation. The patch names the one annotation (no diff of the
// whole pod: client.MergeFrom encodes it twice), and the pod's UID, which the API server refuses to change: a
// pod recreated under the same name meanwhile is not given this one's addresses.
func patchAssignment(ctx context.Context, c client.Client, pod *corev1.Pod, value string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid": pod.UID, "annotations": map[string]string{assignment.Annotation: value}}})
	if err != nil {
		return err
	}
	return c.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch))
}

// publish writes the assignment annotation on the pod when it changed.
func (r *podReconciler) publish(ctx context.Context, pod *corev1.Pod, a assignment.Assignments) error {
	value := a.Encode()
	key := pod.Namespace + "/" + pod.Name
	last, _ := r.assigned.Load(key)
	mine := ownWrite{uid: pod.UID, value: value}
	if pod.Annotations[assignment.Annotation] == value || last == mine {
		r.seen.Delete(key) // recorded already (by another process before this one, or by this one: no echo yet)
		return nil
	}
	r.assigned.Store(key, mine) // before the patch: its echo can reach the cache before its answer reaches us
	if err := patchAssignment(ctx, r.Client, pod, value); err != nil {
		r.assigned.CompareAndDelete(key, mine)
		return fmt.Errorf("record addresses on pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	complete := true
	for _, iface := range a.Interfaces {
		complete = complete && iface.Error == ""
	}
	if first, ok := r.seen.Load(key); ok && complete && first.(firstSeen).uid == pod.UID {
		r.seen.Delete(key)
		r.metrics.Latency.Observe(time.Since(first.(firstSeen).at).Seconds())
	}
	return nil
}

// fail reports a failure on the pod, once per distinct message (a waiting pod is retried every second).
func (r *podReconciler) fail(pod *corev1.Pod, f *failure, current string) {
	if strings.Contains(current, jsonQuote(f.msg)) {
		return // the annotation says so already: one Event and one count per distinct failure
	}
	r.metrics.Failures.WithLabelValues(f.reason).Inc()
	r.events.Eventf(pod, nil, corev1.EventTypeWarning, f.reason, "AllocateAddress", "%s", f.msg)
}

func jsonQuote(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		return s
	}
	return string(b)
}

// warnMissing tells the pod, once per distinct message, that its network names pools that do not exist.
func (r *podReconciler) warnMissing(pod *corev1.Pod, sel podnet.Selection, missing []string) {
	noun := "IPPool " + missing[0] + " not found"
	if len(missing) > 1 {
		noun = "IPPools " + strings.Join(missing, ", ") + " not found"
	}
	msg := fmt.Sprintf("network %s: %s; the interface is served from the other pools it names, and from the "+
		"missing ones when they are created (an interface already set up keeps the addresses it has)", sel.Key(), noun)
	r.warnOnce(pod, "missing", ReasonPoolNotFound, msg)
}

// warnOnce gives the pod a warning Event, unless the last warning of that kind given to this pod said the same;
// it reports whether it did. Reconciles of one pod do not run at once, so the copy-on-write of its warnings
// needs no lock.
func (r *podReconciler) warnOnce(pod *corev1.Pod, kind, reason, msg string) bool {
	key := pod.Namespace + "/" + pod.Name
	var warnings map[string]written
	if v, ok := r.warned.Load(key); ok {
		warnings = v.(map[string]written)
	}
	if warnings[kind] == (written{pod.UID, msg}) {
		return false
	}
	next := maps.Clone(warnings)
	if next == nil {
		next = map[string]written{}
	}
	next[kind] = written{pod.UID, msg}
	r.warned.Store(key, next)
	r.events.Eventf(pod, nil, corev1.EventTypeWarning, reason, "AllocateAddress", "%s", msg)
	return true
}
