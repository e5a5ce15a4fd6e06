package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"

	"github.com/containernetworking/cni/libcni"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/braid-cni/braid/crds/selection"
	"github.com/braid-cni/braid/meta-plugin/internal/cache"
	"github.com/braid-cni/braid/meta-plugin/internal/conf"
	"github.com/braid-cni/braid/meta-plugin/internal/delegate"
	"github.com/braid-cni/braid/meta-plugin/internal/device"
)

// maxConcurrentReads bounds the NAD reads braid has in flight at once.
const maxConcurrentReads = 8

// attachment is one delegate network of a pod, ready for libcni.
type attachment struct {
	cache.Attachment
	list *libcni.NetworkConfigList
	// field names where the request came from, for messages: "networks[2]", "defaultNetworks[0]", ...
	field string
	// elem is the selection element (zero for the master).
	elem selection.Element
	// resource is the NAD's k8s.v1.cni.cncf.io/resourceName.
	resource string
	// confName is the network's name as braid's conf writes it (defaultNetworks): without a NAD of that name,
	// the conf of that name in confDir (see namedNetwork).
	confName string
	// inline is the network's conf given in braid's own conf (delegates after the first): there is no NAD.
	inline []byte
	// guessed marks an extra network DEL rebuilt from the pod alone: neither braid's record nor libcni's
	// cache says its ADD ever ran, so a failing DEL of it (host-device without its device, say) is no
	// reason to keep the pod from going.
	guessed bool
}

func (a *attachment) rt(e *env) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    e.args.ContainerID,
		NetNS:          e.args.Netns,
		IfName:         a.IfName,
		Args:           conf.PluginArgs(e.args.Args),
		CapabilityArgs: a.CapabilityArgs,
	}
}

// fromCache turns a recorded attachment back into one libcni can run.
func fromCache(ca cache.Attachment) (*attachment, error) {
	list, err := libcni.ConfListFromBytes(ca.Config)
	if err != nil {
		return nil, fmt.Errorf("recorded config of %s on %s: %w", ca.Network, ca.IfName, err)
	}
	return &attachment{Attachment: ca, list: list}, nil
}

// resolver finds the configs of a pod's networks. It reads each NAD at most once per call.
type resolver struct {
	e    *env
	kube Kube
	nads map[string]*nadv1.NetworkAttachmentDefinition
}

func newResolver(e *env, kube Kube) *resolver {
	return &resolver{e: e, kube: kube, nads: map[string]*nadv1.NetworkAttachmentDefinition{}}
}

func (r *resolver) nad(ctx context.Context, field, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	key := namespace + "/" + name
	if n, ok := r.nads[key]; ok {
		return n, nil
	}
	if r.kube == nil {
		return nil, fmt.Errorf("%s: network-attachment-definition %s: braid has no kubeconfig: %w", field, key, errNetwork)
	}
	n, err := fetchNAD(ctx, r.kube, namespace, name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, &nadNotFound{msg: fmt.Sprintf("%s: network-attachment-definition %s not found", field, key)}
	case err != nil:
		return nil, fmt.Errorf("%s: %w: %w", field, err, errTryAgain)
	}
	r.nads[key] = n
	return n, nil
}

// nadNotFound is a NAD that does not exist (code 101, errNetwork): a network braid's conf names may then be
// a conf in confDir (see namedNetwork).
type nadNotFound struct{ msg string }

func (e *nadNotFound) Error() string { return e.msg + ": " + errNetwork.Error() }
func (e *nadNotFound) Unwrap() error { return errNetwork }

// fetchNAD reads a NAD from the API server's cache and, when the cache does not have it (it may lag behind a
// NAD created just before the pod), once more from etcd before believing it is missing.
func fetchNAD(ctx context.Context, kube Kube, namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	n, err := kube.GetNAD(ctx, namespace, name, false)
	if apierrors.IsNotFound(err) {
		n, err = kube.GetNAD(ctx, namespace, name, true)
	}
	return n, err
}

// prefetch reads the NADs concurrently, so that a pod with several networks waits for one round trip to the
// API server rather than one per network. Errors are left for nad() to report with the right field, which
// then asks again.
func (r *resolver) prefetch(ctx context.Context, refs []conf.NetRef) {
	if r.kube == nil {
		return
	}
	var todo []conf.NetRef
	seen := map[string]bool{}
	for _, ref := range refs {
		if k := ref.String(); !seen[k] && r.nads[k] == nil {
			seen[k] = true
			todo = append(todo, ref)
		}
	}
	if len(todo) < 2 {
		return // nothing to overlap
	}
	got := make([]*nadv1.NetworkAttachmentDefinition, len(todo))
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrentReads)
	for i, ref := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if n, err := fetchNAD(ctx, r.kube, ref.Namespace, ref.Name); err == nil {
				got[i] = n
			}
		}()
	}
	wg.Wait()
	for i, ref := range todo {
		if got[i] != nil {
			r.nads[ref.String()] = got[i]
		}
	}
}

// nadList returns the config list of a NAD (NPWG spec 3.4.1: spec.config, else an on-disk conflist, else an
// on-disk conf of that name) and its resourceName.
func (r *resolver) nadList(ctx context.Context, field, namespace, name string) (*libcni.NetworkConfigList, string, error) {
	n, err := r.nad(ctx, field, namespace, name)
	if err != nil {
		return nil, "", err
	}
	resource := n.Annotations[device.ResourceAnnotation]
	var list *libcni.NetworkConfigList
	if n.Spec.Config != "" {
		list, err = delegate.FromNADConfig(n.Name, n.Spec.Config)
	} else {
		list, err = r.onDisk(n.Name, false)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s: network-attachment-definition %s/%s: %w", field, namespace, name, err)
	}
	if self := braidIn(list); self != "" {
		return nil, "", fmt.Errorf("%s: network-attachment-definition %s/%s delegates to braid itself (%s), which would call "+
			"itself without end; its config must name the network's own plugins: %w", field, namespace, name, self, errNetwork)
	}
	return list, resource, nil
}

func isolationErr(field, podNS, ref string) error {
	return fmt.Errorf("%s: namespace isolation: pods in namespace %q may not use network-attachment-definition %s: %w",
		field, podNS, ref, errNetwork)
}

// selections lists the extra networks: the conf's defaultNetworks (outside system namespaces) and then the
// pod's annotation, with their interface names. Without the pod (a DEL after it was deleted) only the
// defaultNetworks are known.
func (r *resolver) selections(pod *corev1.Pod) ([]*attachment, error) {
	c := r.e.c
	var defaults []selection.Element
	if !c.IsSystemNamespace(r.e.k8s.PodNamespace) {
		for _, ref := range c.DefaultNADs {
			defaults = append(defaults, selection.Element{Name: ref.Name, Namespace: ref.Namespace})
		}
	}
	// As in Multus, delegates after the first are networks of every pod, system namespaces included.
	for i, d := range c.ExtraDelegates() {
		var named struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(d, &named) // conf.Parse has checked that it is a JSON object
		if named.Name == "" {
			named.Name = fmt.Sprintf("delegates[%d]", i+1)
		}
		defaults = append(defaults, selection.Element{Name: named.Name})
	}
	var elems []selection.Element
	if pod != nil {
		var err error
		if elems, err = selection.Parse(pod.Annotations[selection.NetworksAnnotation], pod.Namespace); err != nil {
			return nil, err
		}
	}
	defNames, names, err := selection.AssignAll(r.e.args.IfName, defaults, elems)
	if err != nil {
		return nil, err
	}
	var out []*attachment
	for i, el := range defaults {
		a := &attachment{Attachment: cache.Attachment{Network: el.Ref(), IfName: defNames[i]}, elem: el}
		if i < len(c.DefaultNADs) {
			a.field, a.confName = fmt.Sprintf("defaultNetworks[%d]", i), c.DefaultNetworks[i]
		} else {
			j := i - len(c.DefaultNADs) + 1
			a.field, a.inline, a.Network = fmt.Sprintf("delegates[%d]", j), c.Delegates[j], el.Name
		}
		out = append(out, a)
	}
	for i, el := range elems {
		field := fmt.Sprintf("networks[%d]", i)
		if !c.MayUse(pod.Namespace, el.Namespace) {
			return nil, isolationErr(field, pod.Namespace, el.Ref())
		}
		out = append(out, &attachment{Attachment: cache.Attachment{Network: el.Ref(), IfName: names[i]}, field: field, elem: el})
	}
	return out, nil
}

// extraList returns the config list and resourceName of an extra network: its NAD's, or for a network braid's
// conf names, the conf of that name when there is no such NAD (then a.Network becomes the conf's name).
func (r *resolver) extraList(ctx context.Context, a *attachment) (*libcni.NetworkConfigList, string, error) {
	if a.inline != nil {
		list, err := delegate.FromBytes(a.inline, "", a.field)
		return list, "", err
	}
	ref := conf.NetRef{Namespace: a.elem.Namespace, Name: a.elem.Name}
	if a.confName == "" {
		return r.nadList(ctx, a.field, ref.Namespace, ref.Name)
	}
	list, resource, network, err := r.namedNetwork(ctx, a.field, a.confName, ref)
	if err == nil {
		a.Network = network
	}
	return list, resource, err
}

// nadRefs lists every NAD the pod's attachments need: the cluster network's (the pod's override or the conf's)
// and the extras'.
func (r *resolver) nadRefs(pod *corev1.Pod, extras []*attachment) []conf.NetRef {
	var refs []conf.NetRef
	c := r.e.c
	if pod != nil && pod.Annotations[selection.DefaultNetworkAnnotation] != "" && !c.IsSystemNamespace(pod.Namespace) {
		if el, err := selection.ParseDefaultNetwork(pod.Annotations[selection.DefaultNetworkAnnotation], c.ClusterNetworkNamespace); err == nil {
			refs = append(refs, conf.NetRef{Namespace: el.Namespace, Name: el.Name})
		}
	} else if c.ClusterNAD != nil {
		refs = append(refs, *c.ClusterNAD)
	}
	for _, a := range extras {
		if a.inline == nil {
			refs = append(refs, conf.NetRef{Namespace: a.elem.Namespace, Name: a.elem.Name})
		}
	}
	return refs
}

// gateways of an attachment's "default-route" request.
func (a *attachment) gateways() []netip.Addr { return a.elem.DefaultRoute }
