package plugin

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/braid-cni/braid/meta-plugin/internal/delegate"
	"github.com/braid-cni/braid/meta-plugin/internal/device"
)

// plan resolves every attachment of an ADD, checks what can be checked before anything runs (capabilities,
// devices) and prepares the delegates' configs. Nothing is changed on the node except device-info files.
func (p *Plugin) plan(ctx context.Context, e *env, kube Kube, pod *corev1.Pod) (_ []*attachment, err error) {
	r := newResolver(e, kube)
	extras, err := r.selections(pod)
	if err != nil {
		return nil, err
	}
	r.prefetch(ctx, r.nadRefs(pod, extras))
	m, err := r.master(ctx, pod)
	if err != nil {
		return nil, err
	}
	// The cluster network's NAD may name a resource too (an SR-IOV cluster network), and, as in Multus, takes
	// the first device of it.
	reqs := []device.Request{{Network: m.Network, Resource: m.resource}}
	for _, a := range extras {
		if a.list, a.resource, err = r.extraList(ctx, a); err != nil {
			return nil, err
		}
		if err := delegate.CheckCapabilities(a.Network+" ("+a.field+")", a.list, a.elem); err != nil {
			return nil, err
		}
		reqs = append(reqs, device.Request{Network: a.Network, Resource: a.resource, Fixed: a.elem.DeviceID})
	}
	ids, err := p.assignDevices(ctx, e, pod, reqs)
	if err != nil {
		return nil, err
	}
	if ids[0] != "" {
		// As Multus does for the master plugin: the device goes into its config only, not into runtimeConfig,
		// which is the runtime's own for the cluster network.
		if m.list, err = delegate.Customize(m.list, nil, ids[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", m.field, err)
		}
		m.Config = m.list.Bytes
	}
	ids = ids[1:]
	defer func() {
		if err != nil {
			p.removeDeviceInfo(e, extras) // copied before the failure
		}
	}()
	for i, a := range extras {
		a.DeviceInfoFile = e.dev.CNIPath(a.list.Name, e.args.ContainerID, a.IfName)
		if a.resource != "" && ids[i] != "" {
			if _, err := e.dev.Copy(a.resource, ids[i], a.DeviceInfoFile); err != nil {
				return nil, fmt.Errorf("%s: %w", a.field, err)
			}
		}
		a.CapabilityArgs = delegate.CapabilityArgs(a.elem, ids[i], a.DeviceInfoFile)
		if a.list, err = delegate.Customize(a.list, a.elem.CNIArgs, ids[i]); err != nil {
			return nil, fmt.Errorf("%s: %w", a.field, err)
		}
		a.Config = a.list.Bytes
	}
	return append([]*attachment{m}, extras...), nil
}

// assignDevices asks the kubelet for the pod's devices only when some network needs one.
func (p *Plugin) assignDevices(ctx context.Context, e *env, pod *corev1.Pod, reqs []device.Request) ([]string, error) {
	var alloc map[string][]string
	for _, r := range reqs {
		if r.Resource == "" || r.Fixed != "" {
			continue
		}
		if pod == nil {
			return nil, fmt.Errorf("network %s needs a device of %s, but braid does not know the pod: %w", r.Network, r.Resource, device.ErrNoDevice)
		}
		var err error
		if alloc, err = p.deps.Devices(e.c.PodResourcesSocket).Devices(ctx, pod.Namespace, pod.Name); err != nil {
			return nil, fmt.Errorf("devices of pod %s/%s: %w: %w", pod.Namespace, pod.Name, err, errTryAgain)
		}
		break
	}
	return device.Assign(reqs, alloc)
}

// planForDelete rebuilds the attachments from the pod and its NADs when braid's record is gone. What cannot
// be resolved any more is skipped and reported to the log, not to the runtime: a network that cannot be
// resolved now was either never attached or is only known to the caches, which the caller merges in.
func (p *Plugin) planForDelete(ctx context.Context, e *env, kube Kube, pod *corev1.Pod) []*attachment {
	r := newResolver(e, kube)
	var out []*attachment
	if m, err := r.master(ctx, pod); err == nil {
		out = append(out, m)
	} else {
		e.log.Warn("cannot resolve the cluster network from the pod; using braid's conf", "err", err)
		if m, err := r.master(ctx, nil); err == nil {
			out = append(out, m)
		} else {
			e.log.Warn("cannot resolve the cluster network", "err", err)
		}
	}
	extras, err := r.selections(pod)
	if err != nil {
		e.log.Warn("pod's networks cannot be read; nothing of them was attached by braid", "err", err)
		return out
	}
	for _, a := range extras {
		list, _, err := r.extraList(ctx, a)
		if err != nil {
			e.log.Warn("network cannot be resolved for DEL", "network", a.Network, "err", err)
			continue
		}
		// The delegates get the config ADD gave them: the pod's cni-args, and the device it names (host-device
		// finds the device to give back only in the config). A device the kubelet assigned is not known any more.
		if list, err = delegate.Customize(list, a.elem.CNIArgs, a.elem.DeviceID); err != nil {
			e.log.Warn("network cannot be resolved for DEL", "network", a.Network, "err", err)
			continue
		}
		a.list = list
		a.Config = list.Bytes
		a.DeviceInfoFile = e.dev.CNIPath(list.Name, e.args.ContainerID, a.IfName)
		a.CapabilityArgs = delegate.CapabilityArgs(a.elem, a.elem.DeviceID, a.DeviceInfoFile)
		a.guessed = true // until libcni's cache confirms it (gather)
		out = append(out, a)
	}
	return out
}
