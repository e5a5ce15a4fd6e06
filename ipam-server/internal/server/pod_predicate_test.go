package server

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/podnet"
)

func TestPodChangeMatters(t *testing.T) {
	base := func() *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", ResourceVersion: "1",
				Annotations: map[string]string{podnet.NetworksAnnotation: "mgmt"}},
			Spec: corev1.PodSpec{NodeName: "node-1"},
		}
	}
	now := metav1.Now()
	for name, tc := range map[string]struct {
		change func(*corev1.Pod)
		want   bool
	}{
		"resync (same resourceVersion)": {func(p *corev1.Pod) {}, true},
		"kubelet status":                {func(p *corev1.Pod) { p.Status.Phase = corev1.PodRunning }, false},
		"network-status written":        {func(p *corev1.Pod) { p.Annotations["k8s.v1.cni.cncf.io/network-status"] = "[]" }, false},
		"label added":                   {func(p *corev1.Pod) { p.Labels = map[string]string{"a": "b"} }, false},
		"bound to a node":               {func(p *corev1.Pod) { p.Spec.NodeName = "node-2" }, true},
		"networks changed":              {func(p *corev1.Pod) { p.Annotations[podnet.NetworksAnnotation] = "mgmt,data" }, true},
		"assignment written":            {func(p *corev1.Pod) { p.Annotations[assignment.Annotation] = "{}" }, false},
		"deleted":                       {func(p *corev1.Pod) { p.DeletionTimestamp = &now }, true},
		"finished":                      {func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, true},
		"adopted by a StatefulSet": {func(p *corev1.Pod) {
			yes := true
			p.OwnerReferences = []metav1.OwnerReference{{Kind: "StatefulSet", Name: "kv", UID: "set-2", Controller: &yes}}
		}, true},
	} {
		t.Run(name, func(t *testing.T) {
			old, cur := base(), base()
			tc.change(cur)
			if name != "resync (same resourceVersion)" {
				cur.ResourceVersion = "2"
			}
			if got := podChangeMatters(event.UpdateEvent{ObjectOld: old, ObjectNew: cur}); got != tc.want {
				t.Errorf("podChangeMatters = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestAssignmentEdited: the echo of this process's own assignment write is dropped (and noted), any other
// change of the annotation is passed, to be put right.
func TestAssignmentEdited(t *testing.T) {
	pod := func(value string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "uid-1", Annotations: map[string]string{}}}
		if value != "" {
			p.Annotations[assignment.Annotation] = value
		}
		return p
	}
	ours := ownWrite{uid: "uid-1", value: `{"ours":1}`}
	for name, tc := range map[string]struct {
		last         any // the reconciler's record of its write, if any
		old, cur     string
		want, echoed bool
	}{
		"our write's echo":            {ours, "", ours.value, false, true},
		"our value in a later update": {ours, ours.value, ours.value, false, true},
		"edited after our write":      {ours, ours.value, `{"forged":1}`, true, false},
		"removed after our write":     {ours, ours.value, "", true, false},
		"written by another replica":  {nil, "", `{"theirs":1}`, true, false},
		"another pod of that name":    {ownWrite{uid: "uid-2", value: `{"forged":1}`}, "", `{"forged":1}`, true, false},
		"unchanged, not ours":         {nil, `{"theirs":1}`, `{"theirs":1}`, false, false},
	} {
		t.Run(name, func(t *testing.T) {
			r := &podReconciler{}
			if tc.last != nil {
				r.assigned.Store("ns/p", tc.last)
			}
			if got := r.assignmentEdited(event.UpdateEvent{ObjectOld: pod(tc.old), ObjectNew: pod(tc.cur)}); got != tc.want {
				t.Errorf("assignmentEdited = %v, want %v", got, tc.want)
			}
			last, _ := r.assigned.Load("ns/p")
			if w, ok := last.(ownWrite); ok && w.echoed != tc.echoed || !ok && tc.echoed {
				t.Errorf("record after the event: %+v, want echoed=%v", last, tc.echoed)
			}
		})
	}
}
