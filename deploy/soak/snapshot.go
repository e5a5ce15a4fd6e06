package soak

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	braidv1 "github.com/braid-cni/braid/crds/v1alpha1"
	"github.com/braid-cni/braid/deploy/local/demo"
)

// Reader reads a Snapshot from the API server and the node.
type Reader struct {
	Client client.Client
	Node   Node
	// Inspector reads pods' interfaces from inside them.
	Inspector demo.Inspector
	// Namespace holds the pods with extra networks (deploy/examples' braid-demo).
	Namespace string
	// Reservations are the admin reservations that must stay.
	Reservations []string
}

// Read takes a snapshot: API objects first, then the node, so that on a settled cluster both agree.
func (r Reader) Read(ctx context.Context) (Snapshot, error) {
	s := Snapshot{Now: time.Now(), StatefulSets: map[string][2]int{}, Reservations: r.Reservations}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods); err != nil {
		return s, err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		s.Pods = append(s.Pods, Pod{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID)})
		if p.Namespace == r.Namespace && Ready(p) {
			in, err := r.Inspector.Inspect(ctx, p)
			if err != nil {
				return s, err
			}
			s.Inside = append(s.Inside, in)
		}
	}
	var sets appsv1.StatefulSetList
	if err := r.Client.List(ctx, &sets); err != nil {
		return s, err
	}
	for _, set := range sets.Items {
		start, n := 0, 1
		if set.Spec.Ordinals != nil {
			start = int(set.Spec.Ordinals.Start)
		}
		if set.Spec.Replicas != nil {
			n = int(*set.Spec.Replicas)
		}
		if set.DeletionTimestamp == nil {
			s.StatefulSets[set.Namespace+"/"+set.Name] = [2]int{start, start + n}
		}
	}
	var fips braidv1.FloatingIPList
	if err := r.Client.List(ctx, &fips); err != nil {
		return s, err
	}
	s.FloatingIPs = fips.Items
	var pools braidv1.IPPoolList
	if err := r.Client.List(ctx, &pools); err != nil {
		return s, err
	}
	s.Pools = pools.Items

	var err error
	if s.Sandboxes, err = r.Node.Sandboxes(ctx); err != nil {
		return s, err
	}
	if s.CacheFiles, err = r.Node.CacheFiles(); err != nil {
		return s, err
	}
	if s.Links, err = Links(); err != nil {
		return s, err
	}
	for _, vf := range demo.VFs {
		s.VFs = append(s.VFs, VF{PCIAddress: vf.PCIAddress, Netdev: vf.Netdev})
	}
	for _, n := range demo.Networks {
		if n.NodeNICsUp { // the macvlan parents (VFs stay down until a pod takes one)
			s.ParentNICs = append(s.ParentNICs, n.NodeNICs...)
		}
	}
	return s, nil
}

// Ready reports whether the pod is Ready and not being deleted.
func Ready(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && demo.PodReady(p)
}
