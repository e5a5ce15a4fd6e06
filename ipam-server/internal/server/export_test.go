package server

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/braid-cni/braid/ipam-server/internal/assignment"
)

// Publish writes a pod's assignment annotation as the pod controller does, through c.
func Publish(ctx context.Context, c client.Client, pod *corev1.Pod, a assignment.Assignments) error {
	r := &podReconciler{Client: c, metrics: NewMetrics(prometheus.NewRegistry())}
	return r.publish(ctx, pod, a)
}
