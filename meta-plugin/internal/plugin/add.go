package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/braid-cni/braid/crds/podid"
	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/meta-plugin/internal/cache"
	"github.com/braid-cni/braid/meta-plugin/internal/conf"
	"github.com/braid-cni/braid/meta-plugin/internal/netstatus"
	"github.com/braid-cni/braid/meta-plugin/internal/route"
)

// EventReason is the reason of the Event braid records on a pod whose networks could not be attached.
const EventReason = "BraidAddFailed"

// Add attaches the cluster network on CNI_IFNAME and then every extra network, in order, and returns the
// cluster network's result. Any failure removes what was attached, in reverse order.
func (p *Plugin) Add(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) (types.Result, error) {
	sw := newStopwatch()
	defer sw.log(log)
	e, err := p.newEnv(c, args, log)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, c); err != nil {
		return nil, err
	}
	sw.lap("ready")
	kube, err := p.kube(e)
	if err != nil {
		return nil, err
	}
	var pod *corev1.Pod
	if kube != nil && e.k8s.IsPod() {
		if pod, err = getPod(ctx, kube, e.k8s, c.PodLookupTimeout); err != nil {
			return nil, err
		}
	}
	sw.lap("pod")
	atts, err := p.plan(ctx, e, kube, pod)
	if err != nil {
		return nil, p.failed(ctx, e, kube, pod, err)
	}
	rec := &cache.Record{ContainerID: args.ContainerID, NetNS: args.Netns, CNIArgs: args.Args,
		PodNamespace: e.k8s.PodNamespace, PodName: e.k8s.PodName, PodUID: e.k8s.PodUID}
	for _, a := range atts {
		rec.Attachments = append(rec.Attachments, a.Attachment)
	}
	// The record is written before anything runs, so that a DEL after a crash half-way knows every attachment.
	sw.lap("plan")
	if err := e.rec.Save(rec); err != nil {
		p.removeDeviceInfo(e, atts) // copied by plan; nothing ran
		return nil, p.failed(ctx, e, kube, pod, err)
	}
	sw.lap("record")

	results := make([]*types100.Result, len(atts))
	for i, a := range atts {
		res, err := e.cni.AddNetworkList(ctx, a.list, a.rt(e))
		if err == nil {
			results[i], err = types100.NewResultFromResult(res)
		}
		if err != nil {
			err = fmt.Errorf("attach %s (%s) as %s: %w%s", a.Network, a.field, a.IfName, err, addressless(a.list.CNIVersion, err))
			p.removeDeviceInfo(e, atts[i+1:]) // copied by plan for networks that never ran
			return nil, p.failed(ctx, e, kube, pod, p.rollback(ctx, e, rec, atts[:i+1], err))
		}
		sw.lap(a.IfName)
	}

	holder, err := p.moveDefaultRoute(e, atts, results)
	if err != nil {
		return nil, p.failed(ctx, e, kube, pod, p.rollback(ctx, e, rec, atts, err))
	}
	sw.lap("route")
	res, err := results[0].GetAsVersion(c.CNIVersion)
	if err != nil {
		return nil, p.failed(ctx, e, kube, pod, p.rollback(ctx, e, rec, atts, fmt.Errorf("cluster network result as %s: %w", c.CNIVersion, err)))
	}
	// The status goes last: once it is handed to a StatusWriter, nothing may fail any more.
	if kube != nil && pod != nil {
		if err := p.writeStatus(ctx, e, kube, pod, atts, results, holder); err != nil {
			return nil, p.failed(ctx, e, kube, pod, p.rollback(ctx, e, rec, atts, err))
		}
	}
	sw.lap("status")
	log.Info("attached all networks", "pod", e.k8s.PodNamespace+"/"+e.k8s.PodName, "count", len(atts))
	return res, nil
}

// waitReady waits, for a bounded time, for the readiness indicator file of the cluster network.
func waitReady(ctx context.Context, c *conf.Conf) error {
	if c.ReadinessIndicatorFile == "" {
		return nil
	}
	exists := func(context.Context) (bool, error) {
		_, err := os.Stat(c.ReadinessIndicatorFile)
		return err == nil, nil
	}
	if err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, c.ReadinessTimeout, true, exists); err != nil {
		return fmt.Errorf("cluster network not ready: readiness indicator file %s missing after %s: %w",
			c.ReadinessIndicatorFile, c.ReadinessTimeout, errTryAgain)
	}
	return nil
}

// getPod reads the pod, retrying with backoff for a bounded time while it is not visible yet or still the old
// incarnation (a different UID than the runtime's): creating a sandbox can race with the API server's view.
func getPod(ctx context.Context, kube Kube, k8s conf.K8sArgs, timeout time.Duration) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, max(timeout, apiTimeout))
	defer cancel()
	backoff := wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1, Cap: 2 * time.Second}
	if timeout > 0 {
		backoff.Steps = 20 // bounded by timeout through the context's deadline long before
	}
	deadline := time.Now().Add(timeout)
	var pod *corev1.Pod
	var last error
	attempt := 0
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		// The first read may come from the API server's cache; after a miss, ask etcd at once and from then on.
		p, err := kube.GetPod(ctx, k8s.PodNamespace, k8s.PodName, attempt > 0)
		if attempt == 0 && (apierrors.IsNotFound(err) || err == nil && !podid.Is(string(p.UID), p.Annotations, k8s.PodUID)) {
			p, err = kube.GetPod(ctx, k8s.PodNamespace, k8s.PodName, true)
		}
		attempt++
		switch {
		case err == nil && podid.Is(string(p.UID), p.Annotations, k8s.PodUID): // a static pod's mirror too
			pod = p
			return true, nil
		case err == nil:
			last = fmt.Errorf("pod %s/%s has UID %s, the runtime asked for %s", k8s.PodNamespace, k8s.PodName, p.UID, k8s.PodUID)
		case apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err):
			return false, err
		default:
			last = err
		}
		return !time.Now().Before(deadline), nil
	})
	if pod != nil {
		return pod, nil
	}
	if err == nil || wait.Interrupted(err) {
		err = last
	}
	return nil, fmt.Errorf("pod lookup (%s): %w: %w", timeout, err, errTryAgain)
}

// rollback removes the given attachments (those whose ADD ran, the first of rec's) in reverse order, the
// failed one included (a plugin may have done part of its work). It returns cause, with what the rollback could
// not undo added to the message.
func (p *Plugin) rollback(ctx context.Context, e *env, rec *cache.Record, atts []*attachment, cause error) error {
	// The rollback gets its own time even when the ADD ran out of it: leaving half a pod is worse.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	var failed []string
	for i := len(atts) - 1; i >= 0; i-- {
		a := atts[i]
		if err := e.cni.DelNetworkList(ctx, a.list, a.rt(e)); err != nil {
			failed = append(failed, fmt.Sprintf("%s on %s: %v", a.Network, a.IfName, err))
		}
	}
	p.removeDeviceInfo(e, atts)
	if len(failed) == 0 {
		if err := e.rec.Delete(e.args.ContainerID); err != nil {
			failed = append(failed, err.Error())
		}
	} else if len(atts) < len(rec.Attachments) {
		// The record keeps what DEL must retry: only the networks whose ADD ran. A DEL of one that never ran
		// may fail every time (host-device without its device) and would keep the pod from ever going.
		shrunk := *rec
		shrunk.Attachments = rec.Attachments[:len(atts)]
		if err := e.rec.Save(&shrunk); err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w; rollback incomplete (DEL will retry): %s", cause, strings.Join(failed, "; "))
	}
	return fmt.Errorf("%w; rolled back %d attachment(s)", cause, len(atts))
}

func (p *Plugin) removeDeviceInfo(e *env, atts []*attachment) {
	for _, a := range atts {
		if a != nil && a.DeviceInfoFile != "" {
			if err := e.dev.Remove(a.DeviceInfoFile); err != nil {
				e.log.Warn("device-info file not removed", "err", err)
			}
		}
	}
}

// failed records an Event on the pod for a failed ADD and returns err. The Event is best effort: the error
// itself reaches the kubelet anyway.
func (p *Plugin) failed(ctx context.Context, e *env, kube Kube, pod *corev1.Pod, err error) error {
	if kube == nil || pod == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	msg := toCNI("ADD", err).Msg
	if evErr := kube.RecordEvent(ctx, pod, corev1.EventTypeWarning, EventReason, msg); evErr != nil {
		e.log.Warn("event not recorded", "err", evErr)
	}
	return err
}

// moveDefaultRoute applies a "default-route" request: the requested attachment gets the pod's default route
// (through the requested gateways, or its own IPAM's when the list is empty) and every other default route of
// those families goes. Results are edited to match. It returns the index of the attachment that holds the
// default route afterwards (the cluster network's, 0, when nothing was requested).
func (p *Plugin) moveDefaultRoute(e *env, atts []*attachment, results []*types100.Result) (int, error) {
	target := -1
	for i, a := range atts {
		if a.elem.HasDefaultRoute {
			target = i
		}
	}
	if target < 0 {
		return 0, nil
	}
	a := atts[target]
	gws := a.gateways()
	if len(gws) == 0 {
		if gws = route.Gateways(results[target]); len(gws) == 0 {
			return 0, fmt.Errorf("%s.default-route: the list is empty and %s returned no gateway; name the gateway in the list: %w", a.field, a.Network, errNetwork)
		}
	}
	if err := p.deps.SetDefaultRoute(e.args.Netns, a.IfName, gws); err != nil {
		if errors.Is(err, syscall.ENETUNREACH) && len(a.gateways()) > 0 {
			// The pod named a gateway that is not on the attachment's network: its mistake, not braid's.
			return 0, &selection.FieldError{Field: a.field + ".default-route", Reason: fmt.Sprintf("%v is not reachable "+
				"through %s, the interface of %s; name a gateway on that network (%v)", gws, a.IfName, a.Network, err)}
		}
		return 0, fmt.Errorf("%s.default-route: %w", a.field, err)
	}
	v4, v6 := route.Families(gws)
	for i, r := range results {
		if i != target {
			route.DropDefault(r, v4, v6)
		}
	}
	route.DropDefault(results[target], v4, v6)
	route.AddDefault(results[target], gws)
	return target, nil
}

// writeStatus writes the network-status annotation: one entry per attachment, the cluster network's marked
// default.
func (p *Plugin) writeStatus(ctx context.Context, e *env, kube Kube, pod *corev1.Pod, atts []*attachment,
	results []*types100.Result, holder int,
) error {
	sts := make([]netstatus.Status, len(atts))
	for i, a := range atts {
		in := netstatus.Input{Name: a.Network, IfName: a.IfName, Result: results[i], Default: a.Master, HoldsDefaultRoute: i == holder}
		if a.DeviceInfoFile != "" {
			di, err := e.dev.Load(a.DeviceInfoFile)
			if err != nil {
				return err
			}
			in.DeviceInfo = di
		}
		st, err := netstatus.Build(in)
		if err != nil {
			return err
		}
		sts[i] = st
	}
	v, err := netstatus.Encode(sts)
	if err != nil {
		return err
	}
	if p.deps.Status != nil {
		w := netstatus.Write{ContainerID: e.args.ContainerID, Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Value: v}
		if err := p.deps.Status.Write(ctx, w); err != nil {
			return fmt.Errorf("network-status: %w: %w", err, errTryAgain)
		}
		return nil
	}
	if err := kube.SetPodAnnotation(ctx, pod.Namespace, pod.Name, pod.UID, netstatus.Annotation, v); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("network-status: pod %s/%s is gone: %w", pod.Namespace, pod.Name, errors.Join(err, errTryAgain))
		}
		return fmt.Errorf("network-status: %w: %w", err, errTryAgain)
	}
	return nil
}

// stopwatch records how long each phase of a call took, for the debug log.
type stopwatch struct {
	last  time.Time
	start time.Time
	laps  []any
}

func newStopwatch() *stopwatch {
	now := time.Now()
	return &stopwatch{last: now, start: now}
}

func (s *stopwatch) lap(name string) {
	now := time.Now()
	s.laps = append(s.laps, name, now.Sub(s.last).Round(time.Microsecond))
	s.last = now
}

func (s *stopwatch) log(log *slog.Logger) {
	log.Debug("timings", append(s.laps, "total", time.Since(s.start).Round(time.Microsecond))...)
}

// addressless explains the usual failure of a network of CNI 0.1.0 or 0.2.0 without IPAM: a result of those
// versions must carry an IP address, so neither its plugin nor braid can write one without (libcni's
// conversion says "no valid IP addresses"). A NAD without "cniVersion", which Multus accepts, is 0.1.0.
func addressless(cniVersion string, err error) string {
	if modern, _ := version.GreaterThanOrEqualTo(cniVersion, "0.3.0"); modern || !strings.Contains(err.Error(), "no valid IP addresses") {
		return ""
	}
	return fmt.Sprintf(` (a CNI %s result must carry an IP address, and a config without "cniVersion" is 0.1.0: `+
		`set "cniVersion", e.g. "1.0.0", in the network's config)`, cniVersion)
}
