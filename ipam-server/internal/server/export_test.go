package server

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/ipam-server/internal/assignment"
	"github.com/braid-cni/braid/ipam-server/internal/pool"
)

// Publish writes a pod's assignment annotation as the pod controller does, through c.
func Publish(ctx context.Context, c client.Client, pod *corev1.Pod, a assignment.Assignments) error {
	r := &podReconciler{Client: c, metrics: NewMetrics(prometheus.NewRegistry())}
	return r.publish(ctx, pod, a)
}

// Describe renders an interface's FloatingIPs, given in the order it got them, with their pools' models.
func Describe(fips []braidv1.FloatingIP, pools map[string]pool.Model) assignment.Interface {
	var cs []candidate
	for name, m := range pools {
		cs = append(cs, candidate{name: name, model: m})
	}
	return describe(fips, cs)
}
