package server

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/podnet"
)

// podChangeMatters passes the pod updates that can change what the pod is served: a resync (the same
// resourceVersion), the binding to a node, the networks annotation, deletion, a terminal phase and a new controller. It drops
// the rest: a change of the assignment annotation (assignmentEdited judges those), and a starting pod's churn
// (the kubelet's status and conditions, the meta-plugin's network-status), each of which would otherwise cost
// a reconcile.
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
		servable(old) != servable(cur) ||
		controllerUID(old) != controllerUID(cur) // adopted by a StatefulSet made again
}

func controllerUID(pod *corev1.Pod) types.UID {
	if owner := metav1.GetControllerOf(pod); owner != nil {
		return owner.UID
	}
	return ""
}

// assignmentEdited passes an update that changed the pod's assignment annotation to a value this process did
// not write: someone else's edit (deploy/base's admission policy refuses those, but a cluster may run without
// it), which the pod's reconcile then puts right. It drops the echo of this process's own write, and notes that
// the pod cache has shown it.
func (r *podReconciler) assignmentEdited(e event.UpdateEvent) bool {
	cur := e.ObjectNew.GetAnnotations()[assignment.Annotation]
	key := e.ObjectNew.GetNamespace() + "/" + e.ObjectNew.GetName()
	if last, ok := r.assigned.Load(key); ok {
		if w := last.(ownWrite); w.uid == e.ObjectNew.GetUID() && w.value == cur {
			if !w.echoed {
				r.assigned.CompareAndSwap(key, w, ownWrite{uid: w.uid, value: w.value, echoed: true})
			}
			return false
		}
	}
	return e.ObjectOld.GetAnnotations()[assignment.Annotation] != cur
}

// podFinishes: the update moves the pod to Succeeded or Failed.
func podFinishes(e event.UpdateEvent) bool {
	old, okOld := e.ObjectOld.(*corev1.Pod)
	cur, okNew := e.ObjectNew.(*corev1.Pod)
	return okOld && okNew && !finished(old) && finished(cur)
}
