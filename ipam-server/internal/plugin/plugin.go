package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// Plugin implements the CNI commands. NewClient is injected so tests and the binary share the code.
type Plugin struct {
	NewClient func(kubeconfig string) (kubernetes.Interface, error)
}

// NewClientFromKubeconfig builds a client from a kubeconfig file (the node's read-only credentials).
func NewClientFromKubeconfig(path string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// Funcs returns the skel functions for PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status}
}

// Add returns the addresses braid-ipam-server assigned to (pod, interface), waiting for them a bounded time.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, pod, c, err := p.setup(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.IPAM.timeout)
	defer cancel()
	iface, err := waitAssigned(ctx, c, pod, args.IfName)
	if err != nil {
		return err
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
	if err := version.ParsePrevResult(&conf.NetConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "braid-ipam: prevResult", err.Error())
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "braid-ipam: CHECK needs prevResult", "")
	}
	prev, err := types100.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "braid-ipam: prevResult", err.Error())
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
	var want, got []string
	for _, a := range iface.Addresses {
		want = append(want, a.CIDR)
	}
	for _, ip := range prev.IPs {
		got = append(got, ip.Address.String())
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
	if _, err := c.Discovery().ServerVersion(); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, "braid-ipam: the API server does not answer", err.Error())
	}
	return nil
}

func (p *Plugin) setup(args *skel.CmdArgs) (*Conf, podArgs, kubernetes.Interface, error) {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return nil, podArgs{}, nil, err
	}
	pod, err := parseArgs(args.Args)
	if err != nil {
		return nil, podArgs{}, nil, err
	}
	c, err := p.NewClient(conf.IPAM.Kubeconfig)
	if err != nil {
		return nil, podArgs{}, nil, types.NewError(types.ErrInvalidNetworkConfig, "braid-ipam: ipam.kubeconfig", err.Error())
	}
	return conf, pod, c, nil
}

// errNotYet is the reason given when the server has recorded nothing for the interface.
var errNotYet = errors.New("braid-ipam-server has not assigned an address yet (is it running?)")

// waitAssigned watches the pod until its annotation assigns the interface addresses, or the context ends;
// then it fails with code 11 (try again later) and the reason the server recorded.
func waitAssigned(ctx context.Context, c kubernetes.Interface, pod podArgs, ifName string) (assignment.Interface, error) {
	var got assignment.Interface
	reason := errNotYet.Error()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", pod.Name).String()
			return c.CoreV1().Pods(pod.Namespace).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", pod.Name).String()
			return c.CoreV1().Pods(pod.Namespace).Watch(ctx, o)
		},
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || (pod.UID != "" && string(p.UID) != pod.UID) {
			return false, nil
		}
		if ev.Type == watch.Deleted {
			return false, fmt.Errorf("pod %s/%s was deleted", pod.Namespace, pod.Name)
		}
		value, ok := p.Annotations[assignment.Annotation]
		if !ok {
			return false, nil
		}
		a, err := assignment.Parse(value)
		if err != nil {
			reason = err.Error()
			return false, nil //nolint:nilerr // a bad annotation may be rewritten by the server: keep waiting
		}
		if string(p.UID) != a.PodUID {
			return false, nil
		}
		iface, ok := a.Interfaces[ifName]
		switch {
		case !ok:
			return false, nil
		case iface.Error != "":
			reason = iface.Error
			return false, nil
		case len(iface.Addresses) > 0:
			got = iface
			return true, nil
		}
		return false, nil
	})
	if err == nil {
		return got, nil
	}
	if ctx.Err() != nil || wait.Interrupted(err) || errors.Is(err, watchtools.ErrWatchClosed) || apierrors.IsTimeout(err) {
		return got, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("braid-ipam: no address for pod %s/%s interface %s: %s", pod.Namespace, pod.Name, ifName, reason), "")
	}
	return got, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("braid-ipam: pod %s/%s: %v", pod.Namespace, pod.Name, err), reason)
}

// current reads the pod's assignments once.
func current(ctx context.Context, c kubernetes.Interface, pod podArgs) (assignment.Assignments, error) {
	p, err := c.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return assignment.Assignments{}, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("braid-ipam: get pod %s/%s", pod.Namespace, pod.Name), err.Error())
	}
	a, err := assignment.Parse(p.Annotations[assignment.Annotation])
	if err != nil || (pod.UID != "" && a.PodUID != pod.UID) {
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
