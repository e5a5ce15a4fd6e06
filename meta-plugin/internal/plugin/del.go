package plugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"

	"github.com/braid-cni/braid/meta-plugin/internal/cache"
	"github.com/braid-cni/braid/meta-plugin/internal/conf"
)

// Del removes every attachment of the container, in reverse order, even when some fail, and returns all
// failures together. It works from braid's record; without one it rebuilds the list from the pod and its NADs,
// merged with libcni's result cache; with neither it still removes the cluster network. A second DEL finds
// nothing left to do and succeeds.
func (p *Plugin) Del(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) error {
	e, err := p.newEnv(c, args, log)
	if err != nil {
		return err
	}
	atts, fromRecord, err := p.gather(ctx, e)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(atts) - 1; i >= 0; i-- {
		a := atts[i]
		if err := e.cni.DelNetworkList(ctx, a.list, a.rt(e)); err != nil {
			if !a.guessed {
				errs = append(errs, fmt.Errorf("detach %s from %s: %w", a.Network, a.IfName, err))
				continue
			}
			// Nothing of it may have run, but its device-info copy is made before any network runs.
			e.log.Warn("DEL of a network with no sign that its ADD ran failed; ignored", "network", a.Network, "ifName", a.IfName, "err", err)
		}
		if a.DeviceInfoFile != "" {
			if err := e.dev.Remove(a.DeviceInfoFile); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) > 0 {
		// The record stays, so that the runtime's next DEL retries with the same knowledge.
		return errors.Join(errs...)
	}
	if p.deps.Status != nil {
		// A status still queued for this sandbox would describe interfaces that are gone.
		if err := p.deps.Status.Forget(args.ContainerID); err != nil {
			return err
		}
	}
	if err := e.rec.Delete(args.ContainerID); err != nil {
		return err
	}
	log.Info("detached all networks", "count", len(atts), "fromRecord", fromRecord)
	return nil
}

// Check runs CHECK on every attachment, the cluster network's and the extras', and returns all failures.
func (p *Plugin) Check(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) error {
	e, err := p.newEnv(c, args, log)
	if err != nil {
		return err
	}
	atts, _, err := p.gather(ctx, e)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range atts {
		if ok, _ := version.GreaterThanOrEqualTo(a.list.CNIVersion, "0.4.0"); !ok {
			log.Debug("network predates CHECK; skipped", "network", a.Network, "cniVersion", a.list.CNIVersion)
			continue
		}
		if err := e.cni.CheckNetworkList(ctx, a.list, a.rt(e)); err != nil {
			errs = append(errs, fmt.Errorf("check %s on %s: %w", a.Network, a.IfName, err))
		}
	}
	return errors.Join(errs...)
}

// gather finds the container's attachments in ADD order: braid's record when there is one, else the pod's
// networks (when the pod still exists with the runtime's UID) merged with libcni's cache for this container,
// and always the cluster network on CNI_IFNAME.
func (p *Plugin) gather(ctx context.Context, e *env) ([]*attachment, bool, error) {
	rec, err := e.rec.Load(e.args.ContainerID)
	if err != nil {
		e.log.Warn("attachment record unreadable; rebuilding", "err", err)
	}
	if rec != nil {
		ran := p.ranADD(e)
		var atts []*attachment
		for _, ca := range rec.Attachments {
			a, err := fromCache(ca)
			if err != nil {
				return nil, true, err
			}
			// The record is written before ADD runs anything. An extra network of which libcni has no result
			// never finished its ADD (ADD failed or crashed first, or a DEL removed it already), so, as when
			// rebuilding, its failing DEL is no reason to keep the pod.
			a.guessed = !ca.Master && ran != nil && !ran[ca.IfName]
			atts = append(atts, a)
		}
		return atts, true, nil
	}

	var pod *corev1.Pod
	kube, err := p.kube(e)
	if err != nil {
		e.log.Warn("no API client; working from the caches", "err", err)
	} else if kube != nil && e.k8s.IsPod() {
		// One attempt only: on DEL the pod is often gone, and that is fine.
		pod, err = getPod(ctx, kube, e.k8s, 0)
		if err != nil {
			e.log.Info("pod not available; working from the caches", "err", err)
		}
	}
	atts := p.planForDelete(ctx, e, kube, pod)

	cached, err := e.cni.GetCachedAttachments(e.args.ContainerID)
	if err != nil {
		e.log.Warn("libcni cache unreadable", "err", err)
	}
	byIf := map[string]int{}
	for i, a := range atts {
		byIf[a.IfName] = i
	}
	// Attachments only the cache knows join after the loop: moving atts' entries inside it would shift the
	// indexes in byIf (the cluster network's, put first, made every lookup after it hit its neighbour).
	var first, last []*attachment
	slices.SortFunc(cached, func(x, y *libcni.NetworkAttachment) int { return strings.Compare(x.IfName, y.IfName) })
	for _, ca := range cached {
		list, err := libcni.ConfListFromBytes(ca.Config)
		if err != nil {
			e.log.Warn("cached config unreadable", "network", ca.Network, "ifName", ca.IfName, "err", err)
			continue
		}
		a := &attachment{Attachment: cache.Attachment{Network: ca.Network, IfName: ca.IfName, Config: ca.Config,
			CapabilityArgs: ca.CapabilityArgs, Master: ca.IfName == e.args.IfName}, list: list}
		// What actually ran (the cache) wins over what the NAD says today, and is no guess.
		if i, ok := byIf[ca.IfName]; ok {
			a.Network, a.DeviceInfoFile, a.Master = atts[i].Network, atts[i].DeviceInfoFile, atts[i].Master
			atts[i] = a
			continue
		}
		if a.Master {
			first = append(first, a)
		} else {
			// plan gives every extra network this device-info path; a copy made there goes with the attachment.
			a.DeviceInfoFile = e.dev.CNIPath(ca.Network, e.args.ContainerID, ca.IfName)
			last = append(last, a)
		}
	}
	return slices.Concat(first, atts, last), false, nil
}

// argsFromCache sets the netns, CNI_ARGS and cluster network's interface of a container whose record is
// unreadable from libcni's cache: from the cached attachment of the conf's cluster network, else from its
// first one with the interface runtimes give the cluster network, eth0.
func (p *Plugin) argsFromCache(ctx context.Context, e *env, args *skel.CmdArgs) {
	args.IfName = "eth0"
	cached, err := e.cni.GetCachedAttachments(args.ContainerID)
	if err != nil || len(cached) == 0 {
		return
	}
	use := cached[0]
	if kube, err := p.kube(e); err == nil {
		if m, err := newResolver(e, kube).master(ctx, nil); err == nil {
			for _, ca := range cached {
				if ca.Network == m.list.Name {
					use, args.IfName = ca, ca.IfName
					break
				}
			}
		}
	}
	kv := make([]string, 0, len(use.CniArgs))
	for _, a := range use.CniArgs {
		kv = append(kv, a[0]+"="+a[1])
	}
	args.Netns, args.Args = use.NetNS, strings.Join(kv, ";")
}

// ranADD returns the interfaces of the container of which libcni keeps an ADD result; nil when its cache
// cannot be read (then nothing counts as never run).
func (p *Plugin) ranADD(e *env) map[string]bool {
	cached, err := e.cni.GetCachedAttachments(e.args.ContainerID)
	if err != nil {
		e.log.Warn("libcni cache unreadable", "err", err)
		return nil
	}
	ran := map[string]bool{}
	for _, ca := range cached {
		ran[ca.IfName] = true
	}
	return ran
}

// Status reports whether braid can attach pods now: the readiness indicator file exists, the cluster network's
// conf loads, and the plugins of the cluster network and of the networks of every pod report ready (CNI 1.1
// STATUS).
func (p *Plugin) Status(ctx context.Context, c *conf.Conf, args *skel.CmdArgs, log *slog.Logger) error {
	if c.ReadinessIndicatorFile != "" {
		if _, err := os.Stat(c.ReadinessIndicatorFile); err != nil {
			return fmt.Errorf("readiness indicator file: %w: %w", err, errNotReady)
		}
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return fmt.Errorf("kubeconfig: %w: %w", err, errNotReady)
		}
	}
	e, err := p.newEnv(c, args, log)
	if err != nil {
		return err
	}
	kube, err := p.kube(e)
	if err != nil {
		return fmt.Errorf("%w: %w", err, errNotReady)
	}
	r := newResolver(e, kube)
	m, err := r.master(ctx, nil)
	if err != nil {
		return fmt.Errorf("cluster network: %w: %w", err, errNotReady)
	}
	if err := e.cni.GetStatusNetworkList(ctx, m.list); err != nil {
		return statusErr("cluster network "+m.Network, err)
	}
	// The networks of every pod (defaultNetworks outside the system namespaces, delegates after the first)
	// serve every ADD too: CNI 1.1 has braid ask their plugins as well.
	extras, err := r.selections(nil)
	if err != nil {
		return fmt.Errorf("%w: %w", err, errNotReady)
	}
	for _, a := range extras {
		list, _, err := r.extraList(ctx, a)
		if err != nil {
			return fmt.Errorf("%w: %w", err, errNotReady)
		}
		if err := e.cni.GetStatusNetworkList(ctx, list); err != nil {
			return statusErr(fmt.Sprintf("%s (%s)", a.field, a.Network), err)
		}
	}
	return nil
}

// statusErr keeps a delegate's own STATUS error code (50 or 51) and makes any other failure code 50.
func statusErr(what string, err error) error {
	var te *types.Error
	if errors.As(err, &te) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %w: %w", what, err, errNotReady)
}
