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
