// Package plugin is braid-ipam's calls that read the API server: ADD on a node without braid's daemon, CHECK and
// STATUS. It is the braid-ipam-api binary; braid-ipam (package front) runs it for those calls. It never
// allocates: it reads the addresses braid-ipam-server recorded on the pod (read-only API access).
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/braid-cni/braid/crds/podid"
	"github.com/braid-cni/braid/ipam-server/internal/apiread"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/plugin/front"
)

// Plugin implements the CNI commands. NewClient is injected so tests and the binary share the code.
type Plugin struct {
	NewClient func(kubeconfig string) (*apiread.Client, error)
	// DaemonAsked is set when braid-ipam, which became this process, asked braid's node daemon already: ADD
	// then reads the API server at once instead of asking again (the daemon may wait a second for a pod it
	// has not seen before it says so).
	DaemonAsked bool
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
// from braid's node daemon when it runs (its watch cache has the pod), else from the API server.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	return front.Add(args, !p.DaemonAsked, func(ctx context.Context, conf *front.Conf, pod front.PodArgs, ifName string) (assignment.Interface, error) {
		c, err := p.client(conf)
		if err != nil {
			return assignment.Interface{}, err
		}
		return waitAssigned(ctx, c, pod, ifName)
	})
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
	ctx, cancel := context.WithTimeout(context.Background(), conf.IPAM.Wait)
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
	conf, err := front.ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	c, err := p.NewClient(conf.IPAM.Kubeconfig)
	if err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "braid-ipam: cannot build an API client", err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.IPAM.Wait)
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

func (p *Plugin) setup(args *skel.CmdArgs) (*front.Conf, front.PodArgs, *apiread.Client, error) {
	conf, pod, err := front.Parse(args)
	if err != nil {
		return nil, front.PodArgs{}, nil, err
	}
	c, err := p.client(conf)
	if err != nil {
		return nil, front.PodArgs{}, nil, err
	}
	return conf, pod, c, nil
}

func (p *Plugin) client(conf *front.Conf) (*apiread.Client, error) {
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

// retryGet spaces reads of the pod while the API server does not answer.
const retryGet = 250 * time.Millisecond

// waitAssigned reads the pod and, until its annotation assigns the interface addresses, watches it from
// that version on; when the context ends it fails with code 11 (try again later) and the reason the server
// recorded, and at once when the pod is being deleted. One GET answers when the server was first; a closed
// watch resumes from a fresh GET.
func waitAssigned(ctx context.Context, c *apiread.Client, pod front.PodArgs, ifName string) (assignment.Interface, error) {
	reason := front.ErrNotYet.Error()
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
				return assignment.Interface{}, front.PodBeingDeleted(pod)
			}
			iface, done, err := watchAssigned(ctx, c, p.ResourceVersion, pod, ifName, &reason)
			if done || err != nil {
				return iface, err
			}
			pause(ctx) // a watch refused or ended at once (an overloaded API server) must not make a busy loop
		}
		if ctx.Err() != nil {
			return assignment.Interface{}, front.NoAddress(pod, ifName, reason)
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

// watchAssigned follows the pod from resourceVersion until it is assigned, being deleted or deleted, or the
// watch ends.
func watchAssigned(ctx context.Context, c *apiread.Client, resourceVersion string, pod front.PodArgs, ifName string,
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
			return assignment.Interface{}, false, front.PodBeingDeleted(pod)
		}
	}
}

// beingDeleted reports whether p, the pod of CNI_ARGS' UID when it has one, is being deleted: braid-ipam-server
// never serves such a pod, so waiting for its addresses would only hold its termination for ipam.timeout. A
// pod that has its addresses keeps them until it is gone, so callers ask this only after assigned.
func beingDeleted(p *apiread.Meta, uid string) bool {
	return p.Deleting() && podid.Is(p.UID, p.Annotations, uid)
}

// assigned is front.Assigned for a pod object read from the API server.
func assigned(p *apiread.Meta, uid, ifName string, reason *string) (assignment.Interface, bool) {
	return front.Assigned(p.UID, p.Annotations, uid, ifName, reason)
}

// current reads the pod's assignments once.
func current(ctx context.Context, c *apiread.Client, pod front.PodArgs) (assignment.Assignments, error) {
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
