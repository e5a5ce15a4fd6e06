package soak

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Bounds of the churn: at most maxWeb + maxBare + maxDB pods of the demo namespace at a time (plus the ones
// terminating), so that the 2-core node keeps up; db has the node's 3 VFs at most.
const (
	maxWeb  = 6
	maxBare = 5
	maxDB   = 3
	// bareNetworks is the bare pods' selection, in the JSON form and with an interface name of their own.
	bareNetworks = `[{"name": "mgmt"}, {"name": "control", "interface": "ctl1"}]`
)

// churnStats counts the churn's actions and the ones that failed (expected while kube-apiserver restarts).
type churnStats struct {
	actions map[string]int
	failed  int
}

func (s churnStats) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.actions)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, s.actions[k]))
	}
	return fmt.Sprintf("actions %s, %d failed", strings.Join(parts, " "), s.failed)
}

// churn keeps creating and deleting pods until ctx ends: Deployment web scaled at random, bare pods created
// and deleted, StatefulSet db scaled and its pods deleted (they come back with the same addresses).
func (e *env) churn(ctx context.Context, t *testing.T, rng *rand.Rand) churnStats {
	stats := churnStats{actions: map[string]int{}}
	actions := []struct {
		name   string
		weight int
		do     func(context.Context) error
	}{
		{"scale-web", 3, func(ctx context.Context) error { return e.scale(ctx, &appsv1.Deployment{}, "web", rng.IntN(maxWeb+1)) }},
		{"create-pod", 3, func(ctx context.Context) error { return e.createBare(ctx) }},
		{"delete-pod", 2, func(ctx context.Context) error { return e.deleteOne(ctx, "soak", rng) }},
		{"delete-db-pod", 1, func(ctx context.Context) error { return e.deleteOne(ctx, "db", rng) }},
		{"scale-db", 1, func(ctx context.Context) error { return e.scale(ctx, &appsv1.StatefulSet{}, "db", 1+rng.IntN(maxDB)) }},
	}
	total := 0
	for _, a := range actions {
		total += a.weight
	}
	for {
		select {
		case <-ctx.Done():
			return stats
		case <-time.After(500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond)))):
		}
		n := rng.IntN(total)
		i := 0
		for n >= actions[i].weight {
			n -= actions[i].weight
			i++
		}
		stats.actions[actions[i].name]++
		if err := actions[i].do(ctx); err != nil && ctx.Err() == nil {
			stats.failed++
			if stats.failed <= 10 || stats.failed%10 == 0 {
				t.Logf("churn: %s failed (%d failures so far): %v", actions[i].name, stats.failed, err)
			}
		}
	}
}

// scale sets the replicas of the Deployment or StatefulSet name in the demo namespace.
func (e *env) scale(ctx context.Context, obj client.Object, name string, n int) error {
	obj.SetNamespace(demoNS)
	obj.SetName(name)
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)
	return e.c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch))
}

// live lists the demo namespace's pods labeled app=app that are not being deleted.
func (e *env) live(ctx context.Context, app string) ([]corev1.Pod, error) {
	var l corev1.PodList
	if err := e.c.List(ctx, &l, client.InNamespace(demoNS), client.MatchingLabels{"app": app}); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(l.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil }), nil
}

// createBare creates a pod of no workload on mgmt and control, unless maxBare of them live.
func (e *env) createBare(ctx context.Context) error {
	pods, err := e.live(ctx, "soak")
	if err != nil || len(pods) >= maxBare {
		return err
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "soak-", Namespace: demoNS, Labels: map[string]string{"app": "soak"},
			Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": bareNetworks}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{Name: "pause", Image: "registry.k8s.io/pause:3.10", ImagePullPolicy: corev1.PullIfNotPresent,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("5m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
				}}},
		},
	}
	return e.c.Create(ctx, p)
}

// deleteOne deletes a random live pod labeled app=app, if there is one.
func (e *env) deleteOne(ctx context.Context, app string, rng *rand.Rand) error {
	pick := rng.Uint64() // drawn whatever happens next, so the seed's sequence stays the same
	pods, err := e.live(ctx, app)
	if err != nil || len(pods) == 0 {
		return err
	}
	return client.IgnoreNotFound(e.c.Delete(ctx, &pods[pick%uint64(len(pods))]))
}
