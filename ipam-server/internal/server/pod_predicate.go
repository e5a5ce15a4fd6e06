package server

import (
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/braid-cni/braid/ipam-server/internal/podnet"
)

// podChangeMatters passes the pod updates that can change what the pod is served: a resync (the same
// resourceVersion), the binding to a node, the networks annotation, deletion and a terminal phase. It drops
// the rest: the echo of this server's own assignment write, and a starting pod's churn (the kubelet's status
// and conditions, the meta-plugin's network-status), each of which would otherwise cost a reconcile.
func podChangeMatters(e event.UpdateEvent) bool {
	old, okOld := e.ObjectOld.(*corev1.Pod)
	cur, okCur := e.ObjectNew.(*corev1.Pod)
	if !okOld || !okCur {
		return true
	}
	return old.ResourceVersion == cur.ResourceVersion ||
		old.Spec.NodeName != cur.Spec.NodeName ||
		old.Annotations[podnet.NetworksAnnotation] != cur.Annotations[podnet.NetworksAnnotation] ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil) ||
		servable(old) != servable(cur)
}
