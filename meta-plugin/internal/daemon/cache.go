package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/braid-cni/braid/meta-plugin/internal/kube"
)

// Cache answers the meta-plugin's reads from watch caches: the pods bound to this node and every NAD. A read
// the cache cannot answer (a pod or NAD not seen yet) goes to the API server, as does every fresh read, so the
// plugin's rules (retry a miss with a fresh read, check the pod's UID) hold as they do without the daemon.
// Writes go to the API server.
type Cache struct {
	api     *kube.Client
	pods    cache.SharedIndexInformer
	nads    cache.SharedIndexInformer
	waiters *podWaiters // queries waiting for a pod's annotation (PodAnnotation)
}

// NewCache returns the caches of node's pods and of the NADs; Run fills them.
func NewCache(api *kube.Client, node string) *Cache {
	pods := cache.NewSharedIndexInformer(api.PodsOnNode(node), &corev1.Pod{}, 0, cache.Indexers{})
	nads := cache.NewSharedIndexInformer(api.NADs(), &nadv1.NetworkAttachmentDefinition{}, 0, cache.Indexers{})
	for _, inf := range []cache.SharedIndexInformer{pods, nads} {
		_ = inf.SetTransform(stripManagedFields) // only fails once running
	}
	c := &Cache{api: api, pods: pods, nads: nads, waiters: &podWaiters{}}
	_, _ = pods.AddEventHandler(c.waiters.handler()) // only fails once stopped
	return c
}

// Run fills and keeps the caches until ctx ends.
func (c *Cache) Run(ctx context.Context) {
	go c.pods.Run(ctx.Done())
	c.nads.Run(ctx.Done())
}

// WaitForSync waits until both caches hold a full list, or timeout passes.
func (c *Cache) WaitForSync(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(ctx.Done(), c.pods.HasSynced, c.nads.HasSynced) {
		if errors.Is(ctx.Err(), context.Canceled) {
			return ctx.Err() // stopped while starting
		}
		return fmt.Errorf("pod and NAD caches not filled within %s", timeout)
	}
	return nil
}

// GetPod returns the cached pod unless fresh is asked for or the cache has not seen it.
func (c *Cache) GetPod(ctx context.Context, namespace, name string, fresh bool) (*corev1.Pod, error) {
	if !fresh {
		if obj, ok, err := c.pods.GetStore().GetByKey(namespace + "/" + name); err == nil && ok {
			return obj.(*corev1.Pod).DeepCopy(), nil
		}
	}
	return c.api.GetPod(ctx, namespace, name, fresh)
}

// GetNAD returns the cached NAD unless fresh is asked for or the cache has not seen it.
func (c *Cache) GetNAD(ctx context.Context, namespace, name string, fresh bool) (*nadv1.NetworkAttachmentDefinition, error) {
	if !fresh {
		if obj, ok, err := c.nads.GetStore().GetByKey(namespace + "/" + name); err == nil && ok {
			return obj.(*nadv1.NetworkAttachmentDefinition).DeepCopy(), nil
		}
	}
	return c.api.GetNAD(ctx, namespace, name, fresh)
}

// SetPodAnnotation writes through to the API server.
func (c *Cache) SetPodAnnotation(ctx context.Context, namespace, name string, uid k8stypes.UID, key, value string) error {
	return c.api.SetPodAnnotation(ctx, namespace, name, uid, key, value)
}

// RecordEvent writes through to the API server.
func (c *Cache) RecordEvent(ctx context.Context, pod *corev1.Pod, eventType, reason, message string) error {
	return c.api.RecordEvent(ctx, pod, eventType, reason, message)
}

// stripManagedFields drops what braid never reads and what takes most of a cached object's memory.
func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Pods is the cache of the node's pods.
func (c *Cache) Pods() cache.Store { return c.pods.GetStore() }
