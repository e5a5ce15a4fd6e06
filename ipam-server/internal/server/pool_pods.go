package server

import (
	"context"
	"slices"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/braid-cni/braid/ipam-server/internal/podnet"
)

// podsNamingPool returns the bound, live pods that select a network whose braid-ipam section names the pool,
// read from the cache. It runs when a pool is loaded, which is rare, so it scans rather than keep an index.
func podsNamingPool(ctx context.Context, c client.Reader, pool string, defaults podnet.Defaults) []reconcile.Request {
	nads := &nadv1.NetworkAttachmentDefinitionList{}
	if err := c.List(ctx, nads); err != nil {
		return nil
	}
	networks := map[string]bool{} // namespace/name of the NADs naming the pool
	for _, nad := range nads.Items {
		if conf, uses, err := podnet.BraidIPAM(nad.Spec.Config); err == nil && uses && slices.Contains(conf.Pools, pool) {
			networks[nad.Namespace+"/"+nad.Name] = true
		}
	}
	if len(networks) == 0 {
		return nil
	}
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.UnsafeDisableDeepCopy); err != nil { // read only
		return nil
	}
	var out []reconcile.Request
	for _, pod := range pods.Items {
		if !servable(&pod) {
			continue
		}
		sels, err := podnet.ParseSelections(pod.Annotations[podnet.NetworksAnnotation], pod.Namespace, defaults.For(pod.Namespace))
		if err != nil {
			continue
		}
		if slices.ContainsFunc(sels, func(s podnet.Selection) bool { return networks[s.Key()] }) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pod)})
		}
	}
	return out
}
