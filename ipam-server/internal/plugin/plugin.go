package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/braid-cni/braid/crds/podid"
	"github.com/braid-cni/braid/crds/shim"
	"github.com/braid-cni/braid/ipam-server/internal/apiread"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// Plugin implements the CNI commands. NewClient is injected so tests and the binary share the code.
type Plugin struct {
	NewClient func(kubeconfig string) (*apiread.Client, error)
}

// podPath and ippoolPath are all braid-ipam reads, and only their metadata: the assignment is an annotation
// on the pod, and STATUS needs to know only that the pools exist.
func podPath(namespace, name string) string { return podsPath(namespace) + "/" + url.PathEscape(name) }

// podsPath is the collection braid-ipam watches (one pod of it, by field selector).
func podsPath(namespace string) string {
	return "/api/v1/namespaces/" + url.PathEscape(namespace) + "/pods"
}

func ippoolPath(name string) string {
	return "/apis/braid.dev/v1alpha1/ippools/" + url.PathEscape(name)
}

// NewClientFromKubeconfig builds a client from a kubeconfig file (the node's read-only credentials). It is
// apiread's, not client-go's: braid-ipam runs as a fresh process for every CNI call, and client-go's start-up
// cost more CPU than the call's own work.
func NewClientFromKubeconfig(path string) (*apiread.Client, error) {
	c, err := apiread.Load(path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, nil
}

// Funcs returns the skel functions for PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status}
}

// Add returns the addresses braid-ipam-server assigned to (pod, interface), waiting for them a bounded time:
// from braid's node daemon when it runs (its watch cache has the pod), else from the API server. A pod being
// deleted without them fails at once: the server never serves it.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, pod, err := parse(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.IPAM.timeout)
	defer cancel()
	iface, answered, err := waitViaDaemon(ctx, conf.IPAM.DaemonSocket, pod, args.IfName)
	if err != nil {
		return err
	}
	if !answered {
		c, err := p.client(conf)
		if err != nil {
			return err
		}
		if iface, err = waitAssigned(ctx, c, pod, args.IfName); err != nil {
			return err
		}
	}
	res, err := toResult(iface, conf.CNIVersion)
	if err != nil {
		return err
	}
	return types.PrintResult(res, conf.CNIVersion)
}

// Del succeeds always: braid-ipam-server releases addresses when the pod goes, by policy; the node holds nothing.
func (p *Plugin) Del(*skel.CmdArgs) error { return nil }

// Check verifies that the addresses in prevResult are still the ones assigned.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, pod, c, err := p.setup(args)
	if err != nil {
		return err
	}
	got, err := prevAddresses(conf)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.IPAM.timeout)
	defer cancel()
	a, err := current(ctx, c, pod)
	if err != nil {
		return err
	}
	iface, ok := a.Interfaces[args.IfName]
	if !ok || len(iface.Addresses) == 0 {
		return types.NewError(types.ErrInternal, fmt.Sprintf("braid-ipam: pod %s/%s has no assignment for %s any more", pod.Namespace, pod.Name, args.IfName), "")
	}
	var want []string
	for _, a := range iface.Addresses {
		want = append(want, a.CIDR)
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		return types.NewError(types.ErrInternal, fmt.Sprintf("braid-ipam: %s has %v but braid-ipam-server assigned %v", args.IfName, got, want), "")
	}
	return nil
}

// Status reports whether the plugin can serve: the API server answers and the named pools exist.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	c, err := p.NewClient(conf.IPAM.Kubeconfig)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "braid-ipam: cannot build an API client", err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.IPAM.timeout)
	defer cancel()
	for _, name := range conf.IPAM.Pools {
		_, err := cachedGet(ctx, c, ippoolPath(name))
		switch {
		case apiread.IsNotFound(err):
			return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("braid-ipam: ipam.pools: IPPool %q does not exist", name),
				"create it with kubectl or fix the NAD's ipam.pools")
		case err != nil:
			return types.NewError(types.ErrPluginNotAvailable, "braid-ipam: the API server does not answer", err.Error())
		}
	}
	return nil
}

func (p *Plugin) setup(args *skel.CmdArgs) (*Conf, podArgs, *apiread.Client, error) {
	conf, pod, err := parse(args)
	if err != nil {
		return nil, podArgs{}, nil, err
	}
	c, err := p.client(conf)
	if err != nil {
		return nil, podArgs{}, nil, err
	}
	return conf, pod, c, nil
}

func parse(args *skel.CmdArgs) (*Conf, podArgs, error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, podArgs{}, err
	}
	pod, err := parseArgs(args.Args)
	if err != nil {
		return nil, podArgs{}, err
	}
	return conf, pod, nil
}

func (p *Plugin) client(conf *Conf) (*apiread.Client, error) {
	c, err := p.NewClient(conf.IPAM.Kubeconfig)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "braid-ipam: ipam.kubeconfig", err.Error())
	}
	return c, nil
}

// cachedGet reads an object's metadata from the API server's watch cache, which spares etcd a read, and asks
// etcd only when the cache does not have it: an object created a moment ago may not have reached the cache.
func cachedGet(ctx context.Context, c *apiread.Client, path string) (*apiread.Meta, error) {
	o, err := c.Get(ctx, path, "0")
	if apiread.IsNotFound(err) {
		o, err = c.Get(ctx, path, "")
	}
	if err != nil {
		return nil, err
	}
	return &o.Metadata, nil
}

// networksAnnotation is where a pod asks for its networks and names their interfaces.
const networksAnnotation = "k8s.v1.cni.cncf.io/networks"

// retryGet spaces reads of the pod while the API server does not answer.
const retryGet = 250 * time.Millisecond

// errNotYet is the reason given when the server has recorded nothing for the interface.
var errNotYet = errors.New("braid-ipam-server has not assigned an address yet (is it running?)")

// waitAssigned reads the pod and, until its annotation assigns the interface addresses, watches it from
// that version on; when the context ends it fails with code 11 (try again later) and the reason the server
// recorded, and at once when the pod is being deleted. One GET answers when the server was first; a closed
// watch resumes from a fresh GET.
func waitAssigned(ctx context.Context, c *apiread.Client, pod podArgs, ifName string) (assignment.Interface, error) {
	reason := errNotYet.Error()
	for {
		// A stale answer only means the watch below replays what followed.
		p, err := cachedGet(ctx, c, podPath(pod.Namespace, pod.Name))
		switch {
		case apiread.IsNotFound(err):
			return assignment.Interface{}, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("braid-ipam: pod %s/%s not found", pod.Namespace, pod.Name), "")
		case err != nil && ctx.Err() == nil:
			reason = err.Error()
			pause(ctx) // the API server is unreachable: retry gently until the deadline
		case err == nil:
			if iface, done := assigned(p, pod.UID, ifName, &reason); done {
				return iface, nil
			}
			if beingDeleted(p, pod.UID) {
				return assignment.Interface{}, podBeingDeleted(pod)
			}
			iface, done, err := watchAssigned(ctx, c, p.ResourceVersion, pod, ifName, &reason)
			if done || err != nil {
				return iface, err
			}
			pause(ctx) // a watch refused or ended at once (an overloaded API server) must not make a busy loop
		}
		if ctx.Err() != nil {
			return assignment.Interface{}, noAddress(pod, ifName, reason)
		}
	}
}

// pause waits retryGet, or less when ctx ends first.
func pause(ctx context.Context) {
	t := time.NewTimer(retryGet)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// noAddress is ADD's answer when the deadline passed: try again later, with what the server recorded.
func noAddress(pod podArgs, ifName, reason string) error {
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("braid-ipam: no address for pod %s/%s interface %s: %s", pod.Namespace, pod.Name, ifName, reason), "")
}

// waitViaDaemon asks braid's node daemon, when it listens on socket, for the pod's assignment, until the
// interface is assigned, the pod is being deleted, or ctx ends. answered is false when the daemon cannot
// answer (not running, an older daemon, or the pod not in its cache; a missing socket fails the dial at once):
// the caller then reads the API server. A daemon older than AnnotationAnswer.Deleting leaves a pod being
// deleted to the deadline, as before.
func waitViaDaemon(ctx context.Context, socket string, pod podArgs, ifName string) (iface assignment.Interface, answered bool, err error) {
	reason := errNotYet.Error()
	after := ""
	for {
		deadline, _ := ctx.Deadline()
		ans, err := shim.AskPodAnnotation(ctx, socket, shim.AnnotationQuery{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			Key: assignment.Annotation, After: after, Wait: time.Until(deadline), EndOnDeletion: true})
		switch {
		case ctx.Err() != nil:
			return assignment.Interface{}, true, noAddress(pod, ifName, reason)
		case err != nil || !ans.Found:
			return assignment.Interface{}, false, nil //nolint:nilerr // the API server answers instead
		}
		meta := &apiread.Meta{UID: ans.UID}
		if ans.Value != "" {
			meta.Annotations = map[string]string{assignment.Annotation: ans.Value}
		}
		// The daemon answered for pod.UID (the mirror of a static pod answers for the static pod's), so the
		// UID left to check is the assignment's, against the answering pod's.
		if iface, done := assigned(meta, "", ifName, &reason); done {
			return iface, true, nil
		}
		if ans.Deleting { // the daemon answers only for the pod of pod.UID, when it is known
			return assignment.Interface{}, true, podBeingDeleted(pod)
		}
		if time.Until(deadline) <= 0 {
			return assignment.Interface{}, true, noAddress(pod, ifName, reason)
		}
		after = ans.Value
	}
}

// watchAssigned follows the pod from resourceVersion until it is assigned, being deleted or deleted, or the
// watch ends.
func watchAssigned(ctx context.Context, c *apiread.Client, resourceVersion string, pod podArgs, ifName string,
	reason *string) (assignment.Interface, bool, error) {
	w, err := c.Watch(ctx, podsPath(pod.Namespace), "metadata.name="+pod.Name, resourceVersion)
	if err != nil {
		if ctx.Err() == nil { // at the deadline, what the server recorded is the reason, not the deadline
			*reason = err.Error()
		}
		return assignment.Interface{}, false, nil //nolint:nilerr // the caller retries from a fresh GET
	}
	defer func() { _ = w.Close() }()
	for {
		ev, err := w.Next()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, io.EOF) {
				*reason = err.Error()
			}
			return assignment.Interface{}, false, nil // ended: the caller reads afresh, or gives up at the deadline
		}
		p := &ev.Object.Metadata
		if ev.Type == "DELETED" && podid.Is(p.UID, p.Annotations, pod.UID) {
			return assignment.Interface{}, false, types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("braid-ipam: pod %s/%s was deleted", pod.Namespace, pod.Name), "")
		}
		if iface, done := assigned(p, pod.UID, ifName, reason); done {
			return iface, true, nil
		}
		if beingDeleted(p, pod.UID) {
			return assignment.Interface{}, false, podBeingDeleted(pod)
		}
	}
}

// beingDeleted reports whether p, the pod of CNI_ARGS' UID when it has one, is being deleted: braid-ipam-server
// never serves such a pod, so waiting for its addresses would only hold its termination for ipam.timeout. A
// pod that has its addresses keeps them until it is gone, so callers ask this only after assigned.
func beingDeleted(p *apiread.Meta, uid string) bool {
	return p.Deleting() && podid.Is(p.UID, p.Annotations, uid)
}

// podBeingDeleted is ADD's answer for a pod being deleted before it had an address: code 11, as for a pod
// already gone, since the runtime gives up the sandbox of a terminating pod anyway.
func podBeingDeleted(pod podArgs) error {
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("braid-ipam: pod %s/%s is being deleted; braid-ipam-server assigns no address to it", pod.Namespace, pod.Name), "")
}

// assigned reports whether the pod (of the expected UID) has addresses for the interface; otherwise it
// updates reason with what the server recorded.
func assigned(p *apiread.Meta, uid, ifName string, reason *string) (assignment.Interface, bool) {
	if !podid.Is(p.UID, p.Annotations, uid) {
		*reason = fmt.Sprintf("pod has UID %s, not %s (recreated?)", p.UID, uid)
		return assignment.Interface{}, false
	}
	value, ok := p.Annotations[assignment.Annotation]
	if !ok {
		return assignment.Interface{}, false
	}
	a, err := assignment.Parse(value)
	if err != nil {
		*reason = err.Error()
		return assignment.Interface{}, false
	}
	iface, ok := a.Interfaces[ifName]
	switch {
	case a.PodUID != p.UID:
		return assignment.Interface{}, false
	case !ok:
		*reason = fmt.Sprintf("braid-ipam-server assigned the pod's interfaces [%s] but not %s (check the interface names in "+
			"the pod's %s, and that the network's NAD exists)", strings.Join(slices.Sorted(maps.Keys(a.Interfaces)), " "), ifName, networksAnnotation)
		return assignment.Interface{}, false
	case iface.Error != "":
		*reason = iface.Error
		return assignment.Interface{}, false
	}
	return iface, len(iface.Addresses) > 0
}

// current reads the pod's assignments once.
func current(ctx context.Context, c *apiread.Client, pod podArgs) (assignment.Assignments, error) {
	o, err := c.Get(ctx, podPath(pod.Namespace, pod.Name), "")
	if err != nil {
		return assignment.Assignments{}, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("braid-ipam: get pod %s/%s", pod.Namespace, pod.Name), err.Error())
	}
	// The assignment counts only when it is this object's (a re-applied manifest copies another's) and the
	// object is the pod of CNI_ARGS.
	a, err := assignment.Parse(o.Metadata.Annotations[assignment.Annotation])
	if err != nil || a.PodUID != o.Metadata.UID || !podid.Is(o.Metadata.UID, o.Metadata.Annotations, pod.UID) {
		return assignment.Assignments{}, types.NewError(types.ErrInternal, fmt.Sprintf("braid-ipam: pod %s/%s has no current assignment", pod.Namespace, pod.Name), "")
	}
	return a, nil
}

// toResult turns an assignment into a CNI result.
func toResult(iface assignment.Interface, cniVersion string) (types.Result, error) {
	res := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	gateways := map[bool]net.IP{}
	for _, a := range iface.Addresses {
		ip, ipnet, err := net.ParseCIDR(a.CIDR)
		if err != nil {
			return nil, types.NewError(types.ErrInternal, "braid-ipam: bad address in the assignment", a.CIDR)
		}
		ipnet.IP = ip
		cfg := &types100.IPConfig{Address: *ipnet}
		if a.Gateway != "" {
			cfg.Gateway = net.ParseIP(a.Gateway)
			gateways[ip.To4() != nil] = cfg.Gateway
		}
		res.IPs = append(res.IPs, cfg)
	}
	for _, r := range iface.Routes {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, types.NewError(types.ErrInternal, "braid-ipam: bad route in the assignment", r.Dst)
		}
		route := &types.Route{Dst: *dst}
		if r.GW != "" {
			route.GW = net.ParseIP(r.GW)
		} else {
			route.GW = gateways[dst.IP.To4() != nil]
		}
		res.Routes = append(res.Routes, route)
	}
	if iface.DNS != nil {
		res.DNS = types.DNS{Nameservers: iface.DNS.Nameservers, Domain: iface.DNS.Domain, Search: iface.DNS.Search, Options: iface.DNS.Options}
	}
	return res.GetAsVersion(cniVersion)
}
